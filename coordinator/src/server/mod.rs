//! The running coordinator: shared state behind the QUIC control plane and the HTTP API.
//!
//! Decisions live in [`crate::registry`]; this module applies them to real connections,
//! the store and the metrics.

pub mod control;
pub mod http;
pub mod orders;
pub mod serve;
pub mod workloads;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_common::protocol::close;
use understudy_common::telemetry::TelemetrySummary;
use understudy_common::workload::Peer;

use crate::metrics::Metrics;
use crate::registry::{ConnId, HostRecord, Registration, Registry};
use crate::store::Store;
use crate::workloads::placement::Candidate;
use crate::workloads::{WorkloadRecord, WorkloadState};
use workloads::MigrationStatus;

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug)]
struct State {
    registry: Registry,
    conns: HashMap<ConnId, quinn::Connection>,
    next_conn: ConnId,
}

/// State shared by every task of a running coordinator.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    workloads: Mutex<BTreeMap<String, WorkloadRecord>>,
    migrations: Mutex<HashMap<String, MigrationStatus>>,
    store: Store,
    /// Exported metrics.
    pub metrics: Metrics,
    /// When this coordinator started.
    pub started: Instant,
    /// The heartbeat interval agents are told to use.
    pub heartbeat_interval: Duration,
}

impl Shared {
    /// Builds the shared state from the store's records.
    pub fn new(
        store: Store,
        records: Vec<HostRecord>,
        workloads: Vec<WorkloadRecord>,
        heartbeat_interval: Duration,
        heartbeat_timeout: Duration,
    ) -> Self {
        let registry = Registry::new(records, heartbeat_timeout);
        let shared = Shared {
            state: Mutex::new(State {
                registry,
                conns: HashMap::new(),
                next_conn: 1,
            }),
            workloads: Mutex::new(
                workloads
                    .into_iter()
                    .map(|mut w| {
                        // The switchover's driver died with the previous process: say so
                        // rather than show it migrating forever.
                        if w.state == WorkloadState::Migrating {
                            w.state = WorkloadState::Failed(format!(
                                "a switchover (generation {}) was interrupted by a coordinator restart; check which host runs it",
                                w.generation
                            ));
                        }
                        (w.spec.name.clone(), w)
                    })
                    .collect(),
            ),
            migrations: Mutex::new(HashMap::new()),
            store,
            metrics: Metrics::new(),
            started: Instant::now(),
            heartbeat_interval,
        };
        shared.update_gauges(&shared.lock());
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a task panicked mid-update; the registry's invariants hold
        // per call, so carrying on with its data is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_gauges(&self, st: &State) {
        self.metrics
            .agents_connected
            .set(i64::try_from(st.registry.connected_count()).unwrap_or(i64::MAX));
        self.metrics
            .hosts_known
            .set(i64::try_from(st.registry.records().count()).unwrap_or(i64::MAX));
    }

    fn persist(&self, record: &HostRecord) {
        if let Err(e) = self.store.save_hosts([record]) {
            tracing::error!("could not persist host {}: {e}", record.name);
        }
    }

    /// Registers a host on `conn`, closing any connection it replaces.
    pub fn register(
        &self,
        conn: &quinn::Connection,
        name: &str,
        agent_version: String,
        telemetry: TelemetrySummary,
        data_port: Option<u16>,
    ) -> ConnId {
        let mut st = self.lock();
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(id, conn.clone());
        let replaced = st.registry.register(
            Registration {
                name: name.to_owned(),
                address: conn.remote_address(),
                conn: id,
                agent_version,
                telemetry,
                data_port,
            },
            Instant::now(),
            wall_ms(),
        );
        if let Some(old) = replaced.and_then(|old| st.conns.remove(&old)) {
            old.close(close::REPLACED.into(), b"replaced by a newer connection");
        }
        if let Some(rec) = st.registry.get(name) {
            self.persist(rec);
        }
        self.update_gauges(&st);
        id
    }

    /// Records a heartbeat; false if `conn` is no longer the host's connection.
    pub fn heartbeat(&self, name: &str, conn: ConnId, telemetry: TelemetrySummary) -> bool {
        let mut st = self.lock();
        let ok = st
            .registry
            .heartbeat(name, conn, telemetry, Instant::now(), wall_ms());
        if ok {
            self.metrics.heartbeats.inc();
        }
        ok
    }

    /// Records the end of `conn`.
    pub fn disconnected(&self, name: &str, conn: ConnId) {
        let mut st = self.lock();
        st.conns.remove(&conn);
        if let Some(rec) = st.registry.disconnected(name, conn) {
            tracing::info!(host = name, "agent disconnected");
            self.persist(&rec);
        }
        self.update_gauges(&st);
    }

    /// Closes connections of hosts silent past the timeout.
    pub fn expire(&self) {
        let mut st = self.lock();
        let expired = st.registry.expire(Instant::now());
        for (name, id) in &expired {
            tracing::warn!(host = %name, "no heartbeat within the timeout; host marked disconnected");
            if let Some(c) = st.conns.remove(id) {
                c.close(close::TIMED_OUT.into(), b"heartbeat timeout");
            }
            if let Some(rec) = st.registry.get(name) {
                self.persist(rec);
            }
        }
        if !expired.is_empty() {
            self.update_gauges(&st);
        }
    }

    /// Writes every record (last-seen times and telemetry change without persisting).
    pub fn flush(&self) {
        let st = self.lock();
        if let Err(e) = self.store.save_hosts(st.registry.records()) {
            tracing::error!("could not persist the registry: {e}");
        }
    }

    /// A snapshot of every host.
    pub fn hosts(&self) -> Vec<HostRecord> {
        self.lock().registry.records().cloned().collect()
    }
}

impl Shared {
    /// The live connection to host `name`.
    pub fn connection(&self, name: &str) -> Option<quinn::Connection> {
        let st = self.lock();
        let id = st.registry.connection_of(name)?;
        st.conns.get(&id).cloned()
    }

    /// How other agents reach `name`'s data plane, if it is connected and serves one.
    pub fn peer(&self, name: &str) -> Result<Peer, String> {
        let st = self.lock();
        let rec = st
            .registry
            .get(name)
            .ok_or_else(|| format!("host {name:?} is not known to this coordinator"))?;
        if !rec.connected {
            return Err(format!("host {name:?} is not connected"));
        }
        match (rec.address, rec.data_port) {
            (Some(a), Some(port)) => Ok(Peer {
                name: name.to_owned(),
                addr: SocketAddr::new(a.ip(), port),
            }),
            _ => Err(format!("host {name:?} serves no data plane")),
        }
    }

    /// Connected hosts serving a data plane, with their load, for placement.
    pub fn candidates(&self) -> Vec<Candidate> {
        let st = self.lock();
        st.registry
            .records()
            .filter(|r| r.connected && r.data_port.is_some())
            .map(|r| {
                let t = r.telemetry.clone().unwrap_or_default();
                #[allow(clippy::cast_precision_loss)] // a share, precision is irrelevant
                let memory_share = if t.memory_total_bytes == 0 {
                    0.0
                } else {
                    t.memory_used_bytes as f32 / t.memory_total_bytes as f32
                };
                Candidate {
                    name: r.name.clone(),
                    cpu_percent: t.cpu_percent,
                    memory_share,
                }
            })
            .collect()
    }

    fn workloads_lock(&self) -> MutexGuard<'_, BTreeMap<String, WorkloadRecord>> {
        self.workloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of one workload's record.
    pub fn workload(&self, name: &str) -> Option<WorkloadRecord> {
        self.workloads_lock().get(name).cloned()
    }

    /// Every workload.
    pub fn workload_list(&self) -> Vec<WorkloadRecord> {
        self.workloads_lock().values().cloned().collect()
    }

    /// Changes a workload's record with `f` and persists it; returns the new record.
    pub fn update_workload(
        &self,
        name: &str,
        f: impl FnOnce(&mut WorkloadRecord),
    ) -> Option<WorkloadRecord> {
        let mut w = self.workloads_lock();
        let rec = w.get_mut(name)?;
        f(rec);
        let rec = rec.clone();
        drop(w);
        if let Err(e) = self.store.save_workload(&rec) {
            tracing::error!(workload = name, "could not persist workload: {e}");
        }
        Some(rec)
    }

    /// Adds a new workload; false if the name is taken.
    pub fn insert_workload(&self, rec: WorkloadRecord) -> bool {
        let mut w = self.workloads_lock();
        if w.contains_key(&rec.spec.name) {
            return false;
        }
        w.insert(rec.spec.name.clone(), rec.clone());
        drop(w);
        if let Err(e) = self.store.save_workload(&rec) {
            tracing::error!(workload = %rec.spec.name, "could not persist workload: {e}");
        }
        true
    }

    /// Removes a workload's record.
    pub fn remove_workload(&self, name: &str) -> Option<WorkloadRecord> {
        let rec = self.workloads_lock().remove(name)?;
        if let Err(e) = self.store.delete_workload(name) {
            tracing::error!(workload = name, "could not delete workload record: {e}");
        }
        self.migrations_lock().remove(name);
        Some(rec)
    }

    fn migrations_lock(&self) -> MutexGuard<'_, HashMap<String, MigrationStatus>> {
        self.migrations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current or last migration of a workload.
    pub fn migration(&self, name: &str) -> Option<MigrationStatus> {
        self.migrations_lock().get(name).cloned()
    }

    /// Changes a migration's status.
    pub fn update_migration(&self, name: &str, f: impl FnOnce(&mut MigrationStatus)) {
        if let Some(m) = self.migrations_lock().get_mut(name) {
            f(m);
        }
    }

    /// Records a new migration.
    pub fn set_migration(&self, status: MigrationStatus) {
        self.migrations_lock()
            .insert(status.workload.clone(), status);
    }
}
