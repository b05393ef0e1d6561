//! Carrying out the coordinator's orders. Orders for one workload are carried out one at
//! a time (each holds the workload's order lock), and every order but `Query` is checked
//! against the generation fence first: one older than what this agent has seen is refused,
//! naming both numbers, and a newer one is on disk before anything acts on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_common::epoch::Manifest;
use understudy_common::workload::{Order, OrderReply, Peer, Report, WorkloadSpec};

use crate::datadir::materialize::{materialize, remove_aside};
use crate::node::Node;
use crate::primary::{restore_tree, Primary, PrimaryState};
use crate::replication::shadow_store::ShadowStore;
use crate::workload::restart::{binds, exit_hook};
use crate::workload::{process, Paths};

/// How long a stopped tree may take to be gone before the stop counts as failed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Handles one order and returns the reply.
pub async fn handle(node: &Arc<Node>, order: Order) -> OrderReply {
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
            shadow,
        } => start(node, spec, generation, shadow).await,
        Order::ExpectShadow { spec, primary, .. } => expect_shadow(node, spec, &primary),
        Order::Demote { spec, primary, .. } => demote(node, spec, &primary).await,
        Order::Checkpoint {
            workload,
            generation,
            final_epoch,
        } => checkpoint(node, &workload, generation, final_epoch).await,
        Order::Restore {
            spec,
            generation,
            epoch,
            shadow,
            lease_ms,
            ..
        } => {
            let name = spec.name.clone();
            let reply = restore(node, spec, generation, epoch, shadow).await;
            if reply.is_ok() {
                // The restored copy starts under the lease the order brings.
                crate::lease::pass_on(&name, lease_ms).await;
            }
            reply
        }
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
            // Deleting a workload stops it as a service manager would; its data
            // directories stay where they are.
            let reply = release_with(node, &workload, false, Stop::Graceful).await;
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
    if let Some(o) = node.orphan(&spec.name) {
        return Err(format!(
            "an earlier run of this agent left a copy of {:?} running (pid {}); it must be stopped first",
            spec.name, o.pid
        ));
    }
    let binds = match binds(node, &spec) {
        Ok(b) => b,
        Err(e) => return Ok(OrderReply::Invalid(e)),
    };
    if let Err(e) = crate::workload::precheck::check(&spec, &node.data_roots) {
        return Ok(OrderReply::Invalid(format!("{}: {e}", spec.name)));
    }
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
    if let Err(e) = node.record_copy(&spec, generation, shadow.as_ref(), running.pid, 1) {
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
    p.set_generation(&mut st, generation);
    // A switchover has begun: periodic epochs pause, so none holds the workload up between
    // the switchover's last epoch and its final one. `Resume` restarts them.
    st.loop_id += 1;
    st.epochs_paused = true;
    let report = p.take_epoch(node, &mut st, final_epoch).await?;
    Ok(OrderReply::Epoch(report))
}

async fn restore(
    node: &Arc<Node>,
    spec: WorkloadSpec,
    generation: u64,
    epoch: u64,
    shadow: Option<Peer>,
) -> Result<OrderReply, String> {
    let name = spec.name.clone();
    let workload = name.as_str();
    for d in &spec.data_dirs {
        node.data_roots
            .check_allowed(d)
            .map_err(|e| format!("{} cannot restore this workload: {e}", node.name))?;
    }
    let paths = Paths::new(&node.data_dir, workload);
    let store = ShadowStore::new(paths.shadow_epochs());
    // The newest committed epoch, never one older than the coordinator's recovery point.
    let epoch = match store.newest() {
        Some(n) if n >= epoch => n,
        Some(n) => {
            return Err(format!(
            "asked to restore epoch {epoch} or newer, but the newest committed epoch here is {n}"
        ))
        }
        None => {
            return Err(format!(
                "no committed epoch of {workload:?} on {}",
                node.name
            ))
        }
    };
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
    if node.fence.seen(workload) != Some(generation) {
        // A newer generation arrived while it was restored: this copy is not the one.
        running.kill();
        return Err(format!(
            "generation {generation} of {workload:?} was superseded during the restore"
        ));
    }
    if let Err(e) = node.record_copy(&spec, generation, shadow.as_ref(), pid, epoch + 1) {
        running.kill();
        return Err(format!("cannot record the restored tree: {e}"));
    }
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
        epoch,
        pid,
        restore_ms,
        check_ms,
    })
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
    if let Some(p) = node.remove_primary(workload) {
        let mut st = p.state.lock().await;
        st.loop_id += 1;
        if let Some(r) = st.running.take() {
            if how == Stop::Graceful {
                r.expect_exit();
                if let Some(sig) =
                    understudy_common::workload::stop_signal_number(&p.spec.stop_signal)
                {
                    r.signal(sig);
                }
                let limit = Duration::from_millis(p.spec.stop_timeout_ms);
                let started = Instant::now();
                while r.is_alive() && started.elapsed() < limit {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if r.is_alive() {
                    tracing::warn!(
                        workload,
                        "still running {limit:?} after {}: killing it",
                        p.spec.stop_signal
                    );
                }
            }
            r.kill();
            let started = Instant::now();
            while r.is_alive() {
                if started.elapsed() > STOP_LIMIT {
                    node.set_primary(workload, p.clone());
                    st.running = Some(r);
                    return Err(format!(
                        "{workload:?} (pid {}) did not stop within {STOP_LIMIT:?}",
                        p.pid.load(std::sync::atomic::Ordering::Relaxed)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
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
    node.stop_unsupervised(workload, how == Stop::Graceful)
        .await?;
    let dir = Paths::new(&node.data_dir, workload).primary_epochs();
    tokio::task::spawn_blocking(move || crate::checkpoint::remove_dir(&dir));
    tracing::info!(workload, "released: no copy of the workload runs here");
    Ok(OrderReply::Done)
}

async fn resume(node: &Arc<Node>, workload: &str, generation: u64) -> Result<OrderReply, String> {
    let p = primary_of(node, workload)?;
    {
        let mut st = p.state.lock().await;
        p.set_generation(&mut st, generation);
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
            node.record_copy(
                &p.spec,
                generation,
                st.shadow.as_ref(),
                running.pid,
                st.next_epoch.max(manifest.epoch + 1),
            )?;
            st.running = Some(running);
            st.next_epoch = st.next_epoch.max(manifest.epoch + 1);
        }
        st.final_dump = None;
        let pid = st.running.as_ref().map_or(0, |r| r.pid);
        node.record_copy(&p.spec, generation, st.shadow.as_ref(), pid, st.next_epoch)?;
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
    p.set_generation(&mut st, generation);
    if st.shadow.as_ref() != Some(&shadow) {
        tracing::info!(workload, shadow = %shadow.name, "new shadow; the next epoch goes whole");
        st.shadow = Some(shadow);
        // The new shadow holds nothing to apply deltas to.
        st.acked = None;
    }
    if let Some(r) = &st.running {
        node.record_copy(
            &p.spec,
            generation,
            st.shadow.as_ref(),
            r.pid,
            st.next_epoch,
        )?;
    }
    Ok(OrderReply::Done)
}
