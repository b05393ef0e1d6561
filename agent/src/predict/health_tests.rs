//! The health score's parts, levels and configurable thresholds.

use super::*;

fn inputs(anomaly: f64, alarm: bool, mem: Option<f64>) -> Inputs {
    Inputs {
        anomaly,
        threshold: 6.0,
        alarm,
        mem_used: mem,
        ..Inputs::default()
    }
}

fn forecast(metric: &str, central: f32, upper: f32) -> Forecast {
    Forecast {
        metric: metric.into(),
        horizon_secs: 300,
        central,
        upper,
    }
}

#[test]
fn quiet_hosts_are_healthy_and_alarms_are_critical() {
    let t = Thresholds::default();
    let quiet = assess(inputs(0.0, false, Some(0.3)), &t);
    assert_eq!((quiet.score, quiet.level), (100, HealthLevel::Healthy));
    let half = assess(inputs(3.0, false, None), &t);
    assert_eq!((half.score, half.level), (80, HealthLevel::Healthy));
    let alarm = assess(inputs(9.0, true, None), &t);
    assert_eq!((alarm.score, alarm.level), (50, HealthLevel::Critical));
}

#[test]
fn memory_running_out_lowers_health_into_warning_then_critical() {
    let t = Thresholds::default();
    let levels: Vec<HealthLevel> = [0.5, 0.93, 0.98]
        .iter()
        .map(|u| assess(inputs(0.0, false, Some(*u)), &t).level)
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

#[test]
fn thresholds_from_the_config_move_the_levels() {
    let strict = Thresholds {
        healthy: 95,
        critical: 85,
    };
    let half = assess(inputs(3.0, false, None), &strict);
    assert_eq!((half.score, half.level), (80, HealthLevel::Critical));
    let lenient = Thresholds {
        healthy: 50,
        critical: 40,
    };
    assert_eq!(
        assess(inputs(9.0, true, None), &lenient).level,
        HealthLevel::Healthy
    );
}

#[test]
fn risk_is_the_chance_a_forecast_crosses_the_limit() {
    let t = Thresholds::default();
    // Central on the limit: one half.
    let p = exhaustion_probability(&forecast("mem_u", 1.0, 1.1));
    assert!((p - 0.5).abs() < 1e-6, "{p}");
    // The p90 bound on the limit: one in ten.
    let p = exhaustion_probability(&forecast("fs_used", 0.9, 1.0));
    assert!((p - 0.1).abs() < 1e-4, "{p}");
    let mut inp = inputs(0.0, false, Some(0.5));
    inp.forecasts = vec![
        forecast("mem_u", 0.5, 0.52),
        forecast("cpu_r", 1.5, 2.0),
        forecast("fs_used", 0.9, 1.0),
    ];
    let r = assess(inp, &t);
    let risk = r.risk.unwrap();
    assert_eq!((risk.cause.as_str(), risk.horizon_secs), ("fs_used", 300));
    assert!((risk.probability - 0.1).abs() < 1e-3, "{risk:?}");
    assert_eq!(
        r.level,
        HealthLevel::Warning,
        "the p90 bound caps at warning"
    );
    assert!(r.note.unwrap().contains("disk space may run out"));
}

#[test]
fn recent_kernel_errors_lower_the_score_and_are_named() {
    let t = Thresholds::default();
    let mut inp = inputs(0.0, false, Some(0.3));
    inp.kernel_errors = [0, 0, 3];
    let r = assess(inp.clone(), &t);
    assert_eq!(r.score, 85);
    assert_eq!(r.kernel_errors, vec![("io".to_string(), 3)]);
    assert!(r.note.unwrap().contains("3 io"));
    inp.kernel_errors = [2, 1, 0];
    assert_eq!(
        assess(inp, &t).score,
        70,
        "hardware errors weigh more, capped at 30"
    );
}
