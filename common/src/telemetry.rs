//! The basic host telemetry summary carried in every heartbeat.

use serde::{Deserialize, Serialize};

/// A point-in-time summary of a host's load, sampled by the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    /// When the agent took the sample, milliseconds since the Unix epoch.
    pub sampled_at_unix_ms: u64,
    /// CPU busy share over the last sampling interval, 0–100 across all cores.
    pub cpu_percent: f32,
    /// Memory in use (total minus available), bytes.
    pub memory_used_bytes: u64,
    /// Physical memory, bytes.
    pub memory_total_bytes: u64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f32; 3],
    /// Seconds since the host booted.
    pub uptime_secs: u64,
    /// The host's health as the agent's models see it, if the agent has an assessment.
    #[serde(default)]
    pub health: Option<HealthReport>,
    /// The probes of the workloads running here as primaries.
    #[serde(default)]
    pub probes: Vec<ProbeReport>,
}

/// How a workload's probe (the spec's TCP or command check, run periodically while the
/// workload runs) has been answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The workload.
    pub workload: String,
    /// What is probed, e.g. `tcp 7000`.
    pub probe: String,
    /// Probes run on this host since the workload started here.
    pub runs: u64,
    /// Of which failed.
    pub failures: u64,
    /// Failures in a row, up to now.
    pub consecutive_failures: u32,
    /// Latency of the newest successful probe, milliseconds.
    pub latency_ms: Option<f32>,
    /// The streaming univariate detector's score for that latency, 0–1 (alarms at
    /// `latency_alarm_level` and above).
    pub latency_anomaly: f32,
    /// Latency anomalies alarmed since the workload started here.
    pub latency_alarms: u64,
    /// Why the newest probe failed, if it did.
    pub last_error: Option<String>,
}

/// How healthy a host is: a 0–100 score, its level, and what drives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// 0 (failing) to 100 (nothing unusual).
    pub score: u8,
    /// healthy (score ≥ 80), warning, critical (< 70), or degraded (no assessment).
    pub level: HealthLevel,
    /// The anomaly model's smoothed score.
    pub anomaly: f32,
    /// The score at which the anomaly model alarms.
    pub anomaly_threshold: f32,
    /// Metrics contributing most to the anomaly score, largest first.
    pub top: Vec<(String, f32)>,
    /// Why the assessment is degraded or what limits it, if anything.
    pub note: Option<String>,
    /// Resource forecasts, when the forecaster has a full window.
    #[serde(default)]
    pub forecasts: Vec<Forecast>,
    /// The chance that a resource runs out within the forecasts' horizon.
    #[serde(default)]
    pub risk: Option<Risk>,
    /// Kernel errors logged in the last hour, by kind (`mce`, `edac`, `io`), non-zero only.
    #[serde(default)]
    pub kernel_errors: Vec<(String, u32)>,
    /// How unusual the anomaly score is for this host: its percentile, 0–100, among the
    /// host's own recent scores (the window its threshold is calibrated on); `None` until
    /// that window holds any (control protocol 15).
    #[serde(default)]
    pub percentile: Option<f32>,
}

/// The chance of failure within a horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    /// Probability, 0–1.
    pub probability: f32,
    /// Within how many seconds from now.
    pub horizon_secs: u32,
    /// The resource most likely to run out (`mem_u`, `fs_used`).
    pub cause: String,
}

/// Where a resource is heading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Schema metric name (a 0..1 share: `mem_u`, `cpu_r`, `disk_u`).
    pub metric: String,
    /// How far ahead, seconds.
    pub horizon_secs: u32,
    /// Central estimate.
    pub central: f32,
    /// Upper bound (p90).
    pub upper: f32,
}

/// A health level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Score at or above the healthy threshold.
    Healthy,
    /// Between the thresholds.
    Warning,
    /// Below the critical threshold.
    Critical,
    /// No trustworthy assessment (model missing, baseline still being learned).
    Degraded,
}

impl HealthLevel {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::Healthy => "healthy",
            HealthLevel::Warning => "warning",
            HealthLevel::Critical => "critical",
            HealthLevel::Degraded => "degraded",
        }
    }
}
