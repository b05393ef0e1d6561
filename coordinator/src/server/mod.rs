//! The running coordinator: shared state behind the QUIC control plane and the HTTP API.
//!
//! Decisions live in [`crate::registry`] and [`crate::workloads`]; this module applies them
//! to real connections, the store and the metrics. The host side of the state is here, the
//! workload side in [`records`].

pub mod admin;
pub mod auth;
pub mod control;
pub mod decisions;
pub mod failover;
pub mod group;
pub mod http;
pub mod http_admin;
pub mod http_backup;
pub mod https;
pub mod join;
pub mod limits;
pub mod orders;
pub mod reconciler;
pub mod records;
pub mod renew_self;
pub mod revocations;
pub mod serve;
pub mod switchover;
pub mod workloads;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_common::protocol::close;
use understudy_common::telemetry::TelemetrySummary;
use understudy_common::workload::Peer;

use crate::metrics::Metrics;
use crate::registry::{ConnId, HostRecord, Registration, Registry};
use crate::store::{Loaded, Store};
use crate::workloads::placement::Candidate;
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
    book: Mutex<records::Book>,
    migrations: Mutex<HashMap<String, MigrationStatus>>,
    store: Arc<Store>,
    /// Set once this coordinator is no longer its group's leader for the term this state
    /// belongs to: no order leaves after it (see [`orders::deliver`]).
    fence: Arc<AtomicBool>,
    /// Set when the fence was raised on purpose after committed writes (a restored backup:
    /// the leader rebuilds its state from the store), not because leadership was lost.
    rebuilding: AtomicBool,
    /// The group leader's term this state acts in (0: a single coordinator).
    term: std::sync::atomic::AtomicU64,
    /// Host records waiting to be written (in a group, registrations and losses are written
    /// in batches, so that a fleet reconnecting does not queue behind one log entry each).
    pending_hosts: Mutex<HashMap<String, HostRecord>>,
    /// Exported metrics.
    pub metrics: Metrics,
    /// When this coordinator started.
    pub started: Instant,
    /// The heartbeat interval agents are told to use.
    pub heartbeat_interval: Duration,
    /// When lost hosts' workloads move, and their leases.
    pub failover: crate::workloads::failover::Settings,
    /// What operators said about hosts, and the event log.
    admin: Mutex<admin::Admin>,
    /// The decision engine's memory between ticks.
    engine: Mutex<decisions::EngineState>,
    /// The decision engine's settings.
    pub decisions: crate::decide::Settings,
    /// The CA to sign joining and renewing hosts' certificates with, when configured.
    enrollment: std::sync::OnceLock<join::Enrollment>,
}

impl Shared {
    /// Builds the shared state from what the store holds.
    pub fn new(
        store: Arc<Store>,
        loaded: Loaded,
        heartbeat_interval: Duration,
        heartbeat_timeout: Duration,
        failover: crate::workloads::failover::Settings,
        decisions: crate::decide::Settings,
    ) -> Self {
        let registry = Registry::new(loaded.hosts, heartbeat_timeout);
        let mut workloads = loaded.workloads;
        crate::faults::drift(&mut workloads);
        let shared = Shared {
            state: Mutex::new(State {
                registry,
                conns: HashMap::new(),
                next_conn: 1,
            }),
            book: Mutex::new(records::Book::new(workloads, loaded.tombstones)),
            migrations: Mutex::new(
                loaded
                    .migrations
                    .iter()
                    .map(|m| {
                        (
                            m.workload().to_owned(),
                            switchover::status_of(m, String::new()),
                        )
                    })
                    .collect(),
            ),
            store,
            fence: Arc::new(AtomicBool::new(false)),
            rebuilding: AtomicBool::new(false),
            term: std::sync::atomic::AtomicU64::new(0),
            pending_hosts: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            started: Instant::now(),
            heartbeat_interval,
            failover,
            admin: Mutex::new(admin::Admin::new(
                loaded.host_admin,
                loaded.events,
                loaded.revocations,
            )),
            engine: Mutex::new(decisions::EngineState::default()),
            decisions,
            enrollment: std::sync::OnceLock::new(),
        };
        shared.update_gauges(&shared.lock());
        shared
    }

    /// Signs hosts' certificates from now on with `enrollment` (set once, at start).
    pub fn set_enrollment(&self, enrollment: Option<join::Enrollment>) {
        if let Some(e) = enrollment {
            let _ = self.enrollment.set(e);
        }
    }

    /// The CA that signs hosts' certificates, if this coordinator has one.
    pub fn enrollment(&self) -> Option<&join::Enrollment> {
        self.enrollment.get()
    }

    /// The flag that fences this state's orders (shared with the group's write path).
    pub fn fence(&self) -> Arc<AtomicBool> {
        self.fence.clone()
    }

    /// The store this state persists to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Sets the group leader's term this state acts in.
    pub fn set_term(&self, term: u64) {
        self.term.store(term, Ordering::SeqCst);
    }

    /// The group leader's term this state acts in (0: a single coordinator).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Whether this coordinator stopped leading the term this state belongs to.
    pub fn fenced(&self) -> bool {
        self.fence.load(Ordering::SeqCst)
    }

    /// Fences this state after writes that committed, so that the leader rebuilds its state
    /// from the store (as a newly elected leader does).
    pub fn fence_to_rebuild(&self) {
        self.rebuilding.store(true, Ordering::SeqCst);
        self.fence.store(true, Ordering::SeqCst);
    }

    /// Whether this state was fenced because its leadership was lost or a write failed to
    /// commit (not by [`Shared::fence_to_rebuild`]): what it was doing may not stand.
    pub fn lost_leadership(&self) -> bool {
        self.fenced() && !self.rebuilding.load(Ordering::SeqCst)
    }

    /// Closes every agent connection with `code` and `reason` (a leader stepping down).
    pub fn close_all(&self, code: u32, reason: &[u8]) {
        let st = self.lock();
        for c in st.conns.values() {
            c.close(code.into(), reason);
        }
    }

    /// Whether the state can be locked: what systemd's watchdog is told.
    pub fn responsive(&self) -> bool {
        drop(self.lock());
        true
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
        if self.store.is_replicated() {
            self.pending_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(record.name.clone(), record.clone());
            return;
        }
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
        zone: Option<String>,
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
                zone,
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

    /// Closes `host`'s connection, if it has one, because its certificate was revoked.
    pub fn close_revoked(&self, host: &str) {
        let st = self.lock();
        let conn = st
            .registry
            .connection_of(host)
            .and_then(|id| st.conns.get(&id).cloned());
        drop(st);
        if let Some(c) = conn {
            tracing::warn!(
                host,
                "closing the connection of a host whose certificate was revoked"
            );
            c.close(
                close::REVOKED.into(),
                b"this host's certificate was revoked",
            );
        }
    }

    /// Records a heartbeat; false if `conn` is no longer the host's connection.
    pub fn heartbeat(&self, name: &str, conn: ConnId, telemetry: TelemetrySummary) -> bool {
        let health_score = telemetry.health.as_ref().map(|h| h.score);
        let mut st = self.lock();
        let ok = st
            .registry
            .heartbeat(name, conn, telemetry, Instant::now(), wall_ms());
        if ok {
            self.metrics.heartbeats.inc();
        }
        drop(st);
        if ok {
            self.count_health(name, health_score);
        }
        ok
    }

    /// Records the end of `conn`; `why` says how it ended, for the event (none where this
    /// side closed it).
    pub fn disconnected(&self, name: &str, conn: ConnId, why: Option<&str>) {
        let mut st = self.lock();
        st.conns.remove(&conn);
        let gone = st.registry.disconnected(name, conn);
        if let Some(rec) = &gone {
            tracing::info!(host = name, "agent disconnected");
            self.persist(rec);
        }
        self.update_gauges(&st);
        drop(st);
        if let (Some(_), Some(why)) = (gone, why) {
            self.host_gone(name, why);
        }
    }

    /// The event saying `host`'s agent is gone and what that means for the workloads it
    /// runs: no epochs, so unprotected, until it is back (or the failover settings act).
    fn host_gone(&self, host: &str, why: &str) {
        let mut running: Vec<String> = self
            .workload_list()
            .into_iter()
            .filter(|w| w.primary == host && w.state == crate::workloads::WorkloadState::Running)
            .map(|w| w.spec.name)
            .collect();
        running.sort();
        let message = if running.is_empty() {
            format!("{host}'s agent {why}; no workload runs there")
        } else {
            format!(
                "{host}'s agent {why}: {} workload(s) there run on without epochs, unprotected, until it is back ({}); if it stays away, its leases run out and failover follows [failover] (docs/failover.md)",
                running.len(),
                running.join(", ")
            )
        };
        self.event(
            "host",
            (Some(host), None),
            message,
            vec![("workloads".into(), running.len().to_string())],
        );
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
        drop(st);
        for (name, _) in &expired {
            self.host_gone(name, "sent no heartbeat within the timeout");
        }
    }

    /// Writes the host records changed since the last call, in one transaction (a group's
    /// batching of registrations and losses; see [`Shared::persist`]).
    pub fn flush_pending(&self) {
        let pending: Vec<HostRecord> =
            std::mem::take(&mut *self.pending_hosts.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.store.save_hosts(pending.iter()) {
            tracing::error!("could not persist {} host records: {e}", pending.len());
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

    /// Each host's failure domain, where its agent names one.
    pub fn zones(&self) -> HashMap<String, String> {
        let st = self.lock();
        st.registry
            .records()
            .filter_map(|r| Some((r.name.clone(), st.registry.zone(&r.name)?.to_owned())))
            .collect()
    }
}

impl Shared {
    /// Every agent's live connection.
    pub fn connections(&self) -> Vec<quinn::Connection> {
        self.lock().conns.values().cloned().collect()
    }

    /// The connection of host `name`, if connected.
    pub fn connection(&self, name: &str) -> Option<quinn::Connection> {
        let st = self.lock();
        let id = st.registry.connection_of(name)?;
        st.conns.get(&id).cloned()
    }

    /// Whether host `name` is connected, and how long this coordinator has not heard
    /// from it.
    pub fn host_now(&self, name: &str) -> crate::workloads::failover::HostNow {
        let (connected, silent_for) =
            self.lock()
                .registry
                .silence(name, Instant::now(), self.started);
        crate::workloads::failover::HostNow {
            connected,
            silent_for,
        }
    }

    /// Whether host `name` has a live connection.
    pub fn is_connected(&self, name: &str) -> bool {
        self.lock().registry.get(name).is_some_and(|r| r.connected)
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

    /// The shadow for `workload` on `primary` among [`Shared::candidates`] other than
    /// `except` (see `placement`).
    pub fn pick_shadow(&self, workload: &str, primary: &str, except: &[&str]) -> Option<String> {
        let zone = self.lock().registry.zone(primary).map(str::to_owned);
        let candidates: Vec<Candidate> = self
            .candidates()
            .into_iter()
            .filter(|c| !except.contains(&c.name.as_str()))
            .collect();
        crate::workloads::placement::pick_shadow(workload, primary, zone.as_deref(), &candidates)
    }

    /// Connected hosts serving a data plane, with their load, for placement: none that is
    /// cordoned, being drained, in (or near) a maintenance window, or in trouble.
    pub fn candidates(&self) -> Vec<Candidate> {
        let now = wall_ms();
        let lead = self.decisions.maintenance_lead_ms;
        let troubled = self.troubled();
        let mut closed: Vec<String> = self
            .host_admins()
            .into_iter()
            .filter(|a| {
                a.cordoned
                    || a.drain.is_some()
                    || a.maintenance.iter().any(|(_, w)| w.near(now, lead))
            })
            .map(|a| a.host)
            .collect();
        closed.extend(troubled);
        let st = self.lock();
        st.registry
            .records()
            .filter(|r| r.connected && r.data_port.is_some() && !closed.contains(&r.name))
            .map(|r| {
                let t = r.telemetry.clone().unwrap_or_default();
                let health = t.health.as_ref();
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
                    memory_forecast: health.and_then(|h| {
                        h.forecasts
                            .iter()
                            .filter(|f| f.metric == "mem_u")
                            .map(|f| f.upper)
                            .reduce(f32::max)
                    }),
                    health: health
                        .filter(|h| h.level != understudy_common::telemetry::HealthLevel::Degraded)
                        .map(|h| h.score),
                    zone: st.registry.zone(&r.name).map(str::to_owned),
                }
            })
            .collect()
    }
}
