//! The lease a workload runs under, as its supervisor enforces it: the coordinator renews it
//! (through the agent) while it knows this host is the workload's primary; if no renewal
//! comes within the lease, the supervisor freezes the whole tree, with or without a live
//! agent, so that a coordinator that has lost this host can restore the workload elsewhere
//! without two copies running. A renewal thaws it.
//!
//! Pure state: the supervisor's loop feeds it the time that passed and the renewals, and
//! does what it answers. The time fed is capped per step (see [`MAX_STEP`]): a clock that
//! jumps — a tree restored on another host, whose monotonic clock is unrelated — costs at
//! most that much lease, never a spurious freeze. A host that stops its clock for longer
//! than the lease (a paused VM) is not seen; docs/failover.md lists it.

use std::time::Duration;

/// The most time one step of the loop may count (the loop steps every 250 ms at most).
pub const MAX_STEP: Duration = Duration::from_secs(1);

/// What the supervisor must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Stop every process of the tree (SIGSTOP).
    Freeze,
    /// Let them go on (SIGCONT).
    Thaw,
}

/// A lease and whether the tree is frozen for lack of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// Time left; `None` while no lease applies (never renewed, or renewed without a bound).
    remaining: Option<Duration>,
    frozen: bool,
}

impl Lease {
    /// Whether the tree is frozen.
    pub fn frozen(&self) -> bool {
        self.frozen
    }

    /// Time left on the lease, if one applies.
    pub fn remaining(&self) -> Option<Duration> {
        self.remaining
    }

    /// A renewal for `valid` from now (`None`: run without a lease, as for workloads whose
    /// failover is manual).
    pub fn renew(&mut self, valid: Option<Duration>) -> Action {
        self.remaining = valid;
        if self.frozen {
            self.frozen = false;
            Action::Thaw
        } else {
            Action::None
        }
    }

    /// `elapsed` passed (capped at [`MAX_STEP`]).
    pub fn tick(&mut self, elapsed: Duration) -> Action {
        let Some(left) = self.remaining else {
            return Action::None;
        };
        let left = left.saturating_sub(elapsed.min(MAX_STEP));
        self.remaining = Some(left);
        if left.is_zero() && !self.frozen {
            self.frozen = true;
            Action::Freeze
        } else {
            Action::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_unrenewed_lease_freezes_once_and_a_renewal_thaws() {
        let mut l = Lease::default();
        assert_eq!(l.tick(S * 100), Action::None, "no lease yet: never frozen");
        assert_eq!(l.renew(Some(S * 3)), Action::None);
        assert_eq!(l.tick(S), Action::None);
        assert_eq!(l.tick(S), Action::None);
        assert_eq!(l.tick(S), Action::Freeze);
        assert!(l.frozen());
        assert_eq!(l.tick(S), Action::None, "frozen once");
        assert_eq!(l.renew(Some(S * 3)), Action::Thaw);
        assert!(!l.frozen());
        assert_eq!(l.renew(None), Action::None);
        assert_eq!(l.tick(S * 1000), Action::None, "no bound: never frozen");
    }

    #[test]
    fn a_clock_jump_costs_at_most_one_step() {
        let mut l = Lease::default();
        l.renew(Some(S * 5));
        assert_eq!(l.tick(Duration::from_secs(86_400)), Action::None);
        assert_eq!(l.remaining(), Some(S * 4));
    }
}
