//! Host telemetry as coordinator store records version 9 and older hold it (before the
//! anomaly percentile, control protocol 15): decoded with this layout, then given no
//! percentile. Binary encodings are positional, so an added field needs the old layout to
//! read old records.

use serde::{Deserialize, Serialize};

use crate::telemetry::{Forecast, HealthLevel, HealthReport, ProbeReport, Risk, TelemetrySummary};

/// A [`HealthReport`] without `percentile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the same fields as HealthReport's
pub struct HealthReportV9 {
    pub score: u8,
    pub level: HealthLevel,
    pub anomaly: f32,
    pub anomaly_threshold: f32,
    pub top: Vec<(String, f32)>,
    pub note: Option<String>,
    pub forecasts: Vec<Forecast>,
    pub risk: Option<Risk>,
    pub kernel_errors: Vec<(String, u32)>,
}

/// A [`TelemetrySummary`] whose health has no percentile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the same fields as TelemetrySummary's
pub struct TelemetrySummaryV9 {
    pub sampled_at_unix_ms: u64,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub load: [f32; 3],
    pub uptime_secs: u64,
    pub health: Option<HealthReportV9>,
    pub probes: Vec<ProbeReport>,
}

impl From<HealthReportV9> for HealthReport {
    fn from(h: HealthReportV9) -> Self {
        let HealthReportV9 {
            score,
            level,
            anomaly,
            anomaly_threshold,
            top,
            note,
            forecasts,
            risk,
            kernel_errors,
        } = h;
        HealthReport {
            score,
            level,
            anomaly,
            anomaly_threshold,
            top,
            note,
            forecasts,
            risk,
            kernel_errors,
            percentile: None,
        }
    }
}

impl From<TelemetrySummaryV9> for TelemetrySummary {
    fn from(t: TelemetrySummaryV9) -> Self {
        let TelemetrySummaryV9 {
            sampled_at_unix_ms,
            cpu_percent,
            memory_used_bytes,
            memory_total_bytes,
            load,
            uptime_secs,
            health,
            probes,
        } = t;
        TelemetrySummary {
            sampled_at_unix_ms,
            cpu_percent,
            memory_used_bytes,
            memory_total_bytes,
            load,
            uptime_secs,
            health: health.map(Into::into),
            probes,
        }
    }
}

impl TelemetrySummaryV9 {
    /// What a build before the percentile would have written for `t` (its percentile
    /// dropped): for tests that read old records.
    pub fn written_by_old_build(t: TelemetrySummary) -> Self {
        let health = t.health.map(|h| HealthReportV9 {
            score: h.score,
            level: h.level,
            anomaly: h.anomaly,
            anomaly_threshold: h.anomaly_threshold,
            top: h.top,
            note: h.note,
            forecasts: h.forecasts,
            risk: h.risk,
            kernel_errors: h.kernel_errors,
        });
        TelemetrySummaryV9 {
            sampled_at_unix_ms: t.sampled_at_unix_ms,
            cpu_percent: t.cpu_percent,
            memory_used_bytes: t.memory_used_bytes,
            memory_total_bytes: t.memory_total_bytes,
            load: t.load,
            uptime_secs: t.uptime_secs,
            health,
            probes: t.probes,
        }
    }
}
