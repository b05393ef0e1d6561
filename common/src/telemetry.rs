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
}
