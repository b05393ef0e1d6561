//! Carrying out failovers: every sweep tick the coordinator asks the failover module
//! ([`crate::workloads::failover`]) which workloads lost their primary long enough ago,
//! marks the ones nothing can restore yet as lost, and restores the others on their
//! shadows through the same persisted state machine as switchovers (its failover kind:
//! restore, confirm when the answer is lost, nothing to roll back to).

use std::sync::Arc;

use super::records::Claim;
use super::switchover::{drive, status_of};
use super::workloads::expect_shadow;
use super::{wall_ms, Shared};
use crate::workloads::failover::Decision;
use crate::workloads::migration::Migration;
use crate::workloads::WorkloadState;

/// Decides and starts what the time calls for.
pub fn tick(shared: &Arc<Shared>) {
    for d in shared.failover_decisions() {
        match d {
            Decision::Lose { workload, why } => {
                tracing::error!(workload = %workload, "lost: {why}");
                shared.update_workload(&workload, |r| r.state = WorkloadState::Lost(why));
            }
            Decision::FailOver { workload, from, to } => {
                let Ok(claim) = shared.claim(&workload, "a failover") else {
                    continue;
                };
                tokio::spawn(fail_over(shared.clone(), claim, workload, from, to));
            }
        }
    }
}

async fn fail_over(shared: Arc<Shared>, claim: Claim, name: String, from: String, to: String) {
    let Some(rec) = shared.workload(&name) else {
        return;
    };
    let (Ok(to_peer), Some(point)) = (shared.peer(&to), rec.last_epoch.clone()) else {
        return;
    };
    // The newest epoch the chosen shadow holds (with several, it may not hold the newest
    // committed anywhere: that one's holder is unreachable).
    let floor = rec.epoch_on(&to).unwrap_or(point.epoch);
    let generation = rec.generation + 1;
    let mut taken: Vec<&str> = rec.shadows();
    taken.push(&from);
    let new_shadow = shared.pick_shadow(&name, &to, &taken);
    tracing::warn!(
        workload = %name,
        from = %from,
        to = %to,
        generation,
        recovery_epoch = floor,
        age_ms = wall_ms().saturating_sub(point.committed_unix_ms),
        "{from} is lost: failing over to {to}"
    );
    // Whoever shadows it next expects the new primary's epochs under the new generation.
    let new_shadow_peer = match &new_shadow {
        Some(s) => expect_shadow(&shared, &name, generation, s, &to).await.ok(),
        None => None,
    };
    let (machine, step) = Migration::failover(
        rec.spec.clone(),
        &from,
        to_peer,
        generation,
        new_shadow_peer,
        floor,
        wall_ms(),
    );
    // The commit point of the new generation: from here the old primary's copy is stale.
    shared.save_migration(&machine, |r| r.state = WorkloadState::Migrating);
    shared.set_migration(status_of(
        &machine,
        format!(
            "fail over {name} from {from} (lost) to {to}: generation {} -> {generation}, from epoch {} or newer",
            rec.generation, floor
        ),
    ));
    drive(shared, claim, machine, step).await;
}
