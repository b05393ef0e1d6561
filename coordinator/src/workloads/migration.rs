//! The planned-switchover state machine, free of I/O, and persisted at every step.
//!
//! The driver writes the machine to the store, carries out the step it returns, and feeds
//! back what became of the order ([`Delivery`]); time is passed in. Phases, in order:
//!
//! 1. **sync**: one more epoch while the workload runs, so the final one is small — again
//!    while the last one carried more than [`SYNC_SMALL_BYTES`], up to [`SYNC_ROUNDS`];
//! 2. **freeze**: the final epoch — dump, stop, transfer, commit on the target;
//! 3. **restore**: the target restores that epoch and checks the workload is alive;
//! 4. **confirm**: only when the restore's answer was lost: ask the target what it runs;
//! 5. **release**: the old primary forgets the stopped original.
//!
//! Any failure before the restore is confirmed rolls back: the old primary resumes the
//! workload (restoring it from its own final dump if it had stopped it). Once a restore
//! order may have reached the target, a rollback first commits a newer generation and makes
//! the target a shadow again under it — which stops any copy it restored — and only after
//! the target has answered does the old primary resume: never two running copies. A
//! target that cannot be reached is asked again until it answers.
//!
//! A coordinator restarted mid-switchover rebuilds the machine from the store and calls
//! [`Migration::after_restart`]: the last order's fate is unknown, so it continues exactly
//! as it would after a lost reply.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use understudy_common::inventory::Held;
use understudy_common::workload::{describe_passed_over, Order, OrderReply, Peer, WorkloadSpec};

use super::failover::HostNow;

/// Why the workload moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An operator's planned switchover: the old primary takes part, and a failure before
    /// the restore is confirmed rolls back to it.
    Switchover,
    /// The old primary is lost: its shadow restores the newest committed epoch. There is
    /// nothing to roll back to; a failure leaves the workload lost.
    Failover,
    /// A planned switchover by post-copy: the final dump leaves the memory out, the target
    /// restores at once and pulls the memory from the old primary, which lives until every
    /// page has arrived. The restore is answered only then; until it is, a failure rolls
    /// back to the old primary, whose tree was held stopped.
    PostCopy,
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Taking a last epoch while running.
    Sync,
    /// Final dump, stop and transfer.
    Freeze,
    /// Restoring on the target.
    Restore,
    /// The restore's answer was lost: asking the target whether it runs the workload.
    Confirm,
    /// Cleaning up on the old primary.
    Release,
    /// Putting the workload back on the old primary after a failure.
    Rollback,
    /// Finished (see the outcome).
    Finished,
}

impl Phase {
    /// The phase as the CLI and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Sync => "sync",
            Phase::Freeze => "freeze",
            Phase::Restore => "restore",
            Phase::Confirm => "confirm",
            Phase::Release => "release",
            Phase::Rollback => "rollback",
            Phase::Finished => "finished",
        }
    }
}

/// How a migration ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The workload runs on the target.
    Succeeded,
    /// The workload runs on the old primary again; the error says what failed.
    RolledBack(String),
    /// The workload may not be running anywhere; the error says what failed.
    Failed(String),
    /// The old primary was lost while a failed switchover waited to resume there, the
    /// target having been made a shadow again: the workload is lost, for a failover to its
    /// shadow to restore (the error says what failed).
    Lost(String),
}

impl Outcome {
    /// "succeeded", "rolled back" or "failed".
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack(_) => "rolled back",
            Outcome::Failed(_) => "failed",
            Outcome::Lost(_) => "lost",
        }
    }

    /// The error, when it did not succeed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Succeeded => None,
            Outcome::RolledBack(e) | Outcome::Failed(e) | Outcome::Lost(e) => Some(e),
        }
    }
}

/// What became of an order.
// One delivery exists at a time per order: boxing the reply would only obscure matches.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The host answered.
    Reply(OrderReply),
    /// The order never left: the host was not connected.
    NotSent(String),
    /// The order may or may not have been carried out: its answer never came (timeout,
    /// lost connection, or the coordinator restarted while waiting).
    Unknown(String),
}

impl Delivery {
    fn describe(&self) -> String {
        match self {
            Delivery::Reply(OrderReply::Failed(e) | OrderReply::Invalid(e)) => e.clone(),
            Delivery::Reply(other) => format!("unexpected reply: {other}"),
            Delivery::NotSent(e) | Delivery::Unknown(e) => e.clone(),
        }
    }
}

/// What the driver must do next.
// One step exists at a time per migration: boxing the order would only obscure matches.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Persist the machine, wait `after`, send `order` to `host`, and feed back its fate.
    Send {
        /// The host.
        host: String,
        /// The order.
        order: Order,
        /// How long to wait for the reply before treating its fate as unknown.
        timeout: Duration,
        /// How long to wait before sending (a retry's pause).
        after: Duration,
    },
    /// The migration is over.
    Finished(Outcome),
}

const EPOCH_TIMEOUT: Duration = Duration::from_secs(600);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts to reach a host whose answer the migration cannot do without.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long an order waits for its host to reconnect before it counts as not sent. An agent
/// that missed a heartbeat's deadline on a loaded host reconnects within a second or two; a
/// switchover ordered in that second should not roll back for it.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(10);
/// A running epoch of a switchover that carried more than this is followed by another
/// (pre-copy rounds, as live migration takes them): what the final epoch carries, with the
/// workload stopped, is what changed during the last running one.
pub const SYNC_SMALL_BYTES: u64 = 32 << 20;
/// At most this many running epochs before the final one, however much they carry.
pub const SYNC_ROUNDS: u32 = 4;

/// Whether the driver should go on holding an order for a host in state `host`, having held
/// it for `held`: while the host is not connected, for at most [`RECONNECT_GRACE`], and not
/// once it has been silent for `failover_after` (it is lost then, and the machine decides
/// what that means). The order has not left, so holding it changes nothing but when it is
/// sent: the workload runs where it ran meanwhile.
pub fn hold_for_reconnect(host: HostNow, held: Duration, failover_after: Duration) -> bool {
    !host.connected && held < RECONNECT_GRACE && host.silent_for < failover_after
}

/// A switchover of one workload from one host to another; everything it needs to carry
/// on after a coordinator restart is in here, and it is stored as it is.
/// (`S` is the spec's type: another only to read records written in an older layout.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration<S = WorkloadSpec> {
    /// Planned or not.
    pub kind: Kind,
    /// The workload's spec (a rollback makes the target its shadow again).
    pub spec: S,
    /// The old primary.
    pub from: String,
    /// The target.
    pub to: Peer,
    /// The switchover's generation.
    pub generation: u64,
    /// Where the new primary sends epochs after the move.
    pub new_shadow: Option<Peer>,
    /// Current phase.
    pub phase: Phase,
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the final checkpoint was ordered, ms since the Unix epoch.
    pub freeze_started_unix_ms: Option<u64>,
    /// The measured freeze, ms.
    pub freeze_ms: Option<u64>,
    /// The final epoch's number, once committed.
    pub final_epoch: Option<u64>,
    /// Whether a restore order may have reached the target.
    pub restore_sent: bool,
    /// The generation a rollback runs under once a restore order may have been carried
    /// out (the target is fenced with it before the old primary resumes).
    pub rollback_generation: Option<u64>,
    /// In a rollback: whether the target has confirmed it holds no running copy.
    pub target_demoted: bool,
    /// What went wrong, in a rollback; in a failover, why the newer epochs the restore
    /// passed over did not restore.
    pub error: Option<String>,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// Attempts at the current step (retries of an unanswered host).
    pub attempts: u32,
}

impl<S> Migration<S> {
    /// The same switchover with its spec changed by `f`.
    pub fn map_spec<T>(self, f: impl FnOnce(S) -> T) -> Migration<T> {
        Migration {
            kind: self.kind,
            spec: f(self.spec),
            from: self.from,
            to: self.to,
            generation: self.generation,
            new_shadow: self.new_shadow,
            phase: self.phase,
            started_unix_ms: self.started_unix_ms,
            freeze_started_unix_ms: self.freeze_started_unix_ms,
            freeze_ms: self.freeze_ms,
            final_epoch: self.final_epoch,
            restore_sent: self.restore_sent,
            rollback_generation: self.rollback_generation,
            target_demoted: self.target_demoted,
            error: self.error,
            outcome: self.outcome,
            attempts: self.attempts,
        }
    }
}

impl Migration {
    /// Starts moving `spec`'s workload (already at its new `generation`) from `from` to
    /// `to`; after the move the new primary sends epochs to `new_shadow`.
    pub fn start(
        spec: WorkloadSpec,
        from: &str,
        to: Peer,
        generation: u64,
        new_shadow: Option<Peer>,
        now_ms: u64,
    ) -> (Self, Step) {
        let m = Migration {
            kind: Kind::Switchover,
            spec,
            from: from.to_owned(),
            to,
            generation,
            new_shadow,
            phase: Phase::Sync,
            started_unix_ms: now_ms,
            freeze_started_unix_ms: None,
            freeze_ms: None,
            final_epoch: None,
            restore_sent: false,
            rollback_generation: None,
            target_demoted: false,
            error: None,
            outcome: None,
            attempts: 0,
        };
        let step = m.checkpoint(false);
        (m, step)
    }

    /// Like [`Migration::start`], by post-copy ([`Kind::PostCopy`]).
    pub fn start_post_copy(
        spec: WorkloadSpec,
        from: &str,
        to: Peer,
        generation: u64,
        new_shadow: Option<Peer>,
        now_ms: u64,
    ) -> (Self, Step) {
        let (mut m, step) = Migration::start(spec, from, to, generation, new_shadow, now_ms);
        m.kind = Kind::PostCopy;
        (m, step)
    }

    /// Starts restoring `spec`'s workload (already at its new `generation`) on `to`, its
    /// shadow, because `from` is lost: from the newest epoch `to` committed, at least
    /// `recovery_epoch`; afterwards the new primary sends epochs to `new_shadow`.
    pub fn failover(
        spec: WorkloadSpec,
        from: &str,
        to: Peer,
        generation: u64,
        new_shadow: Option<Peer>,
        recovery_epoch: u64,
        now_ms: u64,
    ) -> (Self, Step) {
        let (mut m, _) = Migration::start(spec, from, to, generation, new_shadow, now_ms);
        m.kind = Kind::Failover;
        m.phase = Phase::Restore;
        m.restore_sent = true;
        m.final_epoch = Some(recovery_epoch);
        m.freeze_started_unix_ms = Some(now_ms);
        let step = m.restore_step();
        (m, step)
    }

    fn restore_step(&self) -> Step {
        Step::Send {
            host: self.to.name.clone(),
            order: Order::Restore {
                spec: self.spec.clone(),
                workload: self.spec.name.clone(),
                generation: self.generation,
                epoch: self.final_epoch.unwrap_or(0),
                shadows: self.new_shadow.clone().into_iter().collect(),
                lease_ms: None,
                fall_back: self.kind == Kind::Failover,
                post_copy: self.kind == Kind::PostCopy,
            },
            timeout: RESTORE_TIMEOUT,
            after: Duration::ZERO,
        }
    }

    /// The workload's name.
    pub fn workload(&self) -> &str {
        &self.spec.name
    }

    /// The generation the workload is at now (a rollback's, once one was committed).
    pub fn current_generation(&self) -> u64 {
        self.rollback_generation.unwrap_or(self.generation)
    }

    /// The step to take after a coordinator restart: the last order's fate is unknown.
    pub fn after_restart(&mut self, now_ms: u64) -> Step {
        if self.kind == Kind::Failover && self.phase != Phase::Finished {
            self.phase = Phase::Confirm;
            return self.query(Duration::ZERO);
        }
        match self.phase {
            Phase::Finished => Step::Finished(
                self.outcome
                    .clone()
                    .unwrap_or(Outcome::Failed("finished without an outcome".into())),
            ),
            Phase::Rollback => self.rollback_step(Duration::ZERO),
            Phase::Release => self.release(),
            Phase::Confirm => self.query(Duration::ZERO),
            _ => self.on_delivery(
                Delivery::Unknown("the coordinator restarted while waiting for the answer".into()),
                now_ms,
            ),
        }
    }

    fn checkpoint(&self, final_epoch: bool) -> Step {
        Step::Send {
            host: self.from.clone(),
            order: Order::Checkpoint {
                workload: self.spec.name.clone(),
                generation: self.generation,
                final_epoch,
                post_copy: final_epoch && self.kind == Kind::PostCopy,
                to: Some(self.to.name.clone()),
            },
            timeout: EPOCH_TIMEOUT,
            after: Duration::ZERO,
        }
    }

    fn query(&self, after: Duration) -> Step {
        Step::Send {
            host: self.to.name.clone(),
            order: Order::Query {
                workload: self.spec.name.clone(),
                generation: self.generation,
            },
            timeout: QUERY_TIMEOUT,
            after,
        }
    }

    fn release(&mut self) -> Step {
        self.phase = Phase::Release;
        Step::Send {
            host: self.from.clone(),
            order: Order::Release {
                workload: self.spec.name.clone(),
                generation: self.generation,
            },
            timeout: SHORT_TIMEOUT,
            after: Duration::ZERO,
        }
    }

    /// Begins a rollback after `error`.
    fn rollback(&mut self, error: String) -> Step {
        self.phase = Phase::Rollback;
        self.error = Some(error);
        self.attempts = 0;
        if self.restore_sent && self.rollback_generation.is_none() {
            // The target may run a restored copy: fence it with a newer generation.
            self.rollback_generation = Some(self.generation + 1);
        }
        self.rollback_step(Duration::ZERO)
    }

    /// The rollback's next order: demote the target (when a restore may have run there),
    /// then resume on the old primary.
    fn rollback_step(&self, after: Duration) -> Step {
        let generation = self.current_generation();
        if self.rollback_generation.is_some() && !self.target_demoted {
            return Step::Send {
                host: self.to.name.clone(),
                order: Order::Demote {
                    spec: self.spec.clone(),
                    generation,
                    primary: self.from.clone(),
                },
                timeout: RESTORE_TIMEOUT,
                after,
            };
        }
        Step::Send {
            host: self.from.clone(),
            order: Order::Resume {
                workload: self.spec.name.clone(),
                generation,
            },
            timeout: RESTORE_TIMEOUT,
            after,
        }
    }

    /// The old primary is lost (silent past the failover delay). A switchover rolling back
    /// that has only the old primary's resume left (the target answered that it runs
    /// nothing, or was never asked to restore) ends with the workload lost, so that it
    /// fails over to its shadow instead of waiting for a host that may never return. `None`
    /// in any other phase: the machine goes on as it was.
    pub fn old_primary_lost(&mut self) -> Option<Step> {
        let demoting = self.rollback_generation.is_some() && !self.target_demoted;
        if self.kind == Kind::Failover || self.phase != Phase::Rollback || demoting {
            return None;
        }
        let e = format!(
            "{}; then {} was lost before it resumed the workload",
            self.error.clone().unwrap_or_default(),
            self.from
        );
        Some(self.finish(Outcome::Lost(e)))
    }

    /// The target is lost (silent past the failover delay). Under leases, any copy it
    /// restored froze when its lease ran out — the rule that lets a failover restore a lost
    /// primary's workload elsewhere — and is stopped when the target returns, since the
    /// record no longer names it. So a switchover asking the target whether it runs the
    /// restored workload, or waiting for it to confirm that it runs no copy, rolls back
    /// without its answer: the old primary resumes under the rollback generation rather than
    /// staying stopped for a host that may never return. A failover confirming its restore
    /// fails (it is tried again, and the workload comes back wherever it can: on another
    /// shadow, or on its old primary when that returns). `None` in any other phase, and
    /// without leases (nothing fences the target's copy: the machine goes on asking).
    pub fn target_lost(&mut self, leased: bool) -> Option<Step> {
        if !leased {
            return None;
        }
        let demoting = self.rollback_generation.is_some() && !self.target_demoted;
        let lost = format!(
            "{} was lost (any copy it restored froze when its lease ran out)",
            self.to.name
        );
        if self.kind == Kind::Failover {
            return (self.phase == Phase::Confirm).then(|| {
                self.finish(Outcome::Failed(format!(
                    "the answer to the restore on {} was lost, and {lost}",
                    self.to.name
                )))
            });
        }
        match self.phase {
            Phase::Confirm => {
                self.phase = Phase::Rollback;
                self.error = Some(format!(
                    "the answer to the restore on {} was lost, and {lost}",
                    self.to.name
                ));
            }
            Phase::Rollback if demoting => {
                let e = self.error.clone().unwrap_or_default();
                self.error = Some(format!("{e}; then {lost}"));
            }
            _ => return None,
        }
        if self.restore_sent && self.rollback_generation.is_none() {
            self.rollback_generation = Some(self.generation + 1);
        }
        self.target_demoted = true;
        self.attempts = 0;
        Some(self.rollback_step(Duration::ZERO))
    }

    fn finish(&mut self, outcome: Outcome) -> Step {
        self.phase = Phase::Finished;
        self.outcome = Some(outcome.clone());
        Step::Finished(outcome)
    }

    /// Feeds what became of the last order, at `now_ms` (ms since the Unix epoch).
    pub fn on_delivery(&mut self, delivery: Delivery, now_ms: u64) -> Step {
        self.attempts += 1;
        if self.kind == Kind::Failover {
            return self.on_failover_delivery(delivery, now_ms);
        }
        match (self.phase, delivery) {
            // `attempts` counts the running epochs taken so far in this phase.
            (Phase::Sync, Delivery::Reply(OrderReply::Epoch(report)))
                if report.bytes_changed > SYNC_SMALL_BYTES && self.attempts < SYNC_ROUNDS =>
            {
                self.checkpoint(false)
            }
            (Phase::Sync, Delivery::Reply(OrderReply::Epoch(_))) => {
                self.phase = Phase::Freeze;
                self.attempts = 0;
                self.freeze_started_unix_ms = Some(now_ms);
                self.checkpoint(true)
            }
            (Phase::Sync, other) => {
                // Nothing was stopped; resuming restarts the periodic epochs it paused.
                self.rollback(format!("pre-switchover epoch failed: {}", other.describe()))
            }
            (Phase::Freeze, Delivery::Reply(OrderReply::Epoch(report))) => {
                self.phase = Phase::Restore;
                self.attempts = 0;
                self.final_epoch = Some(report.epoch);
                self.restore_sent = true;
                self.restore_step()
            }
            (Phase::Freeze, other) => {
                // Resume restores from the final dump if the tree was stopped; the old
                // primary answers only once any final checkpoint in progress has ended.
                self.rollback(format!("final epoch failed: {}", other.describe()))
            }
            (
                Phase::Restore,
                Delivery::Reply(OrderReply::Restored {
                    check_ms,
                    memory_ms,
                    ..
                }),
            ) => {
                // The workload runs again once restored; neither its liveness check nor the
                // memory a post-copy move pulls in while it runs is freeze.
                self.freeze_ms = self.freeze_started_unix_ms.map(|t| {
                    now_ms
                        .saturating_sub(t)
                        .saturating_sub(check_ms)
                        .saturating_sub(memory_ms)
                });
                self.release()
            }
            (Phase::Restore, Delivery::NotSent(e)) => {
                // The restore never left: nothing can run on the target.
                self.restore_sent = false;
                self.rollback(format!("restore on {} not sent: {e}", self.to.name))
            }
            (Phase::Restore, Delivery::Unknown(_)) => {
                self.phase = Phase::Confirm;
                self.attempts = 0;
                self.query(Duration::ZERO)
            }
            (Phase::Restore, other) => self.rollback(format!(
                "restore on {} failed: {}",
                self.to.name,
                other.describe()
            )),
            (Phase::Confirm, Delivery::Reply(OrderReply::Held(held))) => {
                let busy = held.as_ref().is_some_and(|h| h.busy);
                if busy {
                    self.query(RETRY_PAUSE)
                } else if runs_here(held.as_deref(), self.generation) {
                    self.release()
                } else {
                    self.rollback(format!(
                        "the answer to the restore on {} was lost, and {} does not run it",
                        self.to.name, self.to.name
                    ))
                }
            }
            (Phase::Confirm, _) => self.query(RETRY_PAUSE),
            (Phase::Release, _) => self.finish(Outcome::Succeeded),
            (Phase::Rollback, delivery) => self.on_rollback_delivery(delivery),
            (Phase::Finished, _) => Step::Finished(
                self.outcome
                    .clone()
                    .unwrap_or(Outcome::Failed("migration already finished".into())),
            ),
        }
    }

    /// A failover: restore on the shadow, confirm when the answer is lost, and nothing to
    /// roll back to.
    fn on_failover_delivery(&mut self, delivery: Delivery, now_ms: u64) -> Step {
        match (self.phase, delivery) {
            (
                Phase::Restore | Phase::Confirm,
                Delivery::Reply(OrderReply::Restored {
                    epoch,
                    check_ms,
                    passed_over,
                    ..
                }),
            ) => {
                // Newer epochs that did not restore: the workload lost more than the
                // recorded recovery point, and the operator is told why.
                self.error = (!passed_over.is_empty()).then(|| describe_passed_over(&passed_over));
                self.final_epoch = Some(epoch);
                self.freeze_ms = self
                    .freeze_started_unix_ms
                    .map(|t| now_ms.saturating_sub(t).saturating_sub(check_ms));
                self.finish(Outcome::Succeeded)
            }
            (Phase::Restore, Delivery::Unknown(_)) => {
                self.phase = Phase::Confirm;
                self.attempts = 0;
                self.query(Duration::ZERO)
            }
            (Phase::Confirm, Delivery::Reply(OrderReply::Held(held))) => {
                if held.as_ref().is_some_and(|h| h.busy) {
                    self.query(RETRY_PAUSE)
                } else if runs_here(held.as_deref(), self.generation) {
                    self.finish(Outcome::Succeeded)
                } else {
                    self.finish(Outcome::Failed(format!(
                        "the answer to the restore on {} was lost, and {} does not run it",
                        self.to.name, self.to.name
                    )))
                }
            }
            (Phase::Confirm, _) => self.query(RETRY_PAUSE),
            (Phase::Finished, _) => Step::Finished(
                self.outcome
                    .clone()
                    .unwrap_or(Outcome::Failed("failover already finished".into())),
            ),
            (_, other) => self.finish(Outcome::Failed(format!(
                "restore on {} failed: {}",
                self.to.name,
                other.describe()
            ))),
        }
    }

    fn on_rollback_delivery(&mut self, delivery: Delivery) -> Step {
        let demoting = self.rollback_generation.is_some() && !self.target_demoted;
        match delivery {
            Delivery::Reply(OrderReply::Done) if demoting => {
                self.target_demoted = true;
                self.attempts = 0;
                self.rollback_step(Duration::ZERO)
            }
            Delivery::Reply(OrderReply::Done) => {
                let e = self.error.clone().unwrap_or_default();
                self.finish(Outcome::RolledBack(e))
            }
            // Without the target's word that it runs nothing, the old primary must not
            // resume; without the old primary's answer nobody knows whether it resumed.
            Delivery::NotSent(_) | Delivery::Unknown(_) => self.rollback_step(RETRY_PAUSE),
            Delivery::Reply(_) if demoting => self.rollback_step(RETRY_PAUSE),
            other => {
                let e = format!(
                    "{}; then resuming on {} failed: {}",
                    self.error.clone().unwrap_or_default(),
                    self.from,
                    other.describe()
                );
                self.finish(Outcome::Failed(e))
            }
        }
    }

    /// Who the migration is waiting for, when it keeps retrying a host.
    pub fn waiting_for(&self) -> Option<String> {
        if self.attempts == 0 {
            return None;
        }
        match self.phase {
            Phase::Confirm => Some(format!(
                "the answer to the restore on {} was lost; asking {} whether it runs the workload (attempt {})",
                self.to.name, self.to.name, self.attempts
            )),
            Phase::Rollback if self.rollback_generation.is_some() && !self.target_demoted => {
                Some(format!(
                    "rolling back: waiting for {} to confirm it runs no copy (attempt {})",
                    self.to.name, self.attempts
                ))
            }
            Phase::Rollback => Some(format!(
                "rolling back: waiting for {} to resume the workload (attempt {})",
                self.from, self.attempts
            )),
            _ => None,
        }
    }
}

/// Whether `held` shows a live copy under `generation`.
fn runs_here(held: Option<&Held>, generation: u64) -> bool {
    held.and_then(|h| h.copy.as_ref())
        .is_some_and(|c| c.generation == generation && c.is_alive())
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod tests;
