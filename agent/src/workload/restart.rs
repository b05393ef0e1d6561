//! What happens when a primary workload's process tree exits on its own: its spec's restart
//! policy ([`RestartPolicy::decide`]) either restarts the command afresh after the policy's
//! delay — reported as `Restarted`, counted in `understudy_workload_restarts_total` — or the
//! exit is reported as the workload's final state. A restart happens only while this host
//! is still the workload's primary in the same generation; a switchover in between wins.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use understudy_common::workload::{Report, WorkloadSpec};

use crate::node::Node;
use crate::primary::now_ms;
use crate::workload::{process, Paths};

/// The hook watching `workload`'s tree (generation `generation`) for an exit nobody asked
/// for. Must be made inside the agent's runtime.
pub fn exit_hook(node: &Arc<Node>, workload: &str, generation: u64) -> process::ExitHook {
    let node = node.clone();
    let workload = workload.to_owned();
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |status| {
        tracing::warn!(workload = %workload, "process tree {status}");
        runtime.spawn(on_exit(node, workload, generation, status));
    })
}

/// Each data directory's copy on this host, bound at its logical path.
pub fn binds(node: &Node, spec: &WorkloadSpec) -> Result<Vec<process::Bind>, String> {
    spec.data_dirs
        .iter()
        .map(|d| {
            node.data_roots.check_existing(d).map(|host| process::Bind {
                host,
                logical: d.clone(),
            })
        })
        .collect()
}

async fn on_exit(node: Arc<Node>, workload: String, generation: u64, status: String) {
    let exited = |status: String| Report::Exited {
        workload: workload.clone(),
        generation,
        status,
    };
    let Some(p) = node.primary(&workload) else {
        node.report(exited(status));
        return;
    };
    let delay = {
        let mut st = p.state.lock().await;
        if st.generation != generation {
            // A switchover is under way: it decides what runs where.
            node.report(exited(status));
            return;
        }
        let policy = p.spec.restart;
        match policy.decide(&st.restarts_ms, now_ms()) {
            Some(delay) => {
                // No epochs of a dead tree while the restart waits.
                st.running = None;
                st.restart_pending = true;
                delay
            }
            None => {
                let status = if policy.attempts == 0 {
                    status
                } else {
                    format!(
                        "{status}; not restarted: {} restarts within {} already (restart.attempts = {})",
                        policy.attempts,
                        humantime::format_duration(Duration::from_millis(policy.window_ms)),
                        policy.attempts
                    )
                };
                node.report(exited(status));
                return;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let mut st = p.state.lock().await;
    st.restart_pending = false;
    let still_ours = node
        .primary(&workload)
        .is_some_and(|now| Arc::ptr_eq(&now, &p));
    if !still_ours || st.running.is_some() {
        // Moved away, deleted, or restored by a switchover that rolled back meanwhile.
        return;
    }
    // A switchover that began during the delay and rolled back left a newer generation.
    let generation = st.generation;
    let started = binds(&node, &p.spec).and_then(|binds| {
        let log = Paths::new(&node.data_dir, &workload).output_log();
        let hook = exit_hook(&node, &workload, generation);
        process::start(&p.spec, &binds, &log, hook).map_err(|e| e.to_string())
    });
    match started {
        Ok(running) => {
            st.restarts_ms.push(now_ms());
            let keep = p.spec.restart.attempts as usize;
            let excess = st.restarts_ms.len().saturating_sub(keep);
            st.restarts_ms.drain(..excess);
            let restarts = p.restarts.fetch_add(1, Ordering::SeqCst) + 1;
            p.pid.store(running.pid, Ordering::SeqCst);
            tracing::info!(workload = %workload, pid = running.pid, restarts, "workload restarted");
            if let Err(e) = node.record_copy(
                &p.spec,
                generation,
                st.shadow.as_ref(),
                running.pid,
                st.next_epoch,
            ) {
                tracing::warn!(workload = %workload, "cannot record the restarted tree: {e}");
            }
            st.running = Some(running);
            node.report(Report::Restarted {
                workload,
                generation,
                status,
                restarts,
            });
        }
        Err(e) => {
            tracing::warn!(workload = %workload, "restart failed: {e}");
            node.report(Report::Exited {
                workload,
                generation,
                status: format!("{status}; restart failed: {e}"),
            });
        }
    }
}
