//! What `workload create` does when it cannot know whether the workload started: the
//! coordinator it asked stopped leading the group meanwhile, or the host never answered the
//! start order. It waits for the coordinator (the group's new leader) to settle the
//! workload from what the hosts report, and says what became of it.

use std::time::{Duration, Instant};

use understudy_common::exit;

use super::api::{answer, send, ApiFailure};
use super::Output;
use crate::server::http::WorkloadView;
use crate::workloads::WorkloadState;

/// How long to wait for the workload to be settled: an election, the agents reconnecting,
/// and the reconciliation of their reports.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// Pause between looks.
const POLL: Duration = Duration::from_millis(500);

/// How long one look may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until the group holds a settled record of workload `name` (not starting), prints
/// it as `workload create` would have, and returns the exit code for it. `why` says why
/// the create's own answer could not tell.
pub(super) fn create_outcome(
    base: &str,
    name: &str,
    output: Output,
    why: &str,
    print: impl Fn(&WorkloadView),
) -> i32 {
    eprintln!("{why}");
    eprintln!(
        "waiting up to {SETTLE_WAIT:?} for the coordinator to settle workload {name:?} from its host's report"
    );
    let started = Instant::now();
    let path = format!("/v1/workloads/{name}");
    loop {
        let (url, r) = send(base, "GET", &path, None, LOOK_TIMEOUT);
        let last = match answer::<WorkloadView>(base, &url, r) {
            Ok(v) if v.record.state != WorkloadState::Starting => {
                eprintln!("settled from the hosts' reports:");
                return settled(&v, output, print);
            }
            Ok(v) => format!("it is still starting on {}", v.record.primary),
            Err(ApiFailure::Refused(404, _)) => {
                "the group has no record of it (a create that did not commit, unless a host reports it running)".to_owned()
            }
            Err(ApiFailure::Refused(code, e)) => format!("HTTP {code}: {e}"),
            Err(ApiFailure::Unreachable(e) | ApiFailure::Unsettled(e)) => e,
        };
        if started.elapsed() + POLL > SETTLE_WAIT {
            eprintln!(
                "not settled after {SETTLE_WAIT:?}: {last}; look again with `understudy workload show {name}` before you create it again"
            );
            return exit::SOFTWARE;
        }
        std::thread::sleep(POLL);
    }
}

fn settled(v: &WorkloadView, output: Output, print: impl Fn(&WorkloadView)) -> i32 {
    if output == Output::Json {
        return super::api::print_json(&v.record);
    }
    print(v);
    match v.record.state {
        WorkloadState::Failed(_) => exit::SOFTWARE,
        _ => 0,
    }
}
