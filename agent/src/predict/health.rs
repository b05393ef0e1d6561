//! The host's health score, 0–100, from the anomaly detector's state and the host's
//! memory headroom: a documented heuristic, not a trained model.
//!
//! score = 100 − 40·min(1, anomaly/threshold) − 10·[alarming] − 40·clamp((mem_u − 0.8)/0.2, 0, 1)
//!
//! then capped by predicted exhaustion: at most 79 (warning) when the memory forecast's p90
//! upper bound reaches the limit (all memory in use) within its horizon, at most 69
//! (critical) when its central estimate does.
//!
//! Levels: healthy ≥ 80, critical < 70, warning between; degraded while there is no
//! assessment (no model, or the host's baseline is still being learned).

use understudy_common::telemetry::{Forecast, HealthLevel, HealthReport};

/// The share of memory in use that counts as exhausted.
pub const MEMORY_LIMIT: f32 = 1.0;

/// Scores at or above this are healthy.
pub const HEALTHY: u8 = 80;
/// Scores below this are critical.
pub const CRITICAL: u8 = 70;

/// The level of a score.
pub fn level(score: u8) -> HealthLevel {
    if score >= HEALTHY {
        HealthLevel::Healthy
    } else if score >= CRITICAL {
        HealthLevel::Warning
    } else {
        HealthLevel::Critical
    }
}

/// The report for an anomaly score against its threshold, the memory in use (0..1) and
/// the resource forecasts.
pub fn assess(
    anomaly: f64,
    threshold: f64,
    alarm: bool,
    mem_used: Option<f64>,
    top: Vec<(String, f32)>,
    forecasts: Vec<Forecast>,
) -> HealthReport {
    let a = (anomaly / threshold.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    let m = mem_used.map_or(0.0, |u| ((u - 0.8) / 0.2).clamp(0.0, 1.0));
    let score = (100.0 - 40.0 * a - if alarm { 10.0 } else { 0.0 } - 40.0 * m).clamp(0.0, 100.0);
    let mut score = score.round() as u8;
    let mut note = None;
    if let Some(f) = forecasts.iter().find(|f| f.metric == "mem_u") {
        let within = f.horizon_secs / 60;
        if f.central >= MEMORY_LIMIT {
            score = score.min(CRITICAL - 1);
            note = Some(format!("memory predicted to run out within {within} min"));
        } else if f.upper >= MEMORY_LIMIT {
            score = score.min(HEALTHY - 1);
            note = Some(format!(
                "memory may run out within {within} min (p90 bound)"
            ));
        }
    }
    HealthReport {
        score,
        level: level(score),
        anomaly: anomaly as f32,
        anomaly_threshold: threshold as f32,
        top,
        note,
        forecasts,
    }
}

/// A report without an assessment.
pub fn degraded(note: String) -> HealthReport {
    HealthReport {
        score: 0,
        level: HealthLevel::Degraded,
        anomaly: 0.0,
        anomaly_threshold: 0.0,
        top: Vec::new(),
        note: Some(note),
        forecasts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hosts_are_healthy_and_alarms_are_critical() {
        assert_eq!(
            assess(0.0, 6.0, false, Some(0.3), vec![], vec![]).score,
            100
        );
        assert_eq!(
            assess(0.0, 6.0, false, Some(0.3), vec![], vec![]).level,
            HealthLevel::Healthy
        );
        let half = assess(3.0, 6.0, false, None, vec![], vec![]);
        assert_eq!((half.score, half.level), (80, HealthLevel::Healthy));
        let alarm = assess(9.0, 6.0, true, None, vec![], vec![]);
        assert_eq!((alarm.score, alarm.level), (50, HealthLevel::Critical));
    }

    #[test]
    fn memory_running_out_lowers_health_into_warning_then_critical() {
        let levels: Vec<HealthLevel> = [0.5, 0.93, 0.98]
            .iter()
            .map(|u| assess(0.0, 6.0, false, Some(*u), vec![], vec![]).level)
            .collect();
        assert_eq!(
            levels,
            [
                HealthLevel::Healthy,
                HealthLevel::Warning,
                HealthLevel::Critical
            ]
        );
    }
}
