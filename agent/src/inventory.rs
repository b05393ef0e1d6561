//! What this agent holds, as the coordinator's reconciliation needs it: every copy of a
//! workload it runs (supervised, or left by an earlier run), every workload it keeps epochs
//! of, and its fence. Built for registration and every few heartbeats (never waiting: a
//! workload an order holds right now is reported busy), and for a `Query` order
//! (waiting until the workload is free, so the answer is settled).

use std::collections::BTreeSet;
use std::path::Path;

use understudy_common::inventory::{CopyState, Held, Inventory, LocalCopy, ShadowCopy};

use crate::node::Node;
use crate::replication::shadow_store::ShadowStore;
use crate::workload::Paths;

/// Everything this agent holds, without waiting for busy workloads.
pub async fn build(node: &Node) -> Inventory {
    let mut names: BTreeSet<String> = node
        .primaries()
        .iter()
        .map(|p| p.spec.name.clone())
        .collect();
    names.extend(node.orphans().into_iter().map(|o| o.spec.name));
    names.extend(node.shadowed());
    names.extend(shadow_stores(&node.data_dir));
    let mut workloads = Vec::new();
    for name in names {
        if let Some(h) = held(node, &name, false).await {
            workloads.push(h);
        }
    }
    Inventory {
        agent_started_unix_ms: node.started_unix_ms,
        workloads,
        fence: node.fence.all(),
    }
}

/// Workloads with a shadow directory holding committed epochs.
fn shadow_stores(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("workloads"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| {
            ShadowStore::new(Paths::new(data_dir, name).shadow_epochs())
                .newest()
                .is_some()
        })
        .collect()
}

/// What this host holds of `workload`; with `wait`, only once no order holds it.
pub async fn held(node: &Node, workload: &str, wait: bool) -> Option<Held> {
    let order_lock = node.order_lock(workload);
    let _order = if wait {
        Some(order_lock.lock().await)
    } else {
        match order_lock.try_lock() {
            Ok(g) => Some(g),
            Err(_) => return Some(busy(workload)),
        }
    };
    let copy = match node.primary(workload) {
        Some(p) => {
            let snap = p.snapshot();
            if snap.busy {
                // Its restart policy is about to start it again, or it is being stopped.
                return Some(busy(workload));
            }
            let state = match snap.state {
                // Its exit may not have reached its task yet.
                CopyState::Running { .. } if !crate::procs::is_alive(snap.pid) => CopyState::Exited,
                s => s,
            };
            Some(LocalCopy {
                spec: p.spec.clone(),
                generation: snap.generation,
                shadows: snap.shadows,
                pid: snap.pid,
                state,
            })
        }
        None => node.orphan(workload).map(|o| LocalCopy {
            spec: o.spec,
            generation: o.generation,
            shadows: o.shadows.into_iter().map(|p| p.name).collect(),
            pid: o.pid,
            state: CopyState::Orphaned,
        }),
    };
    let store = ShadowStore::new(Paths::new(&node.data_dir, workload).shadow_epochs());
    let primary = node.expected_primary(workload);
    let newest_epoch = store.newest();
    let shadow = (primary.is_some() || newest_epoch.is_some()).then_some(ShadowCopy {
        primary,
        newest_epoch,
    });
    if copy.is_none() && shadow.is_none() {
        return None;
    }
    Some(Held {
        workload: workload.to_owned(),
        copy,
        shadow,
        busy: false,
    })
}

fn busy(workload: &str) -> Held {
    Held {
        workload: workload.to_owned(),
        copy: None,
        shadow: None,
        busy: true,
    }
}
