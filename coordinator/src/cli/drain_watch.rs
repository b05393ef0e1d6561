//! Following a drain's progress for `host drain` and `host drain --monitor`. The drain is
//! the group's, not the CLI's: it goes on when the coordinator running it restarts or the
//! group's leader changes (the new leader carries it on from its record). So a look that
//! finds no coordinator, or a group without a leader, is not the end of the watch: it waits
//! for the group to answer again, for at most [`OUTAGE`], and says so.

use std::time::{Duration, Instant};

use understudy_common::exit;

use super::api::{answer, send, ApiFailure, TIMEOUT};
use crate::server::admin::DrainStatus;

/// How often a drain's progress is asked for.
const POLL: Duration = Duration::from_millis(500);

/// How long the watch waits for the group to answer again: a restart or an election, and
/// the agents reconnecting.
pub(super) const OUTAGE: Duration = Duration::from_secs(60);

/// Asks for the drain at `path` until it no longer runs, calling `seen` with each answer;
/// returns the last. Each look waits out an outage of at most `outage` ([`look`]).
pub(super) fn watch(
    base: &str,
    path: &str,
    outage: Duration,
    mut seen: impl FnMut(&DrainStatus),
) -> Result<DrainStatus, i32> {
    loop {
        let s = look(base, path, outage)?;
        seen(&s);
        if !s.running {
            return Ok(s);
        }
        std::thread::sleep(POLL);
    }
}

/// One look at the drain at `path`. A coordinator that cannot be reached, or a group
/// without a leader, is waited out for at most `outage`, saying so; any other failure
/// ends the watch with its exit code.
pub(super) fn look(base: &str, path: &str, outage: Duration) -> Result<DrainStatus, i32> {
    let mut lost: Option<Instant> = None;
    loop {
        let (url, r) = send(base, "GET", path, None, TIMEOUT);
        match answer::<DrainStatus>(base, &url, r) {
            Ok(s) => {
                if lost.is_some() {
                    eprintln!("the coordinator answers again; the drain went on");
                }
                return Ok(s);
            }
            Err(f @ (ApiFailure::Unreachable(_) | ApiFailure::Refused(503, _))) => {
                let since = *lost.get_or_insert_with(|| {
                    eprintln!(
                        "lost the coordinator ({}); the drain is the group's and goes on: waiting up to {outage:?} for it to answer",
                        f.message()
                    );
                    Instant::now()
                });
                if since.elapsed() + POLL > outage {
                    eprintln!(
                        "no answer for {outage:?}; the drain may still be running: `understudy host drain HOST --monitor` follows it again"
                    );
                    return Err(exit::UNAVAILABLE);
                }
            }
            Err(f) => return Err(f.report()),
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_http::serve;
    use super::*;

    fn status(running: bool, left: &[&str]) -> String {
        serde_json::to_string(&DrainStatus {
            host: "host-a".into(),
            running,
            drain: None,
            primaries_left: left.iter().map(|s| (*s).to_owned()).collect(),
            shadows_left: Vec::new(),
            workloads: vec![("d1".into(), "moving".into())],
        })
        .unwrap()
    }

    #[test]
    fn a_watch_waits_out_a_coordinator_that_is_gone_for_a_while() {
        // Answers, two looks that find nobody (the connection closed unanswered), then the
        // drain's end from the coordinator that came back.
        let base = serve(vec![
            (200, status(true, &["d1"])),
            (0, String::new()),
            (0, String::new()),
            (200, status(false, &[])),
        ]);
        let mut answers = 0;
        let last = watch(&base, "/v1/hosts/host-a/drain", OUTAGE, |_| answers += 1)
            .expect("the watch followed the drain to its end");
        assert!(!last.running && last.primaries_left.is_empty());
        assert_eq!(answers, 2);
    }

    #[test]
    fn a_coordinator_gone_for_longer_than_the_outage_ends_the_watch_unavailable() {
        let base = serve(vec![(200, status(true, &["d1"]))]);
        let started = Instant::now();
        let r = watch(
            &base,
            "/v1/hosts/host-a/drain",
            Duration::from_millis(1500),
            |_| {},
        );
        assert_eq!(r.unwrap_err(), exit::UNAVAILABLE);
        assert!(started.elapsed() >= Duration::from_millis(1000));
    }

    #[test]
    fn a_refusal_ends_the_watch_at_once() {
        let base = serve(vec![(404, r#"{"error":"no host named \"host-z\""}"#)]);
        let r = watch(&base, "/v1/hosts/host-z/drain", OUTAGE, |_| {});
        assert_eq!(r.unwrap_err(), exit::DATA_ERR);
    }
}
