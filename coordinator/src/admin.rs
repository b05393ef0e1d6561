//! What operators have said about hosts: cordoned (nothing new placed there), being
//! drained (every workload and shadow leaves), and maintenance windows (everything leaves
//! before one opens; nothing is placed there during it). Persisted with the other records.

use serde::{Deserialize, Serialize};

use crate::decide::Window;

/// An operator's drain of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When it gives up on what has not moved, ms since the Unix epoch.
    pub deadline_unix_ms: Option<u64>,
    /// Workloads moved off at once.
    pub parallel: usize,
    /// Workloads on the host when the drain started.
    pub workloads: Vec<String>,
}

/// Everything operators said about one host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostAdmin {
    /// The host.
    pub host: String,
    /// Nothing new is placed on it.
    pub cordoned: bool,
    /// Its drain, while one runs.
    pub drain: Option<Drain>,
    /// Its maintenance windows, by id.
    pub maintenance: Vec<(u64, Window)>,
}

impl HostAdmin {
    /// Nothing said yet about `host`.
    pub fn new(host: &str) -> Self {
        HostAdmin {
            host: host.to_owned(),
            ..HostAdmin::default()
        }
    }

    /// Whether it says anything at all (an empty record need not be kept).
    pub fn is_empty(&self) -> bool {
        !self.cordoned && self.drain.is_none() && self.maintenance.is_empty()
    }

    /// Windows that have ended by `now_ms` go.
    pub fn forget_past(&mut self, now_ms: u64) {
        self.maintenance
            .retain(|(_, w)| w.start_ms.saturating_add(w.duration_ms) > now_ms);
    }
}
