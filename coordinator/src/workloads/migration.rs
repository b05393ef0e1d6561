//! The planned-switchover state machine, free of I/O.
//!
//! The driver feeds it each order's reply and carries out the step it returns; time is
//! passed in. Phases, in order:
//!
//! 1. **sync**: one more epoch while the workload runs, so the final one is small;
//! 2. **freeze**: the final epoch — dump, stop, transfer, commit on the target;
//! 3. **restore**: the target restores that epoch and checks the workload is alive;
//! 4. **release**: the old primary forgets the stopped original.
//!
//! Any failure before the restore is confirmed rolls back: the old primary resumes the
//! workload (restoring from its own final dump if it had stopped it) and its periodic
//! epochs, which the switchover paused. A failure of the
//! release itself does not undo a confirmed switchover.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use understudy_common::workload::{Order, OrderReply, Peer};

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
    /// Cleaning up on the old primary.
    Release,
    /// Putting the workload back on the old primary after a failure.
    Rollback,
    /// Finished (see the outcome).
    Finished,
}

/// How a migration ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The workload runs on the target.
    Succeeded,
    /// The workload runs on the old primary again; the error says what failed.
    RolledBack(String),
    /// The workload may not be running anywhere; the error says what failed.
    Failed(String),
}

/// What the driver must do next.
// One step exists at a time per migration: boxing the order would only obscure matches.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send `order` to `host` and feed its reply back.
    Send {
        /// The host.
        host: String,
        /// The order.
        order: Order,
        /// How long to wait for the reply before treating it as failed.
        timeout: Duration,
    },
    /// The migration is over.
    Finished(Outcome),
}

/// A switchover of one workload from one host to another.
#[derive(Debug, Clone)]
pub struct Migration {
    workload: String,
    from: String,
    to: Peer,
    generation: u64,
    new_shadow: Option<Peer>,
    phase: Phase,
    freeze_started: Option<Instant>,
    freeze: Option<Duration>,
    final_epoch: Option<u64>,
    error: Option<String>,
}

const EPOCH_TIMEOUT: Duration = Duration::from_secs(600);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);

impl Migration {
    /// Starts moving `workload` (already at its new `generation`) from `from` to `to`;
    /// after the move the new primary sends epochs to `new_shadow`.
    pub fn start(
        workload: &str,
        from: &str,
        to: Peer,
        generation: u64,
        new_shadow: Option<Peer>,
    ) -> (Self, Step) {
        let m = Migration {
            workload: workload.to_owned(),
            from: from.to_owned(),
            to,
            generation,
            new_shadow,
            phase: Phase::Sync,
            freeze_started: None,
            freeze: None,
            final_epoch: None,
            error: None,
        };
        let step = m.checkpoint(false);
        (m, step)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The measured freeze: from sending the final checkpoint to the restore's reply.
    pub fn freeze(&self) -> Option<Duration> {
        self.freeze
    }

    /// The final epoch's number, once committed.
    pub fn final_epoch(&self) -> Option<u64> {
        self.final_epoch
    }

    fn checkpoint(&self, final_epoch: bool) -> Step {
        Step::Send {
            host: self.from.clone(),
            order: Order::Checkpoint {
                workload: self.workload.clone(),
                generation: self.generation,
                final_epoch,
            },
            timeout: EPOCH_TIMEOUT,
        }
    }

    fn rollback(&mut self, error: String) -> Step {
        self.phase = Phase::Rollback;
        self.error = Some(error);
        Step::Send {
            host: self.from.clone(),
            order: Order::Resume {
                workload: self.workload.clone(),
                generation: self.generation,
            },
            timeout: RESTORE_TIMEOUT,
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Step {
        self.phase = Phase::Finished;
        Step::Finished(outcome)
    }

    /// Feeds the reply to the last order (a timeout is a `Failed` reply), at time `now`.
    pub fn on_reply(&mut self, reply: OrderReply, now: Instant) -> Step {
        match (self.phase, reply) {
            (Phase::Sync, OrderReply::Epoch(_)) => {
                self.phase = Phase::Freeze;
                self.freeze_started = Some(now);
                self.checkpoint(true)
            }
            (Phase::Sync, other) => {
                // Nothing was stopped; resuming restarts the periodic epochs it paused.
                self.rollback(format!("pre-switchover epoch failed: {}", describe(&other)))
            }
            (Phase::Freeze, OrderReply::Epoch(report)) => {
                self.phase = Phase::Restore;
                self.final_epoch = Some(report.epoch);
                Step::Send {
                    host: self.to.name.clone(),
                    order: Order::Restore {
                        workload: self.workload.clone(),
                        generation: self.generation,
                        epoch: report.epoch,
                        shadow: self.new_shadow.clone(),
                    },
                    timeout: RESTORE_TIMEOUT,
                }
            }
            (Phase::Freeze, other) => {
                self.rollback(format!("final epoch failed: {}", describe(&other)))
            }
            (Phase::Restore, OrderReply::Restored { check_ms, .. }) => {
                // The workload runs again once restored; its liveness check is not freeze.
                self.freeze = self.freeze_started.map(|t| {
                    now.saturating_duration_since(t)
                        .saturating_sub(Duration::from_millis(check_ms))
                });
                self.phase = Phase::Release;
                Step::Send {
                    host: self.from.clone(),
                    order: Order::Release {
                        workload: self.workload.clone(),
                        generation: self.generation,
                    },
                    timeout: SHORT_TIMEOUT,
                }
            }
            (Phase::Restore, other) => self.rollback(format!(
                "restore on {} failed: {}",
                self.to.name,
                describe(&other)
            )),
            (Phase::Release, _) => self.finish(Outcome::Succeeded),
            (Phase::Rollback, OrderReply::Done) => {
                let e = self.error.clone().unwrap_or_default();
                self.finish(Outcome::RolledBack(e))
            }
            (Phase::Rollback, other) => {
                let e = format!(
                    "{}; then resuming on {} failed: {}",
                    self.error.clone().unwrap_or_default(),
                    self.from,
                    describe(&other)
                );
                self.finish(Outcome::Failed(e))
            }
            (Phase::Finished, _) => {
                Step::Finished(Outcome::Failed("migration already finished".into()))
            }
        }
    }
}

fn describe(reply: &OrderReply) -> String {
    match reply {
        OrderReply::Failed(e) => e.clone(),
        other => format!("unexpected reply {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::workload::EpochReport;

    fn peer(n: &str) -> Peer {
        Peer {
            name: n.into(),
            addr: "10.0.0.2:7442".parse().unwrap(),
        }
    }

    fn epoch(n: u64) -> OrderReply {
        OrderReply::Epoch(EpochReport {
            epoch: n,
            ..Default::default()
        })
    }

    fn host_and_kind(step: &Step) -> (String, &'static str) {
        match step {
            Step::Send { host, order, .. } => (host.clone(), order.kind()),
            Step::Finished(_) => ("-".into(), "finished"),
        }
    }

    #[test]
    fn happy_path_orders_and_measures_freeze() {
        let t0 = Instant::now();
        let (mut m, s) = Migration::start("w", "a", peer("b"), 4, Some(peer("a")));
        assert_eq!(host_and_kind(&s), ("a".into(), "checkpoint"));
        let s = m.on_reply(epoch(10), t0);
        assert_eq!(host_and_kind(&s), ("a".into(), "final-checkpoint"));
        let s = m.on_reply(epoch(11), t0 + Duration::from_millis(50));
        assert_eq!(host_and_kind(&s), ("b".into(), "restore"));
        if let Step::Send {
            order:
                Order::Restore {
                    epoch,
                    generation,
                    shadow,
                    ..
                },
            ..
        } = &s
        {
            assert_eq!((*epoch, *generation), (11, 4));
            assert_eq!(shadow.as_ref().map(|p| p.name.as_str()), Some("a"));
        }
        let restored = OrderReply::Restored {
            pid: 1,
            restore_ms: 5,
            check_ms: 20,
        };
        let s = m.on_reply(restored, t0 + Duration::from_millis(250));
        assert_eq!(host_and_kind(&s), ("a".into(), "release"));
        assert_eq!(m.freeze(), Some(Duration::from_millis(230)));
        assert_eq!(
            m.on_reply(OrderReply::Done, t0),
            Step::Finished(Outcome::Succeeded)
        );
    }

    #[test]
    fn failure_before_freeze_resumes_where_it_runs() {
        let (mut m, _) = Migration::start("w", "a", peer("b"), 4, None);
        let s = m.on_reply(
            OrderReply::Failed("shadow unreachable".into()),
            Instant::now(),
        );
        assert_eq!(host_and_kind(&s), ("a".into(), "resume"));
        match m.on_reply(OrderReply::Done, Instant::now()) {
            Step::Finished(Outcome::RolledBack(e)) => assert!(e.contains("shadow unreachable")),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.freeze(), None);
    }

    #[test]
    fn failed_transfer_or_restore_resumes_on_the_old_primary() {
        for fail_at_restore in [false, true] {
            let t = Instant::now();
            let (mut m, _) = Migration::start("w", "a", peer("b"), 4, None);
            m.on_reply(epoch(1), t);
            if fail_at_restore {
                m.on_reply(epoch(2), t);
            }
            let s = m.on_reply(OrderReply::Failed("boom".into()), t);
            assert_eq!(host_and_kind(&s), ("a".into(), "resume"));
            assert_eq!(m.phase(), Phase::Rollback);
            match m.on_reply(OrderReply::Done, t) {
                Step::Finished(Outcome::RolledBack(e)) => assert!(e.contains("boom")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn failed_resume_is_reported_as_failure_with_both_errors() {
        let t = Instant::now();
        let (mut m, _) = Migration::start("w", "a", peer("b"), 4, None);
        m.on_reply(epoch(1), t);
        m.on_reply(OrderReply::Failed("transfer cut".into()), t);
        match m.on_reply(OrderReply::Failed("criu restore failed".into()), t) {
            Step::Finished(Outcome::Failed(e)) => {
                assert!(e.contains("transfer cut") && e.contains("criu restore failed"))
            }
            other => panic!("{other:?}"),
        }
    }
}
