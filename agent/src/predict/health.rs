//! The host's health score, 0–100, and its failure risk within the forecast horizon: a
//! documented combination of the models' outputs, not a trained model.
//!
//! risk = 1 − Π (1 − P(resource runs out within the horizon)) over memory (`mem_u`) and
//! disk space (`fs_used`), each probability read from the forecast's prediction interval
//! (normal, with σ = (p90 bound − central) / 1.2816).
//!
//! score = 100 − 40·min(1, anomaly/threshold) − 10·[alarming] − 40·clamp((mem_u − 0.8)/0.2, 0, 1)
//!             − 30·risk − min(30, 15·(machine checks + EDAC errors) + 5·(I/O errors)),
//!
//! the errors counted from the kernel log over the last hour; then capped by predicted
//! exhaustion: below healthy (warning) when a forecast's p90 upper bound reaches the limit
//! (all memory, a full filesystem) within its horizon, below critical when its central
//! estimate does.
//!
//! Levels: healthy ≥ `healthy` (default 80), critical < `critical` (default 70), warning
//! between — both set in `[health]` of agent.toml; degraded while there is no assessment
//! (no model, or the host's baseline is still being learned).

use understudy_common::telemetry::{Forecast, HealthLevel, HealthReport, Risk};

use crate::hostmetrics::kmsg::KernelError;

/// The share of a resource in use that counts as exhausted.
pub const LIMIT: f32 = 1.0;

/// Forecast metrics that can run out, with what running out means.
const EXHAUSTIBLE: [(&str, &str); 2] = [("mem_u", "memory"), ("fs_used", "disk space")];

/// z of the forecasts' one-sided p90 bound.
const Z90: f64 = 1.281_551_6;

/// Where the levels change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Scores at or above this are healthy.
    pub healthy: u8,
    /// Scores below this are critical.
    pub critical: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            healthy: 80,
            critical: 70,
        }
    }
}

impl Thresholds {
    /// The level of a score.
    pub fn level(&self, score: u8) -> HealthLevel {
        if score >= self.healthy {
            HealthLevel::Healthy
        } else if score >= self.critical {
            HealthLevel::Warning
        } else {
            HealthLevel::Critical
        }
    }
}

/// What one assessment reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The anomaly detector's smoothed score.
    pub anomaly: f64,
    /// Its alarm threshold.
    pub threshold: f64,
    /// Whether it is alarming.
    pub alarm: bool,
    /// Share of memory in use now.
    pub mem_used: Option<f64>,
    /// Metrics contributing most to the anomaly score.
    pub top: Vec<(String, f32)>,
    /// Resource forecasts.
    pub forecasts: Vec<Forecast>,
    /// Kernel errors in the last hour, in [`KernelError::ALL`] order.
    pub kernel_errors: [u32; 3],
}

/// P(X ≥ LIMIT) for X normal with the forecast's central estimate and p90 bound.
pub fn exhaustion_probability(f: &Forecast) -> f64 {
    let (c, u) = (f64::from(f.central), f64::from(f.upper));
    let sigma = (u - c) / Z90;
    if !(sigma.is_finite() && sigma > 1e-9) {
        return if c >= f64::from(LIMIT) { 1.0 } else { 0.0 };
    }
    0.5 * erfc((f64::from(LIMIT) - c) / (sigma * std::f64::consts::SQRT_2))
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The report for one assessment.
pub fn assess(inp: Inputs, t: &Thresholds) -> HealthReport {
    let a = (inp.anomaly / inp.threshold.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    let m = inp
        .mem_used
        .map_or(0.0, |u| ((u - 0.8) / 0.2).clamp(0.0, 1.0));
    let mut survive = 1.0;
    let mut cause: Option<(f64, &str)> = None;
    let mut horizon = 0;
    let mut cap: Option<(u8, String)> = None;
    for (metric, what) in EXHAUSTIBLE {
        let Some(f) = inp.forecasts.iter().find(|f| f.metric == metric) else {
            continue;
        };
        horizon = f.horizon_secs;
        let p = exhaustion_probability(f);
        survive *= 1.0 - p;
        if cause.is_none_or(|(q, _)| p > q) {
            cause = Some((p, metric));
        }
        let within = f.horizon_secs / 60;
        let limit = if f.central >= LIMIT {
            Some((
                t.critical.saturating_sub(1),
                format!("{what} predicted to run out within {within} min"),
            ))
        } else if f.upper >= LIMIT {
            Some((
                t.healthy.saturating_sub(1),
                format!("{what} may run out within {within} min (p90 bound)"),
            ))
        } else {
            None
        };
        if let Some(l) = limit {
            if cap.as_ref().is_none_or(|c| l.0 < c.0) {
                cap = Some(l);
            }
        }
    }
    let risk = 1.0 - survive;
    let [mce, edac, io] = inp.kernel_errors;
    let errors = (15.0 * f64::from(mce + edac) + 5.0 * f64::from(io)).min(30.0);
    let raw =
        100.0 - 40.0 * a - if inp.alarm { 10.0 } else { 0.0 } - 40.0 * m - 30.0 * risk - errors;
    let mut score = raw.clamp(0.0, 100.0).round() as u8;
    let kernel_errors: Vec<(String, u32)> = KernelError::ALL
        .iter()
        .zip(inp.kernel_errors)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.name().to_string(), n))
        .collect();
    let mut note = (!kernel_errors.is_empty()).then(|| {
        let list: Vec<String> = kernel_errors
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        format!("kernel errors in the last hour: {}", list.join(", "))
    });
    if let Some((limit, why)) = cap {
        score = score.min(limit);
        note = Some(why);
    }
    HealthReport {
        score,
        level: t.level(score),
        anomaly: inp.anomaly as f32,
        anomaly_threshold: inp.threshold as f32,
        top: inp.top,
        note,
        forecasts: inp.forecasts,
        risk: cause.map(|(_, metric)| Risk {
            probability: risk as f32,
            horizon_secs: horizon,
            cause: metric.to_string(),
        }),
        kernel_errors,
        percentile: None,
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
        risk: None,
        kernel_errors: Vec::new(),
        percentile: None,
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
