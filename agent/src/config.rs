//! The agent's config file (`agent.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use understudy_common::config::{check_range, Problem, Validate};
use understudy_common::tls::files::TlsFiles;
use understudy_common::tls::Role;

use crate::hostmetrics::cgroup_memory::MemoryCgroup;

/// Everything `understudy-agent` reads from its config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host.
    pub agent: AgentSection,
    /// How to reach the coordinator group.
    pub coordinator: CoordinatorSection,
    /// The cluster CA and this agent's certificate.
    pub tls: TlsFiles,
    /// How quickly to retry a lost coordinator.
    #[serde(default)]
    pub reconnect: ReconnectSection,
    /// Where other agents send epochs to this one.
    #[serde(default)]
    pub data_plane: DataPlaneSection,
    /// Which CRIU to use.
    #[serde(default)]
    pub criu: CriuSection,
    /// Where workloads' data directories live on this host.
    #[serde(default)]
    pub workload_data: WorkloadDataSection,
    /// The agent's own metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Where the shipped models are.
    #[serde(default)]
    pub models: ModelsSection,
    /// Where the host health levels change.
    #[serde(default)]
    pub health: HealthSection,
    /// How often workloads' probes run.
    #[serde(default)]
    pub probes: ProbesSection,
    /// How much of a workload's time and of the agent's CPU periodic epochs may take.
    #[serde(default)]
    pub epochs: EpochsSection,
}

/// `[epochs]`: the budgets that pace each workload's periodic epochs. Epochs come at the
/// spec's interval while they keep within both; when they would not, the agent lengthens
/// that workload's interval until they do (`understudy workload show` says which limit
/// binds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpochsSection {
    /// Percent of wall time a workload may be frozen by periodic epochs (default 5).
    pub freeze_budget_percent: u8,
    /// Percent of one core the agent may spend on one workload's epochs (default 20).
    pub cpu_budget_percent: u8,
    /// Dump only the pages written since the previous dump where the kernel tracks them
    /// (soft-dirty) and CRIU can (default true; ignored where they cannot).
    pub memory_tracking: bool,
}

impl Default for EpochsSection {
    fn default() -> Self {
        let b = crate::life::cadence::Budgets::default();
        EpochsSection {
            freeze_budget_percent: b.freeze_percent,
            cpu_budget_percent: b.cpu_percent,
            memory_tracking: true,
        }
    }
}

impl EpochsSection {
    /// The budgets it sets.
    pub fn budgets(&self) -> crate::life::cadence::Budgets {
        crate::life::cadence::Budgets {
            freeze_percent: self.freeze_budget_percent,
            cpu_percent: self.cpu_budget_percent,
        }
    }
}

/// `[probes]`: each workload with a probe in its spec is probed every `interval` while it
/// runs here; latency and failures are reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesSection {
    /// Default 5 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ProbesSection {
    fn default() -> Self {
        ProbesSection {
            interval: Duration::from_secs(5),
        }
    }
}

/// `[health]`: scores at or above `healthy` are healthy, below `critical` critical,
/// warning between.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Default 80.
    pub healthy: u8,
    /// Default 70.
    pub critical: u8,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            healthy: 80,
            critical: 70,
        }
    }
}

/// `[models]`: the directory holding the shipped models (`anomaly.toml`, `anomaly.onnx`),
/// and how many samples of this host's own history the anomaly detector learns before it
/// scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    /// Default: /usr/share/understudy/models, else the source tree's models/.
    pub dir: Option<PathBuf>,
    /// Samples learned before the anomaly model first scores (default 3600: an hour at 1 s;
    /// the host's own autoregression needs that much history to keep false alarms down).
    pub warmup_samples: u32,
    /// False alarm events a day this host's own alarm threshold is calibrated for (default:
    /// the model manifest's, 0.5).
    #[serde(default)]
    pub false_alarms_per_day: Option<f64>,
}

impl Default for ModelsSection {
    fn default() -> Self {
        ModelsSection {
            dir: None,
            warmup_samples: 3600,
            false_alarms_per_day: None,
        }
    }
}

/// `[metrics]`: where the agent serves this host's metrics (Prometheus text format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// TCP address of `GET /metrics`; `enabled = false` turns it off.
    pub listen: SocketAddr,
    /// Whether to serve it.
    pub enabled: bool,
    /// Serve it over HTTPS with this host's certificate, to clients presenting a
    /// certificate of the cluster CA for an API role (a viewer's will do).
    #[serde(default)]
    pub client_certificates: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            // Loopback: exposing the host's metrics to the network is the operator's choice.
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            enabled: true,
            client_certificates: false,
        }
    }
}

/// `[workload_data]`: which logical paths workloads may declare as data directories, and
/// where this host keeps them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadDataSection {
    /// Logical paths under which data directories may be declared.
    pub allowed_roots: Vec<PathBuf>,
    /// The host directory logical paths are found under (`/`: the same path on the host).
    /// Each workload sees its data directories at their logical paths in its own mount
    /// namespace, so hosts may keep them elsewhere (and namespace test hosts sharing one
    /// filesystem keep separate copies).
    pub host_root: PathBuf,
}

impl Default for WorkloadDataSection {
    fn default() -> Self {
        WorkloadDataSection {
            allowed_roots: vec![PathBuf::from("/srv")],
            host_root: PathBuf::from("/"),
        }
    }
}

/// `[data_plane]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlaneSection {
    /// UDP address of the agent-to-agent data plane.
    pub listen: SocketAddr,
}

impl Default for DataPlaneSection {
    fn default() -> Self {
        DataPlaneSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 7442)),
        }
    }
}

/// `[criu]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriuSection {
    /// The criu binary (default: `CRIU_BIN` from the environment, else the one found at
    /// build time, e.g. `/var/cache/understudy/criu/bin/criu`).
    pub binary: Option<PathBuf>,
}

/// `[agent]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Where the agent keeps its state; created if missing.
    pub data_dir: PathBuf,
    /// This host's failure domain (a rack, a room, a cloud zone): the coordinator moves a
    /// workload away from a host in trouble into another zone where one is fit.
    pub zone: Option<String>,
    /// Measure this host's memory as this memory cgroup's (its limit and working set)
    /// rather than the machine's: for a host that is a container or a slice with a memory
    /// limit. Cgroup v2 or v1.
    pub memory_cgroup: Option<PathBuf>,
    /// Where dumps of workloads without data directories are written (`crate::scratch`):
    /// a memory-backed file system keeps the disk off the freeze. Default
    /// `/dev/shm/understudy/HOST` when `/dev/shm` is a tmpfs, else under `data_dir`.
    pub scratch_dir: Option<PathBuf>,
    /// Where each workload's supervisor (the root of its tree) has its working directory
    /// (`crate::supervisor::home`). A checkpoint records the path, so it must be the same on
    /// every host of the cluster. Default `/var/lib/understudy-agent/trees`.
    pub trees_dir: Option<PathBuf>,
}

/// Longest zone name.
pub const MAX_ZONE_LEN: usize = 64;

impl AgentSection {
    /// The memory cgroup standing for the host's memory, if configured.
    pub fn memory(&self) -> Result<Option<MemoryCgroup>, String> {
        self.memory_cgroup
            .as_deref()
            .map(MemoryCgroup::open)
            .transpose()
    }
}

/// `[coordinator]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSection {
    /// QUIC addresses of the coordinators, tried in order.
    pub addresses: Vec<SocketAddr>,
}

/// `[reconnect]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectSection {
    /// First wait after a lost connection.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for ReconnectSection {
    fn default() -> Self {
        ReconnectSection {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// Most samples the anomaly model may learn before scoring (about four months at 1 s).
const MAX_WARMUP_SAMPLES: u32 = 10_000_000;

impl Validate for AgentConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !self.agent.data_dir.is_absolute() {
            problems.push(Problem::new(
                "agent.data_dir",
                format!("{} must be an absolute path", self.agent.data_dir.display()),
            ));
        }
        for (key, dir) in [
            ("agent.scratch_dir", &self.agent.scratch_dir),
            ("agent.trees_dir", &self.agent.trees_dir),
        ] {
            if let Some(d) = dir.as_ref().filter(|d| !d.is_absolute()) {
                problems.push(Problem::new(
                    key,
                    format!("{} must be an absolute path", d.display()),
                ));
            }
        }
        if let Some(z) = &self.agent.zone {
            let ok = !z.is_empty()
                && z.len() <= MAX_ZONE_LEN
                && z.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                problems.push(Problem::new(
                    "agent.zone",
                    format!("{z:?} must be 1 to {MAX_ZONE_LEN} letters, digits, '-', '_' or '.'"),
                ));
            }
        }
        if let Err(e) = self.agent.memory() {
            problems.push(Problem::new("agent.memory_cgroup", e));
        }
        if self.coordinator.addresses.is_empty() {
            problems.push(Problem::new(
                "coordinator.addresses",
                "at least one coordinator address is needed",
            ));
        }
        for (i, a) in self.coordinator.addresses.iter().enumerate() {
            if a.port() == 0 || a.ip().is_unspecified() {
                problems.push(Problem::new(
                    format!("coordinator.addresses[{i}]"),
                    format!("{a} is not an address a coordinator can be reached at"),
                ));
            }
        }
        let r = &self.reconnect;
        check_range(
            &mut problems,
            "reconnect.max",
            r.max,
            Duration::from_millis(1),
            Duration::from_secs(600),
        );
        if r.initial.is_zero() || r.initial > r.max {
            problems.push(Problem::new(
                "reconnect.initial",
                format!(
                    "{} must be above 0 and at most reconnect.max ({})",
                    humantime::format_duration(r.initial),
                    humantime::format_duration(r.max)
                ),
            ));
        }
        if self.data_plane.listen.port() == 0 {
            problems.push(Problem::new("data_plane.listen", "port must not be 0"));
        }
        let wd = &self.workload_data;
        if !wd.host_root.is_absolute() {
            problems.push(Problem::new(
                "workload_data.host_root",
                format!("{} must be an absolute path", wd.host_root.display()),
            ));
        }
        for (i, root) in wd.allowed_roots.iter().enumerate() {
            if let Err(e) = understudy_common::workload::check_data_dir_path(root) {
                problems.push(Problem::new(format!("workload_data.allowed_roots[{i}]"), e));
            }
        }
        check_range(
            &mut problems,
            "probes.interval",
            self.probes.interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        for (key, percent) in [
            (
                "epochs.freeze_budget_percent",
                self.epochs.freeze_budget_percent,
            ),
            ("epochs.cpu_budget_percent", self.epochs.cpu_budget_percent),
        ] {
            if !(1..=100).contains(&percent) {
                problems.push(Problem::new(
                    key,
                    format!("{percent} is not a percentage from 1 to 100"),
                ));
            }
        }
        if self.models.warmup_samples > MAX_WARMUP_SAMPLES {
            problems.push(Problem::new(
                "models.warmup_samples",
                format!(
                    "{} is more than {MAX_WARMUP_SAMPLES}",
                    self.models.warmup_samples
                ),
            ));
        }
        if let Some(f) = self
            .models
            .false_alarms_per_day
            .filter(|f| !(f.is_finite() && *f > 0.0 && *f <= 1440.0))
        {
            problems.push(Problem::new(
                "models.false_alarms_per_day",
                format!("{f} is not a rate above 0 and at most 1440 a day"),
            ));
        }
        let h = &self.health;
        if h.healthy > 100 || h.critical == 0 || h.critical > h.healthy {
            problems.push(Problem::new(
                "health.critical",
                format!(
                    "{} must be between 1 and health.healthy ({}), which is at most 100",
                    h.critical, h.healthy
                ),
            ));
        }
        if let Some(bin) = &self.criu.binary {
            if !bin.exists() {
                problems.push(Problem::new(
                    "criu.binary",
                    format!("{} does not exist", bin.display()),
                ));
            }
        }
        if let Err(e) = self.tls.load(Role::Agent) {
            problems.push(Problem::new("", e.to_string()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::config::parse;

    #[test]
    fn problems_name_their_keys() {
        let cfg: AgentConfig = parse(
            r#"
            [agent]
            data_dir = "relative"
            scratch_dir = "scratch"
            trees_dir = "trees"
            zone = "rack 7"
            memory_cgroup = "/nonexistent/cgroup"
            [coordinator]
            addresses = ["0.0.0.0:7440"]
            [health]
            healthy = 60
            critical = 75
            [tls]
            ca = "/x/ca.crt"
            cert = "/x/a.crt"
            key = "/x/a.key"
            "#,
        )
        .unwrap();
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"agent.data_dir".to_string()), "{keys:?}");
        assert!(keys.contains(&"agent.scratch_dir".to_string()), "{keys:?}");
        assert!(keys.contains(&"agent.trees_dir".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"coordinator.addresses[0]".to_string()),
            "{keys:?}"
        );
        assert!(keys.contains(&"health.critical".to_string()), "{keys:?}");
        assert!(keys.contains(&"agent.zone".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"agent.memory_cgroup".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn every_duration_and_count_has_a_range() {
        let cfg: AgentConfig = parse(
            r#"
            [agent]
            data_dir = "/var/lib/understudy"
            [coordinator]
            addresses = ["10.0.0.1:7440"]
            [reconnect]
            initial = "1s"
            max = "300000000000y"
            [probes]
            interval = "99999y"
            [epochs]
            freeze_budget_percent = 0
            cpu_budget_percent = 101
            [models]
            warmup_samples = 4000000000
            false_alarms_per_day = 0
            [tls]
            ca = "/x/ca.crt"
            cert = "/x/a.crt"
            key = "/x/a.key"
            "#,
        )
        .unwrap();
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        for k in [
            "reconnect.max",
            "probes.interval",
            "models.warmup_samples",
            "models.false_alarms_per_day",
            "epochs.freeze_budget_percent",
            "epochs.cpu_budget_percent",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} not in {keys:?}");
        }
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;
    use understudy_common::config::parse;

    #[test]
    fn shipped_sample_parses() {
        let cfg: AgentConfig = parse(include_str!("../../packaging/agent.toml")).unwrap();
        let problems: Vec<_> = cfg
            .validate()
            .into_iter()
            .filter(|p| !p.reason.contains("tls."))
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
    }
}
