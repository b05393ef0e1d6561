//! What the CLI does when it cannot know what became of a change it asked for: the
//! coordinator stopped leading the group while acting on it, was killed before it answered,
//! or (for `workload create`) the host never answered the start order.
//!
//! - `workload create` and `migrate` wait for the group's leader to settle the workload
//!   from what the hosts report, then say what became of it. Asking again could start a
//!   second copy or move the workload twice.
//! - `workload delete` asks again: deleting is what was asked for whichever way the first
//!   request went, and the second request finds the workload gone or removes it.

use std::time::{Duration, Instant};

use understudy_common::{exit, outln};

use super::api::{answer, send, ApiFailure};
use super::Output;
use crate::server::http::WorkloadView;
use crate::workloads::{WorkloadRecord, WorkloadState};

/// How long to wait for the workload to be settled: an election, the agents reconnecting,
/// and the reconciliation of their reports.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// How long to wait for a migration to be settled: besides the above, the new leader may
/// carry the move on (a restore of a large image) before it can say how it ended.
const MOVE_WAIT: Duration = Duration::from_secs(120);

/// Pause between looks.
const POLL: Duration = Duration::from_millis(500);

/// How long one look may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Looks at workload `name` until `settled` returns something for what the group holds
/// (`None`: no record of it), for at most `wait`. Returns it, or the last reason to wait.
fn wait_until<T>(
    base: &str,
    name: &str,
    wait: Duration,
    mut settled: impl FnMut(Option<&WorkloadView>) -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    let path = format!("/v1/workloads/{name}");
    loop {
        let (url, r) = send(base, "GET", &path, None, LOOK_TIMEOUT);
        let last = match answer::<WorkloadView>(base, &url, r) {
            Ok(v) => settled(Some(&v)),
            Err(ApiFailure::Refused(404, _)) => settled(None),
            Err(ApiFailure::Refused(code, e)) => Err(format!("HTTP {code}: {e}")),
            Err(ApiFailure::Unreachable(e) | ApiFailure::Unsettled(e)) => Err(e),
        };
        match last {
            Ok(t) => return Ok(t),
            Err(last) if started.elapsed() + POLL > wait => return Err(last),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

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
    let looked = wait_until(base, name, SETTLE_WAIT, |v| {
        match v {
        Some(v) if v.record.state != WorkloadState::Starting => Ok(v.clone()),
        Some(v) => Err(format!("it is still starting on {}", v.record.primary)),
        None => Err("the group has no record of it (a create that did not commit, unless a host reports it running)".to_owned()),
    }
    });
    let v = match looked {
        Ok(v) => v,
        Err(last) => {
            eprintln!(
                "not settled after {SETTLE_WAIT:?}: {last}; look again with `understudy workload show {name}` before you create it again"
            );
            return exit::SOFTWARE;
        }
    };
    eprintln!("settled from the hosts' reports:");
    if output == Output::Json {
        return super::api::print_json(&v.record);
    }
    print(&v);
    match v.record.state {
        WorkloadState::Failed(_) => exit::SOFTWARE,
        _ => 0,
    }
}

/// What became of a `migrate` whose progress could no longer be followed, once settled.
#[derive(Debug, PartialEq)]
pub(super) struct MoveSettled {
    /// The exit code: 0 moved, 75 still where it was (asking again is safe), 70 otherwise.
    pub code: i32,
    /// What to tell the operator.
    pub says: String,
}

/// Whether a migration of `name`, asked for while its record was at generation `before`,
/// is settled in `now` (the group's record; `None` when it has none), and how it ended.
/// `Err` says why it is not settled yet. Every switchover runs under a generation above the
/// one it started from, and the record keeps its outcome in `last_migration`.
pub(super) fn move_settled(
    name: &str,
    before: u64,
    now: Option<&WorkloadRecord>,
) -> Result<MoveSettled, String> {
    let Some(r) = now else {
        return Ok(MoveSettled {
            code: exit::SOFTWARE,
            says: format!("the group has no record of {name:?} any more: it was deleted meanwhile"),
        });
    };
    if matches!(r.state, WorkloadState::Starting | WorkloadState::Migrating) {
        return Err(format!(
            "it is {} under generation {} (primary {})",
            r.state.name(),
            r.generation,
            r.primary
        ));
    }
    let state = match &r.state {
        WorkloadState::Running => String::new(),
        other => format!(" ({})", other.name()),
    };
    let settled = match r.last_migration.as_ref().filter(|m| m.generation > before) {
        Some(m) if m.outcome == "succeeded" => MoveSettled {
            code: 0,
            says: format!(
                "migrated {name} from {} to {} in {:.2} s; frozen for {} ms; now on {}{state}",
                m.from,
                m.to,
                m.total_ms as f64 / 1000.0,
                m.freeze_ms.unwrap_or(0),
                r.primary
            ),
        },
        Some(m) => MoveSettled {
            code: if m.outcome == "rolled back" && r.state == WorkloadState::Running {
                exit::TEMP_FAIL
            } else {
                exit::SOFTWARE
            },
            says: format!(
                "migration of {name} {}: {}; it runs on {}{state}",
                m.outcome,
                m.error.as_deref().unwrap_or("no reason given"),
                r.primary
            ),
        },
        None if r.generation == before && r.state == WorkloadState::Running => MoveSettled {
            code: exit::TEMP_FAIL,
            says: format!(
                "{name} was not moved: the request did not take effect, and it still runs on {} under generation {before}; ask again to move it",
                r.primary
            ),
        },
        None => MoveSettled {
            code: exit::SOFTWARE,
            says: format!(
                "{name} was not moved by this request; its record changed otherwise: primary {}{state}, generation {} (was {before}); see `understudy workload show {name}` and `understudy events`",
                r.primary, r.generation
            ),
        },
    };
    Ok(settled)
}

/// Waits until the group has settled the migration of `name` asked for at generation
/// `before`, says how it ended, and returns the exit code for it. `why` says why the
/// migration could no longer be followed.
pub(super) fn move_outcome(base: &str, name: &str, before: u64, output: Output, why: &str) -> i32 {
    move_outcome_within(base, name, before, output, why, MOVE_WAIT)
}

fn move_outcome_within(
    base: &str,
    name: &str,
    before: u64,
    output: Output,
    why: &str,
    wait: Duration,
) -> i32 {
    eprintln!("{why}");
    eprintln!(
        "waiting up to {wait:?} for the coordinator to settle the migration of {name:?} from what the hosts report"
    );
    let mut last_record = None;
    let looked = wait_until(base, name, wait, |v| {
        last_record = v.map(|v| v.record.clone());
        move_settled(name, before, last_record.as_ref())
    });
    match looked {
        Ok(s) => {
            eprintln!("settled from the hosts' reports:");
            if output == Output::Json {
                if let Some(r) = &last_record {
                    super::api::print_json(r);
                }
            } else if s.code == 0 {
                outln!("{}", s.says);
            }
            if s.code != 0 {
                eprintln!("{}", s.says);
            }
            s.code
        }
        Err(last) => {
            eprintln!(
                "not settled after {wait:?}: {last}; follow it with `understudy workload show {name}` before you ask again"
            );
            exit::SOFTWARE
        }
    }
}

/// The outcome of asking again to delete `name` after the first request's answer was
/// lost: the workload, if this request removed it; `None` if it was already gone.
pub(super) fn delete_again(
    base: &str,
    path: &str,
    name: &str,
    why: &str,
) -> Result<Option<WorkloadRecord>, ApiFailure> {
    eprintln!("{why}");
    eprintln!("asking again to delete {name:?}: a delete is safe to repeat");
    match super::api::delete::<WorkloadRecord>(base, path) {
        Ok(rec) => Ok(Some(rec)),
        Err(ApiFailure::Refused(404, _)) => Ok(None),
        Err(f) => Err(f),
    }
}

#[cfg(test)]
#[path = "unsettled_tests.rs"]
mod tests;
