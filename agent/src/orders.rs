//! Carrying out the coordinator's orders. Every order is checked against the generation
//! fence first: one older than what this agent has seen is refused, naming both numbers.

use std::sync::Arc;

use understudy_common::epoch::Manifest;
use understudy_common::workload::{Order, OrderReply, Peer, Report, WorkloadSpec};

use crate::datadir::materialize::{materialize, remove_aside};
use crate::node::Node;
use crate::primary::{restore_tree, Primary, PrimaryState};
use crate::replication::shadow_store::ShadowStore;
use crate::workload::restart::{binds, exit_hook};
use crate::workload::{process, Paths};

/// Handles one order and returns the reply.
pub async fn handle(node: &Arc<Node>, order: Order) -> OrderReply {
    let (workload, generation) = order.target();
    if let Err(e) = node.fence.admit(workload, generation) {
        tracing::warn!(order = order.kind(), "refused: {e}");
        return OrderReply::Failed(e);
    }
    tracing::info!(order = order.kind(), workload, generation, "order");
    let result = match order {
        Order::Start {
            spec,
            generation,
            shadow,
        } => start(node, spec, generation, shadow).await,
        Order::ExpectShadow { spec, primary, .. } => expect_shadow(node, spec, &primary),
        Order::Checkpoint {
            workload,
            generation,
            final_epoch,
        } => checkpoint(node, &workload, generation, final_epoch).await,
        Order::Restore {
            workload,
            generation,
            epoch,
            shadow,
        } => restore(node, &workload, generation, epoch, shadow).await,
        Order::Release { workload, .. } => release(node, &workload, true).await,
        Order::Resume {
            workload,
            generation,
        } => resume(node, &workload, generation).await,
        Order::SetShadow {
            workload,
            generation,
            shadow,
        } => set_shadow(node, &workload, generation, shadow).await,
        Order::Remove { workload, .. } => {
            // Deleting a workload stops it; its data directories stay where they are.
            let reply = release(node, &workload, false).await;
            node.stop_shadowing(&workload);
            let store = ShadowStore::new(Paths::new(&node.data_dir, &workload).shadow_epochs());
            tokio::task::spawn_blocking(move || store.clear());
            reply
        }
    };
    result.unwrap_or_else(OrderReply::Failed)
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
    shadow: Option<Peer>,
) -> Result<OrderReply, String> {
    if let Some(p) = node.primary(&spec.name) {
        let st = p.state.lock().await;
        return if st.running.as_ref().is_some_and(|r| r.is_alive()) {
            Ok(OrderReply::Done)
        } else {
            Err(format!(
                "workload {:?} already exists here but is not running",
                spec.name
            ))
        };
    }
    let binds = match binds(node, &spec) {
        Ok(b) => b,
        Err(e) => return Ok(OrderReply::Invalid(e)),
    };
    let paths = Paths::new(&node.data_dir, &spec.name);
    std::fs::create_dir_all(paths.root())
        .map_err(|e| format!("{}: {e}", paths.root().display()))?;
    let running = process::start(
        &spec,
        &binds,
        &paths.output_log(),
        exit_hook(node, &spec.name, generation),
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(workload = %spec.name, pid = running.pid, "workload started");
    if let Err(reason) = &node.criu {
        node.report(Report::Unprotected {
            workload: spec.name.clone(),
            generation,
            reason: format!("unprotected: {reason}"),
        });
    }
    let name = spec.name.clone();
    let primary = Primary::new(spec, PrimaryState::running(generation, shadow, running, 1));
    node.set_primary(&name, primary.clone());
    primary.start_loop(node).await;
    Ok(OrderReply::Done)
}

fn primary_of(node: &Node, workload: &str) -> Result<Arc<Primary>, String> {
    node.primary(workload)
        .ok_or_else(|| format!("workload {workload:?} does not run on {}", node.name))
}

async fn checkpoint(
    node: &Arc<Node>,
    workload: &str,
    generation: u64,
    final_epoch: bool,
) -> Result<OrderReply, String> {
    let p = primary_of(node, workload)?;
    let mut st = p.state.lock().await;
    st.generation = generation;
    // A switchover has begun: periodic epochs pause, so none holds the workload up between
    // the switchover's last epoch and its final one. `Resume` restarts them.
    st.loop_id += 1;
    let report = p.take_epoch(node, &mut st, final_epoch).await?;
    Ok(OrderReply::Epoch(report))
}

async fn restore(
    node: &Arc<Node>,
    workload: &str,
    generation: u64,
    epoch: u64,
    shadow: Option<Peer>,
) -> Result<OrderReply, String> {
    let paths = Paths::new(&node.data_dir, workload);
    let store = ShadowStore::new(paths.shadow_epochs());
    match store.newest() {
        Some(n) if n == epoch => {}
        Some(n) => {
            return Err(format!(
                "asked to restore epoch {epoch}, but the newest committed epoch here is {n}"
            ))
        }
        None => {
            return Err(format!(
                "no committed epoch of {workload:?} on {}",
                node.name
            ))
        }
    }
    let dir = store.epoch_dir(epoch);
    let manifest = Manifest::read_from(&dir).map_err(|e| e.to_string())?;
    // Hash every file again unless this process verified them while committing (an epoch
    // read back from disk after a restart could have been damaged since).
    if !node.was_verified(workload, epoch) {
        let d2 = dir.clone();
        let m2 = manifest.clone();
        tokio::task::spawn_blocking(move || m2.verify_dir(&d2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("refusing to restore epoch {epoch}: {e}"))?;
    }
    let spec = node
        .shadow_spec(workload)
        .ok_or_else(|| format!("no spec of {workload:?} known here"))?;
    if !spec.data_dirs.is_empty() {
        // The epoch's data files move into place (hard links shared with older epochs,
        // which go): from here on this host has no shadow copy to fall back on.
        let (entries, d2, targets) = (
            manifest.data.clone(),
            dir.clone(),
            node.data_host_paths(&spec),
        );
        let logical = (!node.data_roots.is_identity()).then(|| spec.data_dirs.clone());
        let placed = tokio::task::spawn_blocking(move || {
            for mount_point in logical.iter().flatten() {
                std::fs::create_dir_all(mount_point)
                    .map_err(|e| format!("{}: {e}", mount_point.display()))?;
            }
            materialize(&entries, &d2, &targets)
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Err(e) = placed {
            let s2 = store.clone();
            tokio::task::spawn_blocking(move || s2.clear());
            return Err(format!("cannot put the data directories in place: {e}"));
        }
    }
    let restored = restore_tree(node, &spec, generation, dir, &manifest).await;
    if restored.is_err() && !spec.data_dirs.is_empty() {
        let s2 = store.clone();
        tokio::task::spawn_blocking(move || s2.clear());
    }
    let (running, restore_ms, check_ms) = restored?;
    let pid = running.pid;
    tracing::info!(
        workload,
        pid,
        restore_ms,
        "workload restored; now primary here"
    );
    node.stop_shadowing(workload);
    let primary = Primary::new(
        spec,
        PrimaryState::running(generation, shadow, running, epoch + 1),
    );
    node.set_primary(workload, primary.clone());
    primary.start_loop(node).await;
    // The shadow copies are not needed any more; removing gigabytes takes time, so it
    // happens after the reply, off the switchover's critical path.
    tokio::task::spawn_blocking(move || store.clear());
    Ok(OrderReply::Restored {
        pid,
        restore_ms,
        check_ms,
    })
}

/// Stops the tree here; after a switchover (`stale_data`) this host's copy of the data
/// directories is stale and is removed.
async fn release(node: &Arc<Node>, workload: &str, stale_data: bool) -> Result<OrderReply, String> {
    if let Some(p) = node.remove_primary(workload) {
        let mut st = p.state.lock().await;
        st.loop_id += 1;
        if let Some(r) = st.running.take() {
            r.kill();
        }
        st.final_dump = None;
        st.acked = None;
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
    let dir = Paths::new(&node.data_dir, workload).primary_epochs();
    tokio::task::spawn_blocking(move || crate::checkpoint::remove_dir(&dir));
    tracing::info!(workload, "released: the workload now runs elsewhere");
    Ok(OrderReply::Done)
}

async fn resume(node: &Arc<Node>, workload: &str, generation: u64) -> Result<OrderReply, String> {
    let p = primary_of(node, workload)?;
    {
        let mut st = p.state.lock().await;
        st.generation = generation;
        let alive = st.running.as_ref().is_some_and(|r| r.is_alive());
        if !alive {
            let (dir, manifest) = st
                .final_dump
                .clone()
                .ok_or("the workload is stopped and there is no final dump to resume from")?;
            let (running, restore_ms, _) =
                restore_tree(node, &p.spec, generation, dir, &manifest).await?;
            tracing::info!(
                workload,
                pid = running.pid,
                restore_ms,
                "resumed from the final dump"
            );
            p.pid
                .store(running.pid, std::sync::atomic::Ordering::Relaxed);
            st.running = Some(running);
            st.next_epoch = st.next_epoch.max(manifest.epoch + 1);
        }
        st.final_dump = None;
    }
    p.start_loop(node).await;
    Ok(OrderReply::Done)
}

async fn set_shadow(
    node: &Arc<Node>,
    workload: &str,
    generation: u64,
    shadow: Peer,
) -> Result<OrderReply, String> {
    let p = primary_of(node, workload)?;
    let mut st = p.state.lock().await;
    st.generation = generation;
    if st.shadow.as_ref() != Some(&shadow) {
        tracing::info!(workload, shadow = %shadow.name, "new shadow; the next epoch goes whole");
        st.shadow = Some(shadow);
        // The new shadow holds nothing to apply deltas to.
        st.acked = None;
    }
    Ok(OrderReply::Done)
}
