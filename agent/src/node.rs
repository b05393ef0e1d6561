//! The agent's shared state: its identity and data directory, CRIU, the generation fence,
//! the handles of the workloads it runs as primary (and the trees an earlier run left
//! behind) and those it shadows, data-plane connections to peers, the per-workload order
//! locks, and the channel its reports leave by.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use understudy_common::seal::DataKey;

use criu_sys::Criu;
use tokio::sync::mpsc;
use understudy_common::workload::{Peer, Report, WorkloadSpec};

use crate::datadir::DataRoots;
use crate::life::Handle;
use crate::replication::peers::Peers;
use crate::state::copies::{Copies, CopyRecord};
use crate::state::fence::Fence;

/// Everything the agent's tasks share.
#[derive(Debug)]
pub struct Node {
    /// This host's name (from its certificate).
    pub name: String,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// CRIU, or why it cannot be used.
    pub criu: Result<Arc<Criu>, String>,
    /// Where workloads' data directories live on this host.
    pub data_roots: DataRoots,
    /// The newest health assessment of this host, sent with each heartbeat.
    pub health: Mutex<Option<understudy_common::telemetry::HealthReport>>,
    /// Where the newest anomaly score stands among this host's own recent scores, percent
    /// (served on `/metrics`; None in the warm-up or without a model).
    pub anomaly_percentile: Mutex<Option<f64>>,
    /// The newest probe reports of the workloads running here.
    pub probes: Mutex<Vec<understudy_common::telemetry::ProbeReport>>,
    /// Newest generation seen per workload.
    pub fence: Fence,
    /// The trees this agent (or an earlier run of it) started, on disk.
    pub copies: Copies,
    /// When this agent process started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// The QUIC endpoint (data-plane server, and client for everything) and the
    /// connections to other agents' data planes.
    pub peers: Arc<Peers>,
    reports: mpsc::Sender<Report>,
    primaries: Mutex<HashMap<String, Arc<Handle>>>,
    shadows: Mutex<HashMap<String, (String, WorkloadSpec)>>,
    verified: Mutex<HashMap<String, u64>>,
    orphans: Mutex<HashMap<String, CopyRecord>>,
    order_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The data keys of the workloads this host seals epochs of, in memory only: a
    /// restarted agent learns them again from the coordinator's leases.
    keys: Mutex<HashMap<String, Arc<DataKey>>>,
    /// Memory-backed scratch space for dumps (`crate::scratch`), if there is one.
    pub scratch: Option<PathBuf>,
    /// The budgets that pace periodic epochs (`[epochs]`).
    pub budgets: crate::life::cadence::Budgets,
    /// Dump with memory tracking (`[epochs] memory_tracking`, and the kernel and CRIU can).
    pub memory_tracking: bool,
    /// The newest coordinator-group leader term this agent has registered with (0: a
    /// single coordinator); orders and leases from an older term are refused.
    pub term: std::sync::atomic::AtomicU64,
    /// Post-copy images waiting for their restore order.
    pub post_copy: crate::postcopy::target::Parked,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// A node with no workloads yet.
    // Each argument is one independent part of the agent, built separately in `run`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        data_dir: PathBuf,
        criu: Result<Arc<Criu>, String>,
        data_roots: DataRoots,
        (fence, copies): (Fence, Copies),
        peers: Peers,
        reports: mpsc::Sender<Report>,
    ) -> Self {
        // Trees an earlier run started that still run: reported, and stopped on request.
        let orphans: HashMap<String, CopyRecord> = copies
            .all()
            .into_iter()
            .filter(|(name, rec)| {
                let alive = crate::state::copies::still_running(rec);
                if alive {
                    tracing::warn!(workload = %name, pid = rec.pid, "a copy started by an earlier run of this agent still runs; it is not supervised");
                } else {
                    tracing::warn!(workload = %name, pid = rec.pid, "the copy an earlier run of this agent started is gone");
                    let _ = copies.remove(name);
                }
                alive
            })
            .collect();
        Node {
            name,
            data_dir,
            criu,
            data_roots,
            health: Mutex::new(None),
            anomaly_percentile: Mutex::new(None),
            probes: Mutex::new(Vec::new()),
            fence,
            copies,
            started_unix_ms: crate::clock::now_ms(),
            peers: Arc::new(peers),
            reports,
            primaries: Mutex::new(HashMap::new()),
            shadows: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            orphans: Mutex::new(orphans),
            order_locks: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            scratch: None,
            budgets: crate::life::cadence::Budgets::default(),
            memory_tracking: false,
            term: std::sync::atomic::AtomicU64::new(0),
            post_copy: Default::default(),
        }
    }

    /// The lock every order for `workload` holds while it is carried out: orders for one
    /// workload happen one at a time, in the order they arrive.
    pub fn order_lock(&self, workload: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.order_locks)
            .entry(workload.to_owned())
            .or_default()
            .clone()
    }

    /// Where `spec`'s dumps go: its own directory of scratch space, or, for a workload with
    /// data directories (or without scratch space), under the data directory.
    pub fn dump_dir(&self, spec: &WorkloadSpec) -> PathBuf {
        match &self.scratch {
            Some(root) if spec.data_dirs.is_empty() => root.join(&spec.name),
            _ => crate::workload::Paths::new(&self.data_dir, &spec.name).primary_epochs(),
        }
    }

    /// Keeps `workload`'s data key (as an order or a lease brought it).
    pub fn set_key(&self, workload: &str, key: [u8; 32]) {
        let mut keys = lock(&self.keys);
        if keys.get(workload).is_none_or(|k| k.bytes() != key) {
            keys.insert(workload.to_owned(), Arc::new(DataKey::from_bytes(key)));
        }
    }

    /// `workload`'s data key, if this host has been given it.
    pub fn key(&self, workload: &str) -> Option<Arc<DataKey>> {
        lock(&self.keys).get(workload).cloned()
    }

    /// Forgets `workload`'s data key (it no longer runs here).
    pub fn forget_key(&self, workload: &str) {
        lock(&self.keys).remove(workload);
    }

    /// The tree of `workload` an earlier run of this agent left running, if any.
    pub fn orphan(&self, workload: &str) -> Option<CopyRecord> {
        lock(&self.orphans).get(workload).cloned()
    }

    /// Every orphaned tree.
    pub fn orphans(&self) -> Vec<CopyRecord> {
        lock(&self.orphans).values().cloned().collect()
    }

    /// Takes the tree of `workload` an earlier run left out of the orphans (it is being
    /// taken back).
    pub fn take_orphan(&self, workload: &str) -> Option<CopyRecord> {
        lock(&self.orphans).remove(workload)
    }

    /// Records the tree now running `spec`'s workload here, durably: enough for a
    /// restarted agent to take it back (generation, shadows, pid, next epoch).
    pub fn record_copy(
        &self,
        spec: &WorkloadSpec,
        generation: u64,
        shadows: &[Peer],
        pid: i32,
        next_epoch: u64,
    ) -> Result<(), String> {
        let record = CopyRecord {
            spec: spec.clone(),
            generation,
            shadows: shadows.to_vec(),
            pid,
            start_ticks: crate::procs::start_ticks(pid).unwrap_or(0),
            next_epoch,
        };
        self.copies.set(record).map_err(|e| e.to_string())
    }

    /// Stops every copy of `workload` this host runs that no task supervises (an
    /// earlier run's), `graceful`ly or not, and forgets the record of its tree. Errors if
    /// one would not die.
    pub async fn stop_unsupervised(&self, workload: &str, graceful: bool) -> Result<(), String> {
        let orphan = lock(&self.orphans).get(workload).cloned();
        if let Some(o) = orphan {
            let o2 = o.clone();
            let gone = tokio::task::spawn_blocking(move || {
                crate::state::copies::stop_and_wait(
                    &o2,
                    graceful,
                    std::time::Duration::from_secs(10),
                )
            })
            .await
            .unwrap_or(false);
            if !gone {
                return Err(format!(
                    "the copy of {workload:?} left by an earlier run of this agent (pid {}) did not stop",
                    o.pid
                ));
            }
            tracing::info!(
                workload,
                pid = o.pid,
                "stopped the copy an earlier run of this agent left"
            );
            lock(&self.orphans).remove(workload);
        }
        self.copies.remove(workload).map_err(|e| e.to_string())
    }

    /// This host's paths of `spec`'s data directories, in spec order.
    pub fn data_host_paths(&self, spec: &WorkloadSpec) -> Vec<PathBuf> {
        spec.data_dirs
            .iter()
            .map(|d| self.data_roots.host_path(d))
            .collect()
    }

    /// The newest health assessment.
    pub fn health(&self) -> Option<understudy_common::telemetry::HealthReport> {
        lock(&self.health).clone()
    }

    /// Records a new health assessment and where its anomaly score stands for this host.
    pub fn set_health(
        &self,
        report: understudy_common::telemetry::HealthReport,
        percentile: Option<f64>,
    ) {
        *lock(&self.health) = Some(report);
        *lock(&self.anomaly_percentile) = percentile;
    }

    /// Where the newest anomaly score stands among this host's own recent scores, percent.
    pub fn anomaly_percentile(&self) -> Option<f64> {
        *lock(&self.anomaly_percentile)
    }

    /// The newest probe reports.
    pub fn probes(&self) -> Vec<understudy_common::telemetry::ProbeReport> {
        lock(&self.probes).clone()
    }

    /// Records new probe reports.
    pub fn set_probes(&self, reports: Vec<understudy_common::telemetry::ProbeReport>) {
        *lock(&self.probes) = reports;
    }

    /// Queues a report for the coordinator; dropped (with a log line) if the queue is full.
    pub fn report(&self, report: Report) {
        if let Err(e) = self.reports.try_send(report) {
            tracing::warn!("report dropped: {e}");
        }
    }

    /// The workload this host runs as primary.
    pub fn primary(&self, workload: &str) -> Option<Arc<Handle>> {
        lock(&self.primaries).get(workload).cloned()
    }

    /// Records a primary workload.
    pub fn set_primary(&self, workload: &str, p: Arc<Handle>) {
        lock(&self.primaries).insert(workload.to_owned(), p);
    }

    /// Forgets a primary workload.
    pub fn remove_primary(&self, workload: &str) -> Option<Arc<Handle>> {
        lock(&self.primaries).remove(workload)
    }

    /// The primary whose epochs of `workload` this host accepts.
    pub fn expected_primary(&self, workload: &str) -> Option<String> {
        lock(&self.shadows).get(workload).map(|(p, _)| p.clone())
    }

    /// The spec of a workload shadowed here.
    pub fn shadow_spec(&self, workload: &str) -> Option<WorkloadSpec> {
        lock(&self.shadows).get(workload).map(|(_, s)| s.clone())
    }

    /// Accept epochs of `spec`'s workload from `primary` from now on.
    pub fn expect_shadow(&self, spec: WorkloadSpec, primary: &str) {
        lock(&self.shadows).insert(spec.name.clone(), (primary.to_owned(), spec));
    }

    /// The workloads whose epochs this host has been told to accept.
    pub fn shadowed(&self) -> Vec<String> {
        lock(&self.shadows).keys().cloned().collect()
    }

    /// Stop shadowing `workload`.
    pub fn stop_shadowing(&self, workload: &str) {
        lock(&self.shadows).remove(workload);
    }

    /// Records that this process verified every hash of `workload`'s `epoch` as it
    /// committed it, so a restore right after need not hash the files again.
    pub fn mark_verified(&self, workload: &str, epoch: u64) {
        lock(&self.verified).insert(workload.to_owned(), epoch);
    }

    /// Whether `epoch` of `workload` was verified by this process when committed.
    pub fn was_verified(&self, workload: &str, epoch: u64) -> bool {
        lock(&self.verified).get(workload) == Some(&epoch)
    }

    /// Every primary workload.
    pub fn primaries(&self) -> Vec<Arc<Handle>> {
        lock(&self.primaries).values().cloned().collect()
    }
}
