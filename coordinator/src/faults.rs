//! Fault hooks for end-to-end tests, compiled in only with the `fault-hooks` feature (the
//! test command's builds); without it every hook is a no-op and release binaries have none.
//!
//! `UNDERSTUDY_FAULTS` holds comma-separated hooks:
//! - `lose-reply:KIND` — the first reply to an order of this kind (`restore`, `resume`, …)
//!   is dropped, as if the connection had failed before it arrived;
//! - `crash-after:KIND` — the process aborts 300 ms after sending the first order of this
//!   kind, before reading the reply (a coordinator killed mid-switchover);
//! - `stale-leader` — a group leader that can no longer confirm its leadership goes on
//!   acting in its term (serving agents, renewing leases) until it learns of a newer term,
//!   as a leader paused past its lease check would;
//! - `refuse-entries-from:ID` — this member leaves unanswered every AppendEntries that
//!   carries entries from leader ID (heartbeats pass): it falls behind the witness;
//! - `drift:NAME` — on start, workload NAME's record is loaded as failed under a generation
//!   one newer than stored (a record that disagrees with the hosts).

use crate::workloads::migration::Delivery;
#[cfg(feature = "fault-hooks")]
use crate::workloads::{WorkloadRecord, WorkloadState};

#[cfg(feature = "fault-hooks")]
fn armed(hook: &str) -> bool {
    std::env::var("UNDERSTUDY_FAULTS")
        .unwrap_or_default()
        .split(',')
        .any(|h| h.trim() == hook)
}

/// Fires `hook` once per process: true the first time it is armed and asked about.
#[cfg(feature = "fault-hooks")]
fn once(hook: &str) -> bool {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static FIRED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if !armed(hook) {
        return false;
    }
    let mut fired = FIRED.lock().unwrap_or_else(|e| e.into_inner());
    fired
        .get_or_insert_with(HashSet::new)
        .insert(hook.to_owned())
}

/// `stale-leader`
pub fn stale_leader() -> bool {
    #[cfg(feature = "fault-hooks")]
    if armed("stale-leader") {
        return true;
    }
    false
}

/// `refuse-entries-from:ID`: whether to leave an AppendEntries from `leader` unanswered.
pub fn refuse_entries(leader: u64, has_entries: bool) -> bool {
    #[cfg(feature = "fault-hooks")]
    if has_entries && armed(&format!("refuse-entries-from:{leader}")) {
        return true;
    }
    let _ = (leader, has_entries);
    false
}

/// `lose-reply:KIND`
pub fn lose_reply(kind: &str, delivery: Delivery) -> Delivery {
    #[cfg(feature = "fault-hooks")]
    if matches!(delivery, Delivery::Reply(_)) && once(&format!("lose-reply:{kind}")) {
        tracing::warn!("fault hook: the reply to the {kind} order is dropped");
        return Delivery::Unknown(format!("{kind} order: reply lost (fault hook)"));
    }
    let _ = kind;
    delivery
}

/// `crash-after:KIND`
pub async fn after_send(kind: &str) {
    #[cfg(feature = "fault-hooks")]
    if once(&format!("crash-after:{kind}")) {
        tracing::warn!("fault hook: aborting after sending the {kind} order");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        std::process::abort();
    }
    let _ = kind;
}

/// `drift:NAME`
#[cfg(feature = "fault-hooks")]
pub fn drift(records: &mut [WorkloadRecord]) {
    for r in records {
        if armed(&format!("drift:{}", r.spec.name)) {
            tracing::warn!(workload = %r.spec.name, "fault hook: record drifted");
            r.generation += 1;
            r.state = WorkloadState::Failed("drifted (fault hook)".into());
        }
    }
}

/// `drift:NAME` (not compiled in).
#[cfg(not(feature = "fault-hooks"))]
pub fn drift(_records: &mut [crate::workloads::WorkloadRecord]) {}
