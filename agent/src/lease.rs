//! Passing the coordinator's lease renewals to the workloads' supervisors, which enforce
//! them ([`crate::supervisor::lease`]): a renewal for a generation older than this agent has
//! seen for the workload is stale and is not passed on, so a copy that has been superseded
//! never gets a renewal, and freezes.

use std::sync::Arc;
use std::time::Duration;

use understudy_common::protocol::Lease;

use crate::node::Node;
use crate::supervisor::control::{self, Request};

/// How long one renewal may take a supervisor to answer.
const RENEW_TIMEOUT: Duration = Duration::from_secs(1);

/// Renews each lease that is for a workload this host runs, under its current generation.
pub async fn renew(node: Arc<Node>, leases: Vec<Lease>) {
    for lease in leases {
        let current = node
            .fence
            .seen(&lease.workload)
            .is_none_or(|seen| lease.generation >= seen);
        if !current || node.primary(&lease.workload).is_none() {
            continue;
        }
        pass_on(&lease.workload, lease.valid_ms).await;
    }
}

/// Hands `workload`'s supervisor a lease of `valid_ms` from now.
pub async fn pass_on(workload: &str, valid_ms: Option<u64>) {
    let name = workload.to_owned();
    let req = Request::Renew { valid_ms };
    let answer =
        tokio::task::spawn_blocking(move || control::ask(&name, &req, RENEW_TIMEOUT)).await;
    match answer {
        Ok(Ok(status)) if status.frozen => {
            tracing::warn!(workload, "still frozen after a renewal")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(workload, "lease not passed on: {e}"),
        Err(e) => tracing::debug!(workload, "lease not passed on: {e}"),
    }
}
