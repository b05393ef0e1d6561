//! The decision engine: which workloads should move, where, and why — a pure function of
//! the fleet as the coordinator sees it, the engine's own memory of how long each trigger
//! has held, and the time. No I/O: the server builds a [`Fleet`] from its registry and
//! records, calls [`decide`], and carries out (or only records) the decisions.
//!
//! - [`triggers`]: what is wrong with a host (health, failure risk, predicted exhaustion,
//!   kernel and hardware errors, a maintenance window, an operator drain), with hysteresis.
//! - [`engine`]: risk against cost for each workload on a triggered host, guardrails
//!   (cool-down, concurrency, an hourly budget, modes) and the choice of target.
//! - [`config`]: `[decisions]` in coordinator.toml.

pub mod config;
pub mod engine;
pub mod triggers;

#[cfg(test)]
mod engine_tests;

use std::collections::BTreeMap;

use understudy_common::telemetry::HealthReport;

pub use engine::{decide, shared_trouble, unshadowed, Action, Decision};
pub use triggers::{Trigger, TriggerKind};

/// What the engine may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No automatic decisions (operator drains and maintenance windows still move).
    Off,
    /// Automatic decisions are recorded and shown; nothing moves by itself.
    Advise,
    /// Automatic decisions are carried out.
    Act,
}

/// The engine's settings (`[decisions]` in coordinator.toml).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// What the engine may do.
    pub mode: Mode,
    /// Health trigger: a score below this ...
    pub health_below: Option<u8>,
    /// ... for this many consecutive heartbeats.
    pub health_heartbeats: u32,
    /// Failure-risk trigger: a probability within the horizon above this.
    pub risk_above: Option<f32>,
    /// Exhaustion trigger: a memory or disk forecast reaching this share of capacity.
    pub exhaustion_share: Option<f32>,
    /// Error trigger: this many kernel or hardware errors within the last hour.
    pub errors_per_hour: Option<u32>,
    /// How long a risk, exhaustion or error trigger must hold before it counts, ms.
    pub persist_ms: u64,
    /// How long before a maintenance window opens its host's workloads start leaving, ms.
    pub maintenance_lead_ms: u64,
    /// A move is made when its score (benefit minus cost) exceeds this.
    pub threshold: f64,
    /// Cost of one second of predicted freeze, in score units.
    pub cost_per_freeze_s: f64,
    /// Cost of one GiB to send, in score units.
    pub cost_per_gib: f64,
    /// Cost of each move already under way, in score units.
    pub cost_per_running_move: f64,
    /// No automatic move of a workload within this long after any move of it, ms.
    pub cooldown_ms: u64,
    /// Moves at once from or to one host.
    pub max_moves_per_host: usize,
    /// Moves at once in the cluster.
    pub max_moves: usize,
    /// A target's health score must be at least this.
    pub target_health_min: u8,
    /// A target must keep this share of its memory free after the move (by its forecast).
    pub target_memory_headroom: f32,
    /// Automatic moves per hour; past it the engine only advises.
    pub moves_per_hour: u32,
    /// While more than this share of the connected hosts (and at least two) have automatic
    /// triggers at once, the engine only advises automatic moves: a cause the hosts share
    /// (the network, a deploy, a fleet-wide job, the telemetry itself) is then likelier than
    /// that many hosts failing together, and moving workloads among them escapes nothing.
    pub shared_trouble_share: f32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Act,
            health_below: Some(70),
            // 40 minutes at the default 500 ms heartbeat: the anomaly signal alone raises
            // false alarms (see the needless-move figures in docs/benchmarks.md).
            health_heartbeats: 4800,
            risk_above: Some(0.5),
            exhaustion_share: Some(0.95),
            errors_per_hour: Some(10),
            persist_ms: 30_000,
            maintenance_lead_ms: 600_000,
            threshold: 0.3,
            cost_per_freeze_s: 0.05,
            cost_per_gib: 0.02,
            cost_per_running_move: 0.1,
            cooldown_ms: 1_800_000,
            max_moves_per_host: 1,
            max_moves: 4,
            target_health_min: 80,
            target_memory_headroom: 0.1,
            moves_per_hour: 6,
            shared_trouble_share: 0.5,
        }
    }
}

/// A scheduled maintenance window on a host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// When it opens, ms since the Unix epoch.
    pub start_ms: u64,
    /// How long it lasts, ms.
    pub duration_ms: u64,
    /// Why, as the operator said.
    pub reason: String,
}

impl Window {
    /// Whether the window is open at `now`, or opens within `lead` ms.
    pub fn near(&self, now: u64, lead: u64) -> bool {
        now + lead >= self.start_ms && now < self.start_ms.saturating_add(self.duration_ms)
    }
}

/// A host as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// Its name.
    pub name: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Its newest health assessment.
    pub health: Option<HealthReport>,
    /// Consecutive heartbeats, up to now, whose health score was below the trigger's.
    pub low_health_beats: u32,
    /// Its memory, bytes (0: unknown).
    pub memory_bytes: u64,
    /// The share of its memory in use now.
    pub memory_used: f32,
    /// Nothing new may be placed here.
    pub cordoned: bool,
    /// An operator is emptying it.
    pub draining: bool,
    /// Moves at once from it, when not the settings' (a drain's `--parallel`).
    pub max_moves: Option<usize>,
    /// Its maintenance windows.
    pub maintenance: Vec<Window>,
    /// Its failure domain, if labelled.
    pub zone: Option<String>,
}

/// A workload as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadView {
    /// Its name.
    pub name: String,
    /// Where it runs.
    pub primary: String,
    /// Where its shadow is.
    pub shadow: Option<String>,
    /// Whether it runs now (only running workloads move).
    pub running: bool,
    /// Whether a move of it is under way.
    pub moving: bool,
    /// Its weight: 0.5 low, 1 normal, 2 high, 4 critical.
    pub priority: f64,
    /// Its size, bytes (memory and data of its newest epoch).
    pub bytes: u64,
    /// Bytes that changed per second between its recent epochs.
    pub dirty_bytes_per_s: f64,
    /// Its last freeze, ms (an epoch's or a move's).
    pub last_freeze_ms: Option<u64>,
    /// When it last moved, ms since the Unix epoch.
    pub last_move_ms: Option<u64>,
}

/// The fleet at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    /// Every host the coordinator knows.
    pub hosts: Vec<HostView>,
    /// Every workload.
    pub workloads: Vec<WorkloadView>,
    /// When the automatic moves of the last hour started, ms since the Unix epoch.
    pub recent_moves_ms: Vec<u64>,
    /// The data plane's speed between hosts, bytes per second (for the freeze estimate).
    pub link_bytes_per_s: f64,
}

/// What the engine remembers between ticks: since when each (host, trigger) has held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Memory {
    since_ms: BTreeMap<(String, TriggerKind), u64>,
}
