//! Passing the coordinator's lease renewals to the workloads' supervisors, which enforce
//! them ([`crate::supervisor::lease`]). A renewal is passed on only to a copy running under
//! exactly the lease's generation: a copy that has been superseded — its host lost and the
//! workload restored elsewhere under a newer generation — never gets one, even while the
//! coordinator still names this host in a failover's record, and stays frozen.

use std::time::Duration;

use understudy_common::protocol::Lease;

use crate::node::Node;
use crate::supervisor::control::{self, Request};

/// How long one renewal may take a supervisor to answer.
const RENEW_TIMEOUT: Duration = Duration::from_secs(1);

/// Renews each lease that is for a workload this host runs, under its current generation.
pub fn renew(node: &Node, leases: Vec<Lease>) {
    for lease in leases {
        // Its task passes it on if it is for the generation the copy runs under.
        if let Some(p) = node.primary(&lease.workload) {
            if let Some(k) = &lease.data_key {
                node.set_key(&lease.workload, k.0);
            }
            p.tell(crate::life::Event::Lease {
                generation: lease.generation,
                valid_ms: lease.valid_ms,
                at_ms: crate::clock::mono_ms(),
            });
        }
    }
}

/// What is left now of a lease of `valid_ms` granted at `at_ms` (monotonic clock);
/// `Some(0)` once it has run out, `None` for a lease without a bound.
pub fn left_of(valid_ms: Option<u64>, at_ms: u64, now_ms: u64) -> Option<u64> {
    valid_ms.map(|v| v.saturating_sub(now_ms.saturating_sub(at_ms)))
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

#[cfg(test)]
mod tests {
    use super::left_of;

    #[test]
    fn a_held_lease_passes_on_only_what_is_left_of_it() {
        assert_eq!(left_of(Some(5000), 100, 100), Some(5000));
        assert_eq!(left_of(Some(5000), 100, 1100), Some(4000));
        assert_eq!(left_of(Some(5000), 100, 9000), Some(0), "run out");
        assert_eq!(left_of(None, 100, 9000), None, "no bound stays none");
    }
}
