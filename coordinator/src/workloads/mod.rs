//! Workloads as the coordinator sees them: where each runs, where its shadow is, its
//! generation and its recovery point; and the decisions about them (placement,
//! migration, reconciliation with what hosts report), kept free of I/O.

pub mod failover;
pub mod migration;
pub mod placement;
pub mod reconcile;

use serde::{Deserialize, Serialize};
use understudy_common::workload::{EpochReport, WorkloadSpec};

/// What state a workload is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged (the serde default): the store's binary encoding cannot carry
// internally or adjacently tagged enums.
#[serde(rename_all = "snake_case")]
pub enum WorkloadState {
    /// Being started on its primary.
    Starting,
    /// Running on its primary.
    Running,
    /// A switchover is in progress.
    Migrating,
    /// The tree exited on its own (the detail says how).
    Exited(String),
    /// Could not be started or was lost (the detail says why).
    Failed(String),
    /// Its primary host is lost and nothing could restore it yet (the detail says why).
    Lost(String),
}

impl WorkloadState {
    /// Every state's name, as `name` gives it.
    pub const NAMES: [&'static str; 6] = [
        "starting",
        "running",
        "migrating",
        "exited",
        "failed",
        "lost",
    ];

    /// The state's name without its detail.
    pub fn name(&self) -> &'static str {
        match self {
            WorkloadState::Starting => "starting",
            WorkloadState::Running => "running",
            WorkloadState::Migrating => "migrating",
            WorkloadState::Exited(_) => "exited",
            WorkloadState::Failed(_) => "failed",
            WorkloadState::Lost(_) => "lost",
        }
    }
}

/// The coordinator's record of a workload; persisted and served by the API. (`S` is the
/// spec's type, `E` the epoch report's and `M` that of the shadows beyond the first:
/// others only to read records written in an older layout — `()` for none.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecord<S = WorkloadSpec, E = EpochReport, M = MoreShadows> {
    /// What to run.
    pub spec: S,
    /// Host running it.
    pub primary: String,
    /// Host holding its understudy, if any.
    pub shadow: Option<String>,
    /// Bumped by every switchover; orders carry it.
    pub generation: u64,
    /// Lifecycle state.
    pub state: WorkloadState,
    /// Why it is not protected right now (no shadow, CRIU error, shadow unreachable).
    pub unprotected: Option<String>,
    /// The newest epoch committed on the shadow: the recovery point.
    pub last_epoch: Option<E>,
    /// Epochs committed so far.
    pub epochs: u64,
    /// When the record was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The last switchover's outcome, if any.
    pub last_migration: Option<MigrationSummary>,
    /// Restarts by its restart policy, on every host, since it was created.
    pub restarts: u64,
    /// How its process tree last exited on its own, and when (ms since the Unix epoch).
    pub last_exit: Option<(String, u64)>,
    /// The last time the coordinator corrected this record from what a host reported, and
    /// why (ms since the Unix epoch).
    pub last_correction: Option<(String, u64)>,
    /// Shadows beyond `shadow` (`--shadows 2` and more), and the newest epoch each shadow
    /// committed.
    pub more_shadows: M,
}

/// A workload's shadows beyond the first, and what every shadow holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoreShadows {
    /// How many shadows it should have (0 is read as 1: records from before this field).
    pub wanted: u8,
    /// Hosts holding its understudy besides `shadow`, in order of preference.
    pub hosts: Vec<String>,
    /// The newest epoch each shadow committed under the current generation.
    pub epochs: Vec<(String, u64)>,
}

impl MoreShadows {
    /// How many shadows the workload should have.
    pub fn wanted(&self) -> usize {
        usize::from(self.wanted.max(1))
    }
}

impl From<()> for MoreShadows {
    fn from((): ()) -> Self {
        MoreShadows::default()
    }
}

/// What is left of a deleted workload: the generation its deletion was ordered under, so
/// that a copy a host still holds is stopped when it shows up, and a new workload of the
/// same name starts above it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted workload's name.
    pub name: String,
    /// The generation of the `Remove` orders.
    pub generation: u64,
    /// When it was deleted, milliseconds since the Unix epoch.
    pub deleted_unix_ms: u64,
}

/// How a switchover ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationSummary {
    /// From host.
    pub from: String,
    /// To host.
    pub to: String,
    /// Generation it ran under.
    pub generation: u64,
    /// "succeeded", "rolled back", "failed" or "failed over".
    pub outcome: String,
    /// Error, when it did not succeed; for a failover that succeeded from an older epoch
    /// than the newest, why the newer ones did not restore.
    pub error: Option<String>,
    /// Freeze time: from the final-checkpoint order to the restored workload's reply, ms.
    pub freeze_ms: Option<u64>,
    /// Total time, ms.
    pub total_ms: u64,
    /// When it finished, milliseconds since the Unix epoch.
    pub finished_unix_ms: u64,
    /// For a failover: the epoch restored (the recovery point).
    pub recovery_epoch: Option<u64>,
    /// For a failover: how old that epoch was when the primary was declared lost, ms.
    pub recovery_age_ms: Option<u64>,
}

impl<S, E> WorkloadRecord<S, E, ()> {
    /// A record written before several shadows, in today's layout (one shadow).
    pub fn with_one_shadow(self) -> WorkloadRecord<S, E> {
        self.map_layout(|s| s, |e| e, MoreShadows::from)
    }
}

impl<S, E> WorkloadRecord<S, E> {
    /// What a build before several shadows would have written (the record without them):
    /// for tests that read old records.
    pub fn without_more_shadows(self) -> WorkloadRecord<S, E, ()> {
        self.map_layout(|s| s, |e| e, |_| ())
    }
}

impl<S, E, M> WorkloadRecord<S, E, M> {
    /// The same record with its spec changed by `f`.
    pub fn map_spec<T>(self, f: impl FnOnce(S) -> T) -> WorkloadRecord<T, E, M> {
        self.map_layout(f, |e| e, |m| m)
    }

    /// The same record with its recovery point's report changed by `f`.
    pub fn map_epoch<F>(self, f: impl FnOnce(E) -> F) -> WorkloadRecord<S, F, M> {
        self.map_layout(|s| s, f, |m| m)
    }

    fn map_layout<T, F, N>(
        self,
        spec: impl FnOnce(S) -> T,
        epoch: impl FnOnce(E) -> F,
        more: impl FnOnce(M) -> N,
    ) -> WorkloadRecord<T, F, N> {
        WorkloadRecord {
            spec: spec(self.spec),
            primary: self.primary,
            shadow: self.shadow,
            generation: self.generation,
            state: self.state,
            unprotected: self.unprotected,
            last_epoch: self.last_epoch.map(epoch),
            epochs: self.epochs,
            created_unix_ms: self.created_unix_ms,
            last_migration: self.last_migration,
            restarts: self.restarts,
            last_exit: self.last_exit,
            last_correction: self.last_correction,
            more_shadows: more(self.more_shadows),
        }
    }
}

impl WorkloadRecord {
    /// Records a correction made from a host's report.
    pub fn correct(&mut self, why: String, now_ms: u64) {
        self.last_correction = Some((why, now_ms));
    }

    /// Every host holding its understudy: `shadow` first, then the others.
    pub fn shadows(&self) -> Vec<&str> {
        self.shadow
            .iter()
            .chain(&self.more_shadows.hosts)
            .map(String::as_str)
            .collect()
    }

    /// Whether `host` holds its understudy.
    pub fn is_shadow(&self, host: &str) -> bool {
        self.shadows().contains(&host)
    }

    /// The newest epoch shadow `host` committed under the current generation.
    pub fn epoch_on(&self, host: &str) -> Option<u64> {
        let recorded = self
            .more_shadows
            .epochs
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, e)| *e);
        let last = self
            .last_epoch
            .as_ref()
            .filter(|e| e.shadow == host)
            .map(|e| e.epoch);
        recorded.max(last)
    }

    /// Applies a committed epoch, if it belongs to the current generation.
    pub fn epoch_committed(&mut self, report: EpochReport) -> bool {
        if report.generation != self.generation {
            return false;
        }
        let points = &mut self.more_shadows.epochs;
        match points.iter_mut().find(|(h, _)| *h == report.shadow) {
            Some((_, e)) => *e = (*e).max(report.epoch),
            None => points.push((report.shadow.clone(), report.epoch)),
        }
        if self
            .last_epoch
            .as_ref()
            .is_some_and(|e| e.epoch >= report.epoch)
        {
            return false;
        }
        self.unprotected = None;
        self.epochs += 1;
        self.last_epoch = Some(report);
        true
    }
}
