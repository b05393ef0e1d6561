//! The running coordinator: shared state behind the QUIC control plane and the HTTP API.
//!
//! Decisions live in [`crate::registry`]; this module applies them to real connections,
//! the store and the metrics.

pub mod control;
pub mod http;
pub mod serve;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_common::protocol::close;
use understudy_common::telemetry::TelemetrySummary;

use crate::metrics::Metrics;
use crate::registry::{ConnId, HostRecord, Registration, Registry};
use crate::store::Store;

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
