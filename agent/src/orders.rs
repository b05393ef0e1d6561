//! Carrying out the coordinator's orders. Orders for one workload are carried out one at
//! a time (each holds the workload's order lock), and every order but `Query` is checked
//! against the generation fence first: one older than what this agent has seen is refused,
//! naming both numbers, and a newer one is on disk before anything acts on it. Orders that
//! make a copy run here (start, restore) start the workload's task; every other order to a
//! running copy is a message to its task ([`crate::life`]).

use std::sync::Arc;

use understudy_common::workload::{Order, OrderReply, Peer, Report, WorkloadSpec};

use crate::datadir::materialize::remove_aside;
use crate::life::{Event, Handle, Machine, Mailbox};
use crate::node::Node;
use crate::replication::shadow_store::ShadowStore;
use crate::workload::{binds, process, Paths};

mod restore;

/// The number of a workload's first tree in its task's mailbox.
pub(crate) const FIRST_TREE: u64 = 1;

/// Handles one order and returns the reply.
pub async fn handle(node: &Arc<Node>, order: Order) -> OrderReply {
    if let Some(problem) = order.problem() {
        tracing::warn!(order = order.kind(), "refused an invalid order: {problem}");
        return OrderReply::Failed(format!("invalid order: {problem}"));
    }
    let (workload, generation) = order.target();
    if let Order::Query { workload, .. } = &order {
        // Read-only, and waits for the workload's other orders by itself.
        return OrderReply::Held(
            crate::inventory::held(node, workload, true)
                .await
                .map(Box::new),
        );
    }
    let lock = node.order_lock(workload);
    let _serial = lock.lock().await;
    if let Err(e) = node.fence.admit(workload, generation) {
        tracing::warn!(order = order.kind(), "refused: {e}");
        return OrderReply::Failed(e.to_string());
    }
    tracing::info!(order = order.kind(), workload, generation, "order");
    let result = match order {
        Order::Start {
            spec,
            generation,
            shadows,
        } => start(node, spec, generation, shadows).await,
        Order::ExpectShadow { spec, primary, .. } => expect_shadow(node, spec, &primary),
        Order::Demote { spec, primary, .. } => {
            // Post-copy images parked for a restore that will not come go with the stream.
            node.post_copy.discard(&spec.name);
            demote(node, spec, &primary).await
        }
        Order::Checkpoint {
            workload,
            generation,
            final_epoch,
            post_copy,
            to,
        } => checkpoint(node, &workload, generation, (final_epoch, post_copy), to).await,
        Order::Restore {
            spec,
            generation,
            epoch,
            shadows,
            lease_ms,
            fall_back,
            post_copy,
            ..
        } => {
            let name = spec.name.clone();
            let reply = restore::restore(
                node,
                spec,
                generation,
                (epoch, fall_back, post_copy.then_some(lease_ms)),
                shadows,
            )
            .await;
            if reply.is_ok() {
                // The restored copy starts under the lease the order brings.
                crate::lease::pass_on(&name, lease_ms).await;
            }
            reply
        }
        Order::Release { workload, .. } => {
            node.forget_key(&workload);
            release(node, &workload, true).await
        }
        Order::Resume {
            workload,
            generation,
        } => resume(node, &workload, generation).await,
        Order::SetShadows {
            workload,
            generation,
            shadows,
        } => set_shadows(node, &workload, generation, shadows).await,
        Order::Remove { workload, .. } => {
            // Deleting a workload stops it as a service manager would; its data
            // directories stay where they are.
            let reply = release_with(node, &workload, false, Stop::Graceful).await;
            node.forget_key(&workload);
            node.stop_shadowing(&workload);
            let store = ShadowStore::new(Paths::new(&node.data_dir, &workload).shadow_epochs());
            let _ = tokio::task::spawn_blocking(move || store.clear()).await;
            reply
        }
        Order::Query { .. } => Ok(OrderReply::Failed("a query is answered above".into())),
    };
    result.unwrap_or_else(OrderReply::Failed)
}

/// This host is not the workload's primary: stop any copy, put its stale data aside, and
/// keep the epochs of `primary` from now on.
async fn demote(node: &Arc<Node>, spec: WorkloadSpec, primary: &str) -> Result<OrderReply, String> {
    let name = spec.name.clone();
    let ran_here = node.primary(&name).is_some() || node.orphan(&name).is_some();
    release(node, &name, ran_here).await?;
    expect_shadow(node, spec, primary)
}

fn expect_shadow(node: &Node, spec: WorkloadSpec, primary: &str) -> Result<OrderReply, String> {
    for d in &spec.data_dirs {
        node.data_roots
            .check_allowed(d)
            .map_err(|e| format!("{} cannot shadow this workload: {e}", node.name))?;
    }
    node.expect_shadow(spec, primary);
    Ok(OrderReply::Done)
}

async fn start(
    node: &Arc<Node>,
    spec: WorkloadSpec,
    generation: u64,
    shadows: Vec<Peer>,
) -> Result<OrderReply, String> {
    if let Some(p) = node.primary(&spec.name) {
        let snap = p.snapshot();
        return if snap.pid > 0 && crate::procs::is_alive(snap.pid) {
            Ok(OrderReply::Done)
        } else {
            Err(format!(
                "workload {:?} already exists here but is not running",
                spec.name
            ))
        };
    }
    if let Some(o) = node.orphan(&spec.name) {
        return Err(format!(
            "an earlier run of this agent left a copy of {:?} running (pid {}); it must be stopped first",
            spec.name, o.pid
        ));
    }
    let binds = match binds(&node.data_roots, &spec) {
        Ok(b) => b,
        Err(e) => return Ok(OrderReply::Invalid(e)),
    };
    if let Err(e) = crate::workload::precheck::check(&spec, &node.data_roots) {
        return Ok(OrderReply::Invalid(format!("{}: {e}", spec.name)));
    }
    let paths = Paths::new(&node.data_dir, &spec.name);
    std::fs::create_dir_all(paths.root())
        .map_err(|e| format!("{}: {e}", paths.root().display()))?;
    let mailbox = Mailbox::default();
    let running = process::start(
        &spec,
        &binds,
        &paths.output_log(),
        mailbox.exit_hook(&spec.name, FIRST_TREE),
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(workload = %spec.name, pid = running.pid, "workload started");
    if let Err(e) = node.record_copy(&spec, generation, &shadows, running.pid, 1) {
        // Running but not recorded: a restart of this agent would lose track of it.
        running.kill();
        return Err(format!("cannot record the started tree: {e}"));
    }
    if let Err(reason) = &node.criu {
        node.report(Report::Unprotected {
            workload: spec.name.clone(),
            generation,
            reason: format!("unprotected: {reason}"),
        });
    }
    supervise(node, spec, generation, shadows, running, 1, mailbox);
    Ok(OrderReply::Done)
}

/// Starts the task that runs `spec`'s workload from now on.
fn supervise(
    node: &Arc<Node>,
    spec: WorkloadSpec,
    generation: u64,
    shadows: Vec<Peer>,
    running: process::Running,
    next_epoch: u64,
    mailbox: Mailbox,
) {
    let name = spec.name.clone();
    let machine = Machine::new(
        &name,
        spec.restart,
        generation,
        shadows,
        running.pid,
        next_epoch,
    );
    let handle = crate::life::spawn(node, spec, machine, running, mailbox, FIRST_TREE);
    node.set_primary(&name, handle);
}

fn primary_of(node: &Node, workload: &str) -> Result<Arc<Handle>, String> {
    node.primary(workload)
        .ok_or_else(|| format!("workload {workload:?} does not run on {}", node.name))
}

async fn checkpoint(
    node: &Arc<Node>,
    workload: &str,
    generation: u64,
    (final_epoch, post_copy): (bool, bool),
    to: Option<String>,
) -> Result<OrderReply, String> {
    primary_of(node, workload)?
        .order(Event::Checkpoint {
            generation,
            final_epoch,
            post_copy,
            to,
        })
        .await
}

/// How a copy is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At once (a switchover's stale original, a copy that must not run).
    Kill,
    /// As a service manager does (a delete): the spec's stop signal, its stop timeout,
    /// then SIGKILL.
    Graceful,
}

/// Stops every copy of the tree here (supervised or left by an earlier run) and waits
/// until none runs; after a switchover (`stale_data`) this host's copy of the data
/// directories is stale and is put aside.
async fn release(node: &Arc<Node>, workload: &str, stale_data: bool) -> Result<OrderReply, String> {
    release_with(node, workload, stale_data, Stop::Kill).await
}

async fn release_with(
    node: &Arc<Node>,
    workload: &str,
    stale_data: bool,
    how: Stop,
) -> Result<OrderReply, String> {
    if let Some(p) = node.primary(workload) {
        p.order(Event::Release {
            graceful: how == Stop::Graceful,
        })
        .await?;
        node.remove_primary(workload);
        // The workload's data now lives where it runs: this host's copy is stale.
        for dir in node
            .data_host_paths(&p.spec)
            .into_iter()
            .filter(|_| stale_data)
        {
            if let Err(e) = remove_aside(&dir) {
                tracing::warn!(workload, "{e}");
            }
        }
    }
    node.stop_unsupervised(workload, how == Stop::Graceful)
        .await?;
    let dir = Paths::new(&node.data_dir, workload).primary_epochs();
    let scratch = node.scratch.as_ref().map(|root| root.join(workload));
    tokio::task::spawn_blocking(move || {
        crate::checkpoint::remove_dir(&dir);
        if let Some(s) = scratch {
            crate::checkpoint::remove_dir(&s);
        }
    });
    tracing::info!(workload, "released: no copy of the workload runs here");
    Ok(OrderReply::Done)
}

async fn resume(node: &Arc<Node>, workload: &str, generation: u64) -> Result<OrderReply, String> {
    primary_of(node, workload)?
        .order(Event::Resume { generation })
        .await
}

async fn set_shadows(
    node: &Arc<Node>,
    workload: &str,
    generation: u64,
    shadows: Vec<Peer>,
) -> Result<OrderReply, String> {
    primary_of(node, workload)?
        .order(Event::SetShadows {
            generation,
            shadows,
        })
        .await
}
