//! The restore order: this host, a shadow, becomes the workload's primary from the newest
//! epoch it committed — never one older than the coordinator's recovery point — and, in a
//! failover (`fall_back`), from the next older epoch it keeps when a newer one does not
//! restore: a damaged epoch, a CRIU restore that fails (a file the workload had open is gone
//! on this host), or a restored tree that exits at once or fails its probe. Nothing newer
//! exists anywhere in a failover, and an older state beats none; the reply names every
//! epoch passed over and why, for the coordinator to show.

use std::sync::Arc;

use understudy_common::epoch::Manifest;
use understudy_common::workload::{OrderReply, PassedOver, Peer, WorkloadSpec};

use super::{supervise, FIRST_TREE};
use crate::datadir::materialize::materialize;
use crate::life::restore::{restore_tree, Restored};
use crate::life::Mailbox;
use crate::node::Node;
use crate::replication::shadow_store::ShadowStore;
use crate::workload::Paths;

/// Restores `spec`'s workload here under `generation`, from epoch `floor` or newer (older
/// ones too, after newer ones failed, with `fall_back`), or by post-copy from the images
/// the old primary sent (`post_copy`, with the lease the restored copy starts under); its
/// epochs go to `shadows` next.
pub(super) async fn restore(
    node: &Arc<Node>,
    spec: WorkloadSpec,
    generation: u64,
    (floor, fall_back, post_copy): (u64, bool, Option<Option<u64>>),
    shadows: Vec<Peer>,
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
    if let Some(lease_ms) = post_copy {
        let done = crate::postcopy::target::restore(node, &spec, generation, lease_ms).await?;
        let epoch = done.epoch;
        return become_primary(
            node,
            (spec, generation, shadows),
            (epoch, done.restored, done.mailbox, done.memory_ms),
            (store, Vec::new()),
        );
    }
    // A workload's data directories are moved into place from the epoch it restores
    // (hard links shared with older epochs, which go): after one attempt there is nothing
    // older to fall back on.
    let fall_back = fall_back && spec.data_dirs.is_empty();
    let candidates = candidates(&store.committed(), floor, fall_back).map_err(|e| match e {
        NoEpoch::None => format!("no committed epoch of {workload:?} on {}", node.name),
        NoEpoch::TooOld(n) => format!(
            "asked to restore epoch {floor} or newer, but the newest committed epoch here is {n}"
        ),
    })?;
    let mut passed_over = Vec::new();
    let mut restored = None;
    for epoch in candidates {
        match restore_epoch(node, &spec, &store, epoch).await {
            Ok(r) => {
                restored = Some((epoch, r));
                break;
            }
            Err(reason) => {
                tracing::warn!(workload, epoch, "epoch did not restore: {reason}");
                passed_over.push(PassedOver { epoch, reason });
            }
        }
    }
    let Some((epoch, (restored, mailbox))) = restored else {
        return Err(match passed_over.as_slice() {
            [one] => one.reason.clone(),
            all => format!(
                "no epoch here restored: {}",
                understudy_common::workload::describe_passed_over(all)
            ),
        });
    };
    become_primary(
        node,
        (spec, generation, shadows),
        (epoch, restored, mailbox, 0),
        (store, passed_over),
    )
}

/// Makes the restored tree this host's primary copy, unless a newer generation came in
/// meanwhile (then it is killed); the shadow copies go after the reply.
fn become_primary(
    node: &Arc<Node>,
    (spec, generation, shadows): (WorkloadSpec, u64, Vec<Peer>),
    (epoch, restored, mailbox, memory_ms): (u64, Restored, Mailbox, u64),
    (store, passed_over): (ShadowStore, Vec<PassedOver>),
) -> Result<OrderReply, String> {
    let name = spec.name.clone();
    let workload = name.as_str();
    let Restored {
        running,
        restore_ms,
        check_ms,
    } = restored;
    let pid = running.pid;
    if node.fence.seen(workload) != Some(generation) {
        // A newer generation arrived while it was restored: this copy is not the one.
        running.kill();
        return Err(format!(
            "generation {generation} of {workload:?} was superseded during the restore"
        ));
    }
    if let Err(e) = node.record_copy(&spec, generation, &shadows, pid, epoch + 1) {
        running.kill();
        return Err(format!("cannot record the restored tree: {e}"));
    }
    if passed_over.is_empty() {
        tracing::info!(
            workload,
            pid,
            restore_ms,
            "workload restored; now primary here"
        );
    } else {
        tracing::warn!(
            workload,
            pid,
            restore_ms,
            epoch,
            "workload restored from an older epoch than the newest; now primary here"
        );
    }
    node.stop_shadowing(workload);
    supervise(node, spec, generation, shadows, running, epoch + 1, mailbox);
    // The shadow copies are not needed any more; removing gigabytes takes time, so it
    // happens after the reply, off the switchover's critical path.
    tokio::task::spawn_blocking(move || store.clear());
    Ok(OrderReply::Restored {
        epoch,
        pid,
        restore_ms,
        check_ms,
        passed_over,
        memory_ms,
    })
}

/// Restores committed epoch `epoch` and checks it is alive; the tree's mailbox comes with
/// it. Fails with why, having left no running tree.
async fn restore_epoch(
    node: &Arc<Node>,
    spec: &WorkloadSpec,
    store: &ShadowStore,
    epoch: u64,
) -> Result<(Restored, Mailbox), String> {
    let workload = spec.name.as_str();
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
            node.data_host_paths(spec),
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
    let mailbox = Mailbox::default();
    let restored = restore_tree(
        node.criu.clone(),
        &node.data_dir,
        spec,
        (dir, &manifest, node.key(workload)),
        node.data_host_paths(spec),
        mailbox.exit_hook(workload, FIRST_TREE),
        false,
    )
    .await;
    if restored.is_err() && !spec.data_dirs.is_empty() {
        let s2 = store.clone();
        tokio::task::spawn_blocking(move || s2.clear());
    }
    Ok((restored?, mailbox))
}

/// Why no epoch can be tried.
#[derive(Debug, PartialEq, Eq)]
enum NoEpoch {
    /// None is committed here.
    None,
    /// The newest here is this one, older than the recovery point.
    TooOld(u64),
}

/// The epochs to try, in order, from those committed here (`committed`, oldest first): the
/// newest, which must be at least `floor`; with `fall_back`, then every older one.
fn candidates(committed: &[u64], floor: u64, fall_back: bool) -> Result<Vec<u64>, NoEpoch> {
    match committed.last() {
        None => Err(NoEpoch::None),
        Some(&n) if n < floor => Err(NoEpoch::TooOld(n)),
        Some(&n) if !fall_back => Ok(vec![n]),
        Some(_) => Ok(committed.iter().rev().copied().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switchover_tries_only_the_newest_epoch() {
        assert_eq!(candidates(&[5, 6, 7], 7, false), Ok(vec![7]));
        assert_eq!(candidates(&[5, 6, 7], 6, false), Ok(vec![7]));
    }

    #[test]
    fn a_failover_falls_back_newest_first_even_below_the_recovery_point() {
        assert_eq!(candidates(&[5, 6, 7], 7, true), Ok(vec![7, 6, 5]));
    }

    #[test]
    fn the_newest_epoch_must_still_reach_the_recovery_point() {
        // A shadow that does not hold the recorded recovery point has lost epochs: its
        // older ones are no substitute, fall back or not.
        assert_eq!(candidates(&[4, 5, 6], 7, true), Err(NoEpoch::TooOld(6)));
        assert_eq!(candidates(&[], 0, true), Err(NoEpoch::None));
    }
}
