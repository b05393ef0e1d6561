//! `[decisions]` in coordinator.toml: the engine's mode, which triggers are on and their
//! thresholds, the score's weights and the guardrails. Inconsistent settings (a target
//! health no better than the health that triggers a move, a cluster limit below the
//! per-host one, …) are refused naming the keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use understudy_common::config::{check_range, Problem};

use super::{Mode, Settings};

/// A trigger that can be turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerName {
    /// Health below `health_below` for `health_heartbeats`.
    Health,
    /// Failure risk above `risk_above`.
    Risk,
    /// A memory or disk forecast reaching `exhaustion_share`.
    Exhaustion,
    /// `errors_per_hour` kernel or hardware errors.
    Errors,
}

/// `[decisions]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsSection {
    /// `off`, `advise` or `act` (default).
    pub mode: ModeName,
    /// The automatic triggers that are on (default: all four).
    pub triggers: Vec<TriggerName>,
    /// Health score below which a host is in trouble (default 70).
    pub health_below: u8,
    /// Consecutive heartbeats it must stay below (default 4800: 40 minutes at the default
    /// 500 ms interval).
    pub health_heartbeats: u32,
    /// Failure probability within the horizon above which a host is in trouble (0.5).
    pub risk_above: f32,
    /// Share of memory or disk a p90 forecast must reach (0.95).
    pub exhaustion_share: f32,
    /// Kernel or hardware errors within an hour (10).
    pub errors_per_hour: u32,
    /// How long a risk, exhaustion or error trigger must hold (30 s).
    #[serde(with = "humantime_serde")]
    pub persist: Duration,
    /// How long before a maintenance window its host's workloads start leaving (10 min).
    #[serde(with = "humantime_serde")]
    pub maintenance_lead: Duration,
    /// Score (benefit − cost) a move must exceed (0.3).
    pub threshold: f64,
    /// Cost of a second of predicted freeze (0.05).
    pub cost_per_freeze_second: f64,
    /// Cost of a GiB to send (0.02).
    pub cost_per_gib: f64,
    /// Cost of each move already under way (0.1).
    pub cost_per_running_move: f64,
    /// No automatic move of a workload this long after any move of it (30 min).
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Moves at once from or to one host (1).
    pub max_moves_per_host: usize,
    /// Moves at once in the cluster (4).
    pub max_moves: usize,
    /// Health score a target must have (80).
    pub target_health_min: u8,
    /// Share of a target's memory that must stay free by its forecast (0.1).
    pub target_memory_headroom: f32,
    /// Automatic moves per hour before the engine only advises (6).
    pub moves_per_hour: u32,
    /// More than this share of the connected hosts in trouble at once (at least two), and
    /// automatic moves are only advised (0.5; 1 never holds them).
    pub shared_trouble_share: f32,
}

/// The mode as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// No automatic moves.
    Off,
    /// Decisions are recorded, nothing moves by itself.
    Advise,
    /// Decisions are carried out.
    Act,
}

impl Default for DecisionsSection {
    fn default() -> Self {
        let s = Settings::default();
        DecisionsSection {
            mode: ModeName::Act,
            triggers: vec![
                TriggerName::Health,
                TriggerName::Risk,
                TriggerName::Exhaustion,
                TriggerName::Errors,
            ],
            health_below: s.health_below.unwrap_or(70),
            health_heartbeats: s.health_heartbeats,
            risk_above: s.risk_above.unwrap_or(0.5),
            exhaustion_share: s.exhaustion_share.unwrap_or(0.95),
            errors_per_hour: s.errors_per_hour.unwrap_or(10),
            persist: Duration::from_millis(s.persist_ms),
            maintenance_lead: Duration::from_millis(s.maintenance_lead_ms),
            threshold: s.threshold,
            cost_per_freeze_second: s.cost_per_freeze_s,
            cost_per_gib: s.cost_per_gib,
            cost_per_running_move: s.cost_per_running_move,
            cooldown: Duration::from_millis(s.cooldown_ms),
            max_moves_per_host: s.max_moves_per_host,
            max_moves: s.max_moves,
            target_health_min: s.target_health_min,
            target_memory_headroom: s.target_memory_headroom,
            moves_per_hour: s.moves_per_hour,
            shared_trouble_share: s.shared_trouble_share,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DecisionsSection {
    /// The engine's settings.
    pub fn settings(&self) -> Settings {
        let on = |t: TriggerName| self.triggers.contains(&t);
        Settings {
            mode: match self.mode {
                ModeName::Off => Mode::Off,
                ModeName::Advise => Mode::Advise,
                ModeName::Act => Mode::Act,
            },
            health_below: on(TriggerName::Health).then_some(self.health_below),
            health_heartbeats: self.health_heartbeats,
            risk_above: on(TriggerName::Risk).then_some(self.risk_above),
            exhaustion_share: on(TriggerName::Exhaustion).then_some(self.exhaustion_share),
            errors_per_hour: on(TriggerName::Errors).then_some(self.errors_per_hour),
            persist_ms: ms(self.persist),
            maintenance_lead_ms: ms(self.maintenance_lead),
            threshold: self.threshold,
            cost_per_freeze_s: self.cost_per_freeze_second,
            cost_per_gib: self.cost_per_gib,
            cost_per_running_move: self.cost_per_running_move,
            cooldown_ms: ms(self.cooldown),
            max_moves_per_host: self.max_moves_per_host,
            max_moves: self.max_moves,
            target_health_min: self.target_health_min,
            target_memory_headroom: self.target_memory_headroom,
            moves_per_hour: self.moves_per_hour,
            shared_trouble_share: self.shared_trouble_share,
        }
    }

    /// Every problem with the section, each naming its key.
    pub fn check(&self, problems: &mut Vec<Problem>) {
        let key = |k: &str| format!("decisions.{k}");
        let mut bad = |k: &str, why: String| problems.push(Problem::new(key(k), why));
        if !(1..=100).contains(&self.health_below) {
            bad(
                "health_below",
                format!("{} is outside 1..100", self.health_below),
            );
        }
        if !(1..=100_000).contains(&self.health_heartbeats) {
            bad(
                "health_heartbeats",
                format!("{} is outside 1..100000", self.health_heartbeats),
            );
        }
        if !(self.risk_above > 0.0 && self.risk_above < 1.0) {
            bad(
                "risk_above",
                format!("{} is outside (0, 1)", self.risk_above),
            );
        }
        if !(self.exhaustion_share > 0.0 && self.exhaustion_share <= 1.0) {
            bad(
                "exhaustion_share",
                format!("{} is outside (0, 1]", self.exhaustion_share),
            );
        }
        if self.errors_per_hour == 0 {
            bad("errors_per_hour", "must be at least 1".into());
        }
        for (k, v) in [
            ("threshold", self.threshold),
            ("cost_per_freeze_second", self.cost_per_freeze_second),
            ("cost_per_gib", self.cost_per_gib),
            ("cost_per_running_move", self.cost_per_running_move),
        ] {
            if !v.is_finite() || (k != "threshold" && v < 0.0) {
                bad(k, format!("{v} must be a finite number, 0 or more"));
            }
        }
        if !(self.shared_trouble_share > 0.0 && self.shared_trouble_share <= 1.0) {
            bad(
                "shared_trouble_share",
                format!("{} is outside (0, 1]", self.shared_trouble_share),
            );
        }
        if !(0.0..0.9).contains(&self.target_memory_headroom) {
            bad(
                "target_memory_headroom",
                format!("{} is outside 0..0.9", self.target_memory_headroom),
            );
        }
        if self.max_moves_per_host == 0 {
            bad("max_moves_per_host", "must be at least 1".into());
        }
        if self.max_moves < self.max_moves_per_host {
            bad(
                "max_moves",
                format!(
                    "{} is below max_moves_per_host ({})",
                    self.max_moves, self.max_moves_per_host
                ),
            );
        }
        if self.triggers.contains(&TriggerName::Health)
            && self.target_health_min <= self.health_below
        {
            bad(
                "target_health_min",
                format!(
                    "{} must be above health_below ({}): a target would be in trouble itself",
                    self.target_health_min, self.health_below
                ),
            );
        }
        if self.target_health_min > 100 {
            bad(
                "target_health_min",
                format!("{} is outside 0..100", self.target_health_min),
            );
        }
        for (k, v, max) in [
            ("persist", self.persist, Duration::from_secs(3600)),
            (
                "maintenance_lead",
                self.maintenance_lead,
                Duration::from_secs(7 * 86_400),
            ),
            ("cooldown", self.cooldown, Duration::from_secs(7 * 86_400)),
        ] {
            check_range(problems, &key(k), v, Duration::ZERO, max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent_and_are_the_engines() {
        let mut problems = Vec::new();
        DecisionsSection::default().check(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(DecisionsSection::default().settings(), Settings::default());
    }

    #[test]
    fn inconsistent_settings_are_refused_naming_each_key() {
        let d = DecisionsSection {
            health_below: 85,
            target_health_min: 80,
            max_moves_per_host: 3,
            max_moves: 2,
            risk_above: 1.5,
            shared_trouble_share: 0.0,
            cooldown: Duration::from_secs(30 * 86_400),
            ..DecisionsSection::default()
        };
        let mut problems = Vec::new();
        d.check(&mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "decisions.target_health_min",
            "decisions.max_moves",
            "decisions.risk_above",
            "decisions.shared_trouble_share",
            "decisions.cooldown",
        ] {
            assert!(keys.contains(&k), "{k} missing from {problems:?}");
        }
    }

    #[test]
    fn a_trigger_left_out_is_off() {
        let d = DecisionsSection {
            triggers: vec![TriggerName::Health],
            ..DecisionsSection::default()
        };
        let s = d.settings();
        assert_eq!(s.health_below, Some(70));
        assert_eq!(
            (s.risk_above, s.exhaustion_share, s.errors_per_hour),
            (None, None, None)
        );
    }
}
