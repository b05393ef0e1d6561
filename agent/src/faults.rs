//! Fault hooks for end-to-end tests, compiled in only with the `fault-hooks` feature (the
//! test command's builds); without it every hook is a no-op and release binaries have none.
//!
//! `UNDERSTUDY_TEST_HEALTH=PATH`: the host's health score is the number in the file at
//! PATH while it holds one. The assessment reads machine-wide metrics, which namespace hosts
//! on one machine share; this gives one of them a health of its own, carried to the
//! coordinator by the real heartbeats.
//!
//! `UNDERSTUDY_FAULTS` holds comma-separated hooks:
//! - `delay-reply:KIND:MS` — the reply to the first order of this kind (`restore`, …) is
//!   sent MS milliseconds after the order was carried out, so a test can cut the link
//!   while the coordinator waits for it.
//! - `fail-final-images:N` — the next N final dumps (a switchover's last epoch) fail while
//!   CRIU still holds the tree, as a memory-tracking dump that cannot be made whole does.
//! - `slow-post-copy:MS` — the old primary's side of a post-copy page transfer waits MS
//!   milliseconds before each piece it passes to the target (256 KiB at most), so that the
//!   transfer of a few hundred MiB lasts long enough to watch and to cut.
//! - `sample-every:MS` — the host is sampled and assessed every MS milliseconds instead of
//!   every schema step, so that a test sees the anomaly model warm up, fit this host and
//!   score it within seconds instead of minutes.

/// `UNDERSTUDY_TEST_HEALTH`: `report` with the file's score, if it holds one.
pub fn health_score(
    report: understudy_common::telemetry::HealthReport,
    thresholds: &crate::predict::health::Thresholds,
) -> understudy_common::telemetry::HealthReport {
    #[cfg(feature = "fault-hooks")]
    {
        let score = std::env::var("UNDERSTUDY_TEST_HEALTH")
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<u8>().ok());
        if let Some(score) = score.filter(|s| *s <= 100) {
            return understudy_common::telemetry::HealthReport {
                score,
                level: thresholds.level(score),
                note: Some("score set by a test (UNDERSTUDY_TEST_HEALTH)".into()),
                ..report
            };
        }
    }
    let _ = thresholds;
    report
}

/// `delay-reply:KIND:MS`
pub async fn before_reply(kind: &str) {
    #[cfg(feature = "fault-hooks")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static FIRED: AtomicBool = AtomicBool::new(false);
        let spec = std::env::var("UNDERSTUDY_FAULTS").unwrap_or_default();
        let prefix = format!("delay-reply:{kind}:");
        let delay = spec
            .split(',')
            .find_map(|h| h.trim().strip_prefix(&prefix)?.parse::<u64>().ok());
        if let Some(ms) = delay {
            if !FIRED.swap(true, Ordering::SeqCst) {
                tracing::warn!("fault hook: the {kind} reply waits {ms} ms");
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
    }
    let _ = kind;
}

/// `fail-final-images:N`: an error while the next N final dumps' images are finished.
pub fn final_images() -> Result<(), String> {
    #[cfg(feature = "fault-hooks")]
    {
        use std::sync::atomic::{AtomicI64, Ordering};
        static LEFT: AtomicI64 = AtomicI64::new(-1);
        if LEFT.load(Ordering::SeqCst) < 0 {
            let spec = std::env::var("UNDERSTUDY_FAULTS").unwrap_or_default();
            let n = spec
                .split(',')
                .find_map(|h| {
                    h.trim()
                        .strip_prefix("fail-final-images:")?
                        .parse::<i64>()
                        .ok()
                })
                .unwrap_or(0);
            let _ = LEFT.compare_exchange(-1, n, Ordering::SeqCst, Ordering::SeqCst);
        }
        let before = LEFT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n > 0).then_some(n - 1)
        });
        if before.is_ok() {
            tracing::warn!("fault hook: the final dump's images are not finished");
            return Err("fault hook fail-final-images".into());
        }
    }
    Ok(())
}

/// `slow-post-copy:MS`: the pause before each piece of a post-copy page transfer.
pub async fn post_copy_piece() {
    #[cfg(feature = "fault-hooks")]
    {
        let spec = std::env::var("UNDERSTUDY_FAULTS").unwrap_or_default();
        let pause = spec.split(',').find_map(|h| {
            h.trim()
                .strip_prefix("slow-post-copy:")?
                .parse::<u64>()
                .ok()
        });
        if let Some(ms) = pause {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
}

/// `sample-every:MS`: the host's sampling period instead of `step`.
pub fn sample_period(step: std::time::Duration) -> std::time::Duration {
    #[cfg(feature = "fault-hooks")]
    {
        let spec = std::env::var("UNDERSTUDY_FAULTS").unwrap_or_default();
        let every = spec
            .split(',')
            .find_map(|h| h.trim().strip_prefix("sample-every:")?.parse::<u64>().ok());
        if let Some(ms) = every.filter(|ms| *ms > 0) {
            tracing::warn!("fault hook: the host is sampled every {ms} ms");
            return std::time::Duration::from_millis(ms);
        }
    }
    step
}
