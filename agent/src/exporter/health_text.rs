//! The host's health assessment (score, level, anomaly and what drives it, forecasts,
//! failure risk, kernel errors) in the Prometheus text format, with where the anomaly score
//! stands among this host's own recent scores. Pure: renders a `HealthReport`, reads nothing.

use understudy_common::prom::{family, sample};
use understudy_common::telemetry::{HealthLevel, HealthReport};

use crate::hostmetrics::kmsg::KernelError;

/// Every family of the assessment, in order; `percentile` is the anomaly score's standing
/// among this host's own recent scores (no sample without one: warm-up, no model).
pub fn render(h: &HealthReport, percentile: Option<f64>) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(
        o,
        "understudy_host_health_score",
        "gauge",
        "Host health, 0-100; the level label is healthy, warning, critical or degraded (levels from [health] in agent.toml).",
    );
    sample(
        o,
        "understudy_host_health_score",
        &[("level", h.level.as_str())],
        f64::from(h.score),
    );
    family(
        o,
        "understudy_host_health_degraded",
        "gauge",
        "1 when there is no trustworthy assessment (understudy_host_health_degraded_info says why).",
    );
    let degraded = h.level == HealthLevel::Degraded;
    sample(
        o,
        "understudy_host_health_degraded",
        &[],
        f64::from(u8::from(degraded)),
    );
    family(
        o,
        "understudy_host_health_degraded_info",
        "gauge",
        "Why the assessment is degraded (a sample only while it is).",
    );
    if degraded {
        let reason = h.note.as_deref().unwrap_or("unknown");
        sample(
            o,
            "understudy_host_health_degraded_info",
            &[("reason", reason)],
            1.0,
        );
    }
    family(
        o,
        "understudy_host_anomaly_score",
        "gauge",
        "The anomaly model's smoothed score (alarms at understudy_host_anomaly_threshold and above).",
    );
    sample(
        o,
        "understudy_host_anomaly_score",
        &[],
        f64::from(h.anomaly),
    );
    family(
        o,
        "understudy_host_anomaly_threshold",
        "gauge",
        "The anomaly score at which the model alarms.",
    );
    sample(
        o,
        "understudy_host_anomaly_threshold",
        &[],
        f64::from(h.anomaly_threshold),
    );
    family(
        o,
        "understudy_host_anomaly_percentile",
        "gauge",
        "Share of this host's own anomaly scores of its calibration window below the newest, percent (its threshold is calibrated from them).",
    );
    if let Some(p) = percentile {
        sample(o, "understudy_host_anomaly_percentile", &[], p);
    }
    family(
        o,
        "understudy_host_anomaly_contribution",
        "gauge",
        "Share of the anomaly score from each of the metrics contributing most.",
    );
    for (metric, c) in &h.top {
        sample(
            o,
            "understudy_host_anomaly_contribution",
            &[("metric", metric)],
            f64::from(*c),
        );
    }
    family(
        o,
        "understudy_host_forecast",
        "gauge",
        "Where a resource share (0-1) is heading within horizon_seconds: bound central or p90.",
    );
    for f in &h.forecasts {
        let horizon = f.horizon_secs.to_string();
        for (bound, v) in [("central", f.central), ("p90", f.upper)] {
            sample(
                o,
                "understudy_host_forecast",
                &[
                    ("metric", &f.metric),
                    ("horizon_seconds", &horizon),
                    ("bound", bound),
                ],
                f64::from(v),
            );
        }
    }
    family(
        o,
        "understudy_host_failure_risk",
        "gauge",
        "Probability that memory or disk space runs out within the horizon.",
    );
    if let Some(r) = &h.risk {
        sample(
            o,
            "understudy_host_failure_risk",
            &[
                ("horizon_seconds", &r.horizon_secs.to_string()),
                ("cause", &r.cause),
            ],
            f64::from(r.probability),
        );
    }
    family(
        o,
        "understudy_host_kernel_errors_last_hour",
        "gauge",
        "Kernel log errors in the last hour (mce, edac, io).",
    );
    for kind in KernelError::ALL {
        let n = h
            .kernel_errors
            .iter()
            .find(|(k, _)| k == kind.name())
            .map_or(0, |(_, n)| *n);
        sample(
            o,
            "understudy_host_kernel_errors_last_hour",
            &[("kind", kind.name())],
            f64::from(n),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::telemetry::{Forecast, Risk};

    fn report() -> HealthReport {
        HealthReport {
            score: 64,
            level: HealthLevel::Critical,
            anomaly: 2.5,
            anomaly_threshold: 1.0,
            top: vec![("mem_u".into(), 0.7), ("cpu_r".into(), 0.2)],
            note: None,
            forecasts: vec![Forecast {
                metric: "mem_u".into(),
                horizon_secs: 300,
                central: 0.9,
                upper: 0.97,
            }],
            risk: Some(Risk {
                probability: 0.25,
                horizon_secs: 300,
                cause: "mem_u".into(),
            }),
            kernel_errors: vec![("io".into(), 2)],
            percentile: None,
        }
    }

    #[test]
    fn a_critical_host_shows_its_level_forecast_risk_and_causes() {
        let text = render(&report(), Some(99.5));
        for line in [
            "understudy_host_anomaly_percentile 99.5",
            "understudy_host_health_score{level=\"critical\"} 64",
            "understudy_host_health_degraded 0",
            "understudy_host_anomaly_contribution{metric=\"mem_u\"} 0.699999988079071",
            "understudy_host_forecast{metric=\"mem_u\",horizon_seconds=\"300\",bound=\"p90\"} 0.9700000286102295",
            "understudy_host_forecast{metric=\"mem_u\",horizon_seconds=\"300\",bound=\"central\"} 0.8999999761581421",
            "understudy_host_failure_risk{horizon_seconds=\"300\",cause=\"mem_u\"} 0.25",
            "understudy_host_kernel_errors_last_hour{kind=\"io\"} 2",
            "understudy_host_kernel_errors_last_hour{kind=\"mce\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("understudy_host_health_degraded_info{"),
            "{text}"
        );
    }

    #[test]
    fn a_degraded_host_says_why_in_a_label() {
        let mut h = report();
        h.level = HealthLevel::Degraded;
        h.note = Some("no anomaly model: \"/x\" missing".into());
        let text = render(&h, None);
        assert!(
            text.contains("understudy_host_health_degraded 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "understudy_host_health_degraded_info{reason=\"no anomaly model: \\\"/x\\\" missing\"} 1\n"
            ),
            "{text}"
        );
    }
}
