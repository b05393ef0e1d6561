//! The pace of a workload's periodic epochs. From what its committed epochs cost — the time
//! the workload was frozen, the agent's CPU, the time from the epoch's start to its commit
//! — the [`Pacer`] picks the time from one epoch's end to the next one's start: the spec's
//! interval (the recovery-point target) when the workload's frozen share of wall time and
//! the agent's CPU share stay within their budgets at it, else the shortest interval that
//! keeps them there. No I/O: fed measurements, it answers with a [`Cadence`].
//!
//! Costs that rise are believed at once (the next epoch is already paced for them, so a
//! workload that starts dirtying far more memory is not frozen beyond budget for several
//! epochs); costs that fall are believed gradually, so one cheap epoch does not bring the
//! interval back down only for the next to overshoot.

use understudy_common::workload::{Cadence, CadenceLimit};

/// Longest interval the pacer picks (the spec's own upper bound).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Weight of a new measurement when it is below the estimate.
const FALL_WEIGHT: f64 = 0.25;

/// The shares of a workload's wall time periodic epochs may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Percent of wall time the workload may be frozen by periodic epochs (1–100).
    pub freeze_percent: u8,
    /// Percent of one core the agent may spend on the workload's epochs (1–100).
    pub cpu_percent: u8,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            freeze_percent: 5,
            cpu_percent: 20,
        }
    }
}

/// What one committed periodic epoch cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Time the workload was frozen, ms.
    pub frozen_ms: u64,
    /// Agent CPU spent on it, ms.
    pub cpu_ms: u64,
    /// Time from the epoch's start to its commit on the shadow, ms.
    pub busy_ms: u64,
    /// Whether every file went whole (a new shadow's first epoch): its CPU says nothing
    /// of the epochs that follow.
    pub whole: bool,
}

/// Paces one workload's epochs.
#[derive(Debug, Clone)]
pub struct Pacer {
    target_ms: u64,
    budgets: Budgets,
    frozen_ms: Option<f64>,
    cpu_ms: Option<f64>,
    current: Cadence,
}

impl Pacer {
    /// A pacer for a spec interval of `target_ms`, which it keeps until it has measured an
    /// epoch.
    pub fn new(target_ms: u64, budgets: Budgets) -> Self {
        let target_ms = target_ms.clamp(1, MAX_INTERVAL_MS);
        Pacer {
            target_ms,
            budgets,
            frozen_ms: None,
            cpu_ms: None,
            current: Cadence {
                interval_ms: target_ms,
                limit: CadenceLimit::Spec,
            },
        }
    }

    /// The pace chosen last.
    pub fn current(&self) -> Cadence {
        self.current
    }

    /// Takes in what an epoch cost and answers with the pace of the next ones.
    pub fn observe(&mut self, cost: Cost) -> Cadence {
        self.frozen_ms = Some(smooth(self.frozen_ms, cost.frozen_ms));
        if !cost.whole {
            self.cpu_ms = Some(smooth(self.cpu_ms, cost.cpu_ms));
        }
        // An epoch starts `interval` after the previous one ended, so one period is the
        // interval plus the epoch itself; each budget bounds the period from below.
        let busy = cost.busy_ms as f64;
        let gap = |spent: Option<f64>, percent: u8| {
            spent.map_or(0.0, |ms| ms * 100.0 / f64::from(percent.max(1)) - busy)
        };
        let mut pick = (self.target_ms as f64, CadenceLimit::Spec);
        for candidate in [
            (
                gap(self.frozen_ms, self.budgets.freeze_percent),
                CadenceLimit::FreezeBudget,
            ),
            (
                gap(self.cpu_ms, self.budgets.cpu_percent),
                CadenceLimit::CpuBudget,
            ),
        ] {
            if candidate.0 > pick.0 {
                pick = candidate;
            }
        }
        self.current = Cadence {
            interval_ms: (pick.0.ceil() as u64).clamp(1, MAX_INTERVAL_MS.max(self.target_ms)),
            limit: pick.1,
        };
        self.current
    }
}

fn smooth(estimate: Option<f64>, measured: u64) -> f64 {
    let m = measured as f64;
    match estimate {
        Some(e) if m < e => e + FALL_WEIGHT * (m - e),
        _ => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(frozen_ms: u64, cpu_ms: u64, busy_ms: u64) -> Cost {
        Cost {
            frozen_ms,
            cpu_ms,
            busy_ms,
            whole: false,
        }
    }

    /// Frozen share of wall time of epochs costing `c` paced at `p`.
    fn freeze_share(c: Cost, p: Cadence) -> f64 {
        c.frozen_ms as f64 / (p.interval_ms + c.busy_ms) as f64
    }

    #[test]
    fn cheap_epochs_keep_the_spec_interval() {
        let mut p = Pacer::new(2000, Budgets::default());
        let c = p.observe(cost(40, 30, 200));
        assert_eq!(
            c,
            Cadence {
                interval_ms: 2000,
                limit: CadenceLimit::Spec
            }
        );
    }

    #[test]
    fn a_workload_dirtying_twenty_times_more_gets_a_longer_interval_at_once() {
        let mut p = Pacer::new(1000, Budgets::default());
        for _ in 0..5 {
            assert_eq!(p.observe(cost(30, 20, 150)).limit, CadenceLimit::Spec);
        }
        let heavy = cost(600, 150, 1200);
        let c = p.observe(heavy);
        assert_eq!(c.limit, CadenceLimit::FreezeBudget);
        // 600 ms frozen at 5 %: a 12 s period, of which the epoch itself takes 1.2 s.
        assert_eq!(c.interval_ms, 10_800);
        assert!(freeze_share(heavy, c) <= 0.05 + 1e-9);
    }

    #[test]
    fn the_interval_comes_back_down_gradually_when_epochs_get_cheap_again() {
        let mut p = Pacer::new(1000, Budgets::default());
        let long = p.observe(cost(600, 100, 1000)).interval_ms;
        let mut seen = vec![long];
        for _ in 0..20 {
            seen.push(p.observe(cost(30, 20, 150)).interval_ms);
        }
        assert!(
            seen[1] < long && seen[1] > 1000,
            "one cheap epoch halves nothing at once: {seen:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[1] <= w[0]),
            "falls monotonically: {seen:?}"
        );
        assert_eq!(p.current().interval_ms, 1000, "{seen:?}");
        assert_eq!(p.current().limit, CadenceLimit::Spec);
    }

    #[test]
    fn the_cpu_budget_binds_when_the_agent_works_more_than_the_workload_is_frozen() {
        let mut p = Pacer::new(500, Budgets::default());
        let c = p.observe(cost(10, 400, 300));
        // 400 ms of CPU at 20 %: a 2 s period.
        assert_eq!(
            c,
            Cadence {
                interval_ms: 1700,
                limit: CadenceLimit::CpuBudget
            }
        );
    }

    #[test]
    fn a_whole_first_epoch_s_cpu_does_not_set_the_pace() {
        let mut p = Pacer::new(1000, Budgets::default());
        let c = p.observe(Cost {
            whole: true,
            ..cost(20, 5000, 4000)
        });
        assert_eq!(c.limit, CadenceLimit::Spec, "{c:?}");
        assert_eq!(p.observe(cost(20, 40, 200)).limit, CadenceLimit::Spec);
    }

    #[test]
    fn budgets_of_a_hundred_percent_never_bind_and_the_interval_is_capped() {
        let mut p = Pacer::new(
            1000,
            Budgets {
                freeze_percent: 100,
                cpu_percent: 100,
            },
        );
        assert_eq!(p.observe(cost(900, 900, 100)).limit, CadenceLimit::Spec);
        let mut p = Pacer::new(1000, Budgets::default());
        let c = p.observe(cost(u64::MAX / 2, 0, 0));
        assert_eq!(c.interval_ms, MAX_INTERVAL_MS);
        assert_eq!(c.limit, CadenceLimit::FreezeBudget);
    }
}
