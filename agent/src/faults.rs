//! Fault hooks for end-to-end tests, compiled in only with the `fault-hooks` feature (the
//! test command's builds); without it every hook is a no-op and release binaries have none.
//!
//! `UNDERSTUDY_FAULTS` holds comma-separated hooks:
//! - `delay-reply:KIND:MS` — the reply to the first order of this kind (`restore`, …) is
//!   sent MS milliseconds after the order was carried out, so a test can cut the link
//!   while the coordinator waits for it.

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
