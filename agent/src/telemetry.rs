//! Sampling the basic host telemetry summary sent with every heartbeat (sysinfo).

use std::time::{SystemTime, UNIX_EPOCH};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use understudy_common::telemetry::TelemetrySummary;

use crate::hostmetrics::cgroup_memory::MemoryCgroup;

/// Keeps the state sysinfo needs to compute CPU use between two samples.
#[derive(Debug)]
pub struct Sampler {
    sys: System,
    memory: Option<MemoryCgroup>,
}

impl Sampler {
    /// A sampler primed with a first reading; the host's memory is `memory`'s when given
    /// (see [`crate::hostmetrics::cgroup_memory`]), else the machine's.
    pub fn new(memory: Option<MemoryCgroup>) -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Sampler { sys, memory }
    }

    /// A fresh summary; CPU use covers the time since the previous call.
    pub fn sample(&mut self) -> TelemetrySummary {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let load = System::load_average();
        let mut total = self.sys.total_memory();
        let mut used = total.saturating_sub(self.sys.available_memory());
        if let Some(m) = self.memory.as_ref().and_then(|c| c.read(total).ok()) {
            (total, used) = (m.limit, m.used);
        }
        TelemetrySummary {
            sampled_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            cpu_percent: self.sys.global_cpu_usage(),
            memory_used_bytes: used,
            memory_total_bytes: total,
            #[allow(clippy::cast_possible_truncation)] // load averages are small
            load: [load.one as f32, load.five as f32, load.fifteen as f32],
            uptime_secs: System::uptime(),
            health: None,
            probes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_this_hosts_memory_and_uptime() {
        let mut s = Sampler::new(None);
        let t = s.sample();
        assert!(t.memory_total_bytes > 0);
        assert!(t.memory_used_bytes <= t.memory_total_bytes);
        assert!(t.uptime_secs > 0);
        assert!((0.0..=100.0).contains(&t.cpu_percent));
    }
}
