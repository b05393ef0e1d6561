//! What an agent actually holds: the copies of workloads it runs and the shadow copies it
//! keeps. Sent on every (re)connection and periodically, and in answer to a `Query` order,
//! so that the coordinator's records follow what the hosts really run (reconciliation).

use serde::{Deserialize, Serialize};

use crate::workload::WorkloadSpec;

/// Everything an agent holds, as of the moment it sent this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// When this agent process started, milliseconds since the Unix epoch.
    pub agent_started_unix_ms: u64,
    /// One entry per workload this agent holds anything of, by name.
    pub workloads: Vec<Held>,
    /// The newest generation this agent has seen per workload (its fence), including
    /// workloads it no longer holds.
    pub fence: Vec<(String, u64)>,
}

impl Inventory {
    /// The entry for `workload`, if this agent holds anything of it.
    pub fn get(&self, workload: &str) -> Option<&Held> {
        self.workloads.iter().find(|h| h.workload == workload)
    }
}

/// What one agent holds of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The workload.
    pub workload: String,
    /// A copy of the workload that runs (or ran) here.
    pub copy: Option<LocalCopy>,
    /// The shadow side: epochs kept here.
    pub shadow: Option<ShadowCopy>,
    /// An order or epoch held the workload while this was taken, so `copy` may be
    /// missing or mid-change: ask again later rather than judge.
    pub busy: bool,
}

/// A process tree of a workload on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalCopy {
    /// What it runs.
    pub spec: WorkloadSpec,
    /// The generation it runs under.
    pub generation: u64,
    /// Where its epochs go.
    pub shadows: Vec<String>,
    /// Host pid of the tree's root (0 when none runs).
    pub pid: i32,
    /// What the tree is doing.
    pub state: CopyState,
}

impl LocalCopy {
    /// Whether a process tree of the workload is alive here.
    pub fn is_alive(&self) -> bool {
        matches!(self.state, CopyState::Running { .. } | CopyState::Orphaned)
    }
}

/// The state of a copy on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// Running and supervised by this agent.
    Running {
        /// Whether periodic epochs are being taken (a switchover pauses them).
        epochs: bool,
    },
    /// Running, but started by an earlier run of this agent, which no longer supervises
    /// it: no epochs, no output collected.
    Orphaned,
    /// Stopped by a switchover's final epoch; `final_dump` says whether this host can
    /// resume it from that dump.
    Stopped {
        /// The final dump is still here.
        final_dump: bool,
    },
    /// Exited on its own (and not restarted).
    Exited,
}

impl std::fmt::Display for CopyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyState::Running { epochs: true } => "running",
            CopyState::Running { epochs: false } => "running, epochs paused",
            CopyState::Orphaned => "running unsupervised",
            CopyState::Stopped { final_dump: true } => "stopped by a final epoch, dump kept",
            CopyState::Stopped { final_dump: false } => "stopped",
            CopyState::Exited => "exited",
        })
    }
}

/// The epochs of a workload this host keeps as its shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowCopy {
    /// The primary whose epochs this host accepts, if it has been told (forgotten on an
    /// agent restart until the coordinator says it again).
    pub primary: Option<String>,
    /// The newest epoch committed here.
    pub newest_epoch: Option<u64>,
}
