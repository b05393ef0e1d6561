//! Sampling the basic host telemetry summary sent with every heartbeat (sysinfo).

use std::time::{SystemTime, UNIX_EPOCH};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use understudy_common::telemetry::TelemetrySummary;

/// Keeps the state sysinfo needs to compute CPU use between two samples.
#[derive(Debug)]
pub struct Sampler {
    sys: System,
}

impl Sampler {
    /// A sampler primed with a first reading.
    pub fn new() -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Sampler { sys }
    }

    /// A fresh summary; CPU use covers the time since the previous call.
    pub fn sample(&mut self) -> TelemetrySummary {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let load = System::load_average();
        let total = self.sys.total_memory();
        TelemetrySummary {
            sampled_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            cpu_percent: self.sys.global_cpu_usage(),
            memory_used_bytes: total.saturating_sub(self.sys.available_memory()),
            memory_total_bytes: total,
            #[allow(clippy::cast_possible_truncation)] // load averages are small
            load: [load.one as f32, load.five as f32, load.fifteen as f32],
            uptime_secs: System::uptime(),
            health: None,
            probes: Vec::new(),
        }
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_this_hosts_memory_and_uptime() {
        let mut s = Sampler::new();
        let t = s.sample();
        assert!(t.memory_total_bytes > 0);
        assert!(t.memory_used_bytes <= t.memory_total_bytes);
        assert!(t.uptime_secs > 0);
        assert!((0.0..=100.0).contains(&t.cpu_percent));
    }
}
