//! The host registry: which hosts exist, which are connected, what they last reported.
//!
//! Sans-IO: events come in with the current time, the registry answers with what the shell
//! must do (close a replaced connection, persist a record). It owns no sockets, store or
//! clock, so it is tested deterministically.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use understudy_common::telemetry::TelemetrySummary;
use understudy_common::telemetry_v9::TelemetrySummaryV9;

/// Identifies one connection, so that events from a replaced connection are ignored.
pub type ConnId = u64;

/// What the registry knows about a host; also what is persisted and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Name from the host's certificate.
    pub name: String,
    /// Address the host last connected from.
    pub address: Option<SocketAddr>,
    /// Whether the host has a live, heartbeating connection.
    pub connected: bool,
    /// First registration, milliseconds since the Unix epoch.
    pub first_seen_unix_ms: u64,
    /// Last message received, milliseconds since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// The agent's build version.
    pub agent_version: String,
    /// The latest telemetry the host sent.
    pub telemetry: Option<TelemetrySummary>,
    /// Heartbeats received from this host since it was first seen.
    pub heartbeats: u64,
    /// UDP port of the host's data plane, if it serves one.
    #[serde(default)]
    pub data_port: Option<u16>,
}

/// A [`HostRecord`] as store records version 9 and older hold it: telemetry without the
/// anomaly percentile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the same fields as HostRecord's
pub struct HostRecordV9 {
    pub name: String,
    pub address: Option<SocketAddr>,
    pub connected: bool,
    pub first_seen_unix_ms: u64,
    pub last_seen_unix_ms: u64,
    pub agent_version: String,
    pub telemetry: Option<TelemetrySummaryV9>,
    pub heartbeats: u64,
    pub data_port: Option<u16>,
}

impl From<HostRecordV9> for HostRecord {
    fn from(h: HostRecordV9) -> Self {
        HostRecord {
            name: h.name,
            address: h.address,
            connected: h.connected,
            first_seen_unix_ms: h.first_seen_unix_ms,
            last_seen_unix_ms: h.last_seen_unix_ms,
            agent_version: h.agent_version,
            telemetry: h.telemetry.map(Into::into),
            heartbeats: h.heartbeats,
            data_port: h.data_port,
        }
    }
}

#[derive(Debug)]
struct Live {
    conn: ConnId,
    last_heard: Instant,
}

#[derive(Debug)]
struct Entry {
    record: HostRecord,
    live: Option<Live>,
    /// When this process last heard from the host (kept after it disconnects).
    last_heard: Option<Instant>,
    /// Its failure domain, as its agent said at registration (not persisted: every
    /// registration says it again).
    zone: Option<String>,
}

/// A host registering on a new connection.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Name from the certificate.
    pub name: String,
    /// Remote address of the connection.
    pub address: SocketAddr,
    /// The new connection.
    pub conn: ConnId,
    /// The agent's build version.
    pub agent_version: String,
    /// Telemetry sent with the registration.
    pub telemetry: TelemetrySummary,
    /// The host's data-plane port.
    pub data_port: Option<u16>,
    /// Its failure domain.
    pub zone: Option<String>,
}

/// The registry of hosts.
#[derive(Debug)]
pub struct Registry {
    hosts: BTreeMap<String, Entry>,
    timeout: Duration,
}

impl Registry {
    /// A registry that remembers `records` (all shown disconnected until they reconnect) and
    /// treats `timeout` of silence as a lost connection.
    pub fn new(records: impl IntoIterator<Item = HostRecord>, timeout: Duration) -> Self {
        let hosts = records
            .into_iter()
            .map(|mut record| {
                record.connected = false;
                (
                    record.name.clone(),
                    Entry {
                        record,
                        live: None,
                        last_heard: None,
                        zone: None,
                    },
                )
            })
            .collect();
        Registry { hosts, timeout }
    }

    /// Records a registration. Returns the connection it replaces, which the caller closes.
    pub fn register(&mut self, reg: Registration, now: Instant, wall_ms: u64) -> Option<ConnId> {
        let entry = self.hosts.entry(reg.name.clone()).or_insert_with(|| Entry {
            record: HostRecord {
                name: reg.name.clone(),
                address: None,
                connected: false,
                first_seen_unix_ms: wall_ms,
                last_seen_unix_ms: wall_ms,
                agent_version: String::new(),
                telemetry: None,
                heartbeats: 0,
                data_port: None,
            },
            live: None,
            last_heard: None,
            zone: None,
        });
        let replaced = entry.live.take().map(|l| l.conn);
        entry.live = Some(Live {
            conn: reg.conn,
            last_heard: now,
        });
        entry.last_heard = Some(now);
        entry.zone = reg.zone;
        let r = &mut entry.record;
        r.address = Some(reg.address);
        r.connected = true;
        r.last_seen_unix_ms = wall_ms;
        r.agent_version = reg.agent_version;
        r.telemetry = Some(reg.telemetry);
        r.data_port = reg.data_port;
        replaced
    }

    /// Host `name`'s failure domain, as it last said.
    pub fn zone(&self, name: &str) -> Option<&str> {
        self.hosts.get(name)?.zone.as_deref()
    }

    /// Records a heartbeat. Returns false (and changes nothing) if `conn` is not the host's
    /// current connection.
    pub fn heartbeat(
        &mut self,
        name: &str,
        conn: ConnId,
        telemetry: TelemetrySummary,
        now: Instant,
        wall_ms: u64,
    ) -> bool {
        let Some(entry) = self.current(name, conn) else {
            return false;
        };
        if let Some(live) = entry.live.as_mut() {
            live.last_heard = now;
        }
        entry.last_heard = Some(now);
        entry.record.last_seen_unix_ms = wall_ms;
        entry.record.telemetry = Some(telemetry);
        entry.record.heartbeats += 1;
        true
    }

    /// Records that `conn` ended. Returns the updated record if it was the current one.
    pub fn disconnected(&mut self, name: &str, conn: ConnId) -> Option<HostRecord> {
        let entry = self.current(name, conn)?;
        entry.live = None;
        entry.record.connected = false;
        Some(entry.record.clone())
    }

    /// Marks every host silent for longer than the timeout as disconnected and returns the
    /// connections the caller must close.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, ConnId)> {
        let mut expired = Vec::new();
        for (name, entry) in &mut self.hosts {
            let stale = entry
                .live
                .as_ref()
                .is_some_and(|l| now.saturating_duration_since(l.last_heard) > self.timeout);
            if stale {
                if let Some(live) = entry.live.take() {
                    expired.push((name.clone(), live.conn));
                }
                entry.record.connected = false;
            }
        }
        expired
    }

    /// Whether `name` is connected, and how long since this process last heard from it
    /// (since `started`, this process's start, if never): what failover waits on.
    pub fn silence(&self, name: &str, now: Instant, started: Instant) -> (bool, Duration) {
        match self.hosts.get(name) {
            Some(e) => (
                e.live.is_some(),
                now.saturating_duration_since(e.last_heard.unwrap_or(started)),
            ),
            None => (false, now.saturating_duration_since(started)),
        }
    }

    /// The record of one host.
    pub fn get(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.get(name).map(|e| &e.record)
    }

    /// Every host, ordered by name.
    pub fn records(&self) -> impl Iterator<Item = &HostRecord> {
        self.hosts.values().map(|e| &e.record)
    }

    /// The current connection of a connected host.
    pub fn connection_of(&self, name: &str) -> Option<ConnId> {
        self.hosts.get(name)?.live.as_ref().map(|l| l.conn)
    }

    /// How many hosts are connected.
    pub fn connected_count(&self) -> usize {
        self.hosts.values().filter(|e| e.live.is_some()).count()
    }

    fn current(&mut self, name: &str, conn: ConnId) -> Option<&mut Entry> {
        self.hosts
            .get_mut(name)
            .filter(|e| e.live.as_ref().is_some_and(|l| l.conn == conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, conn: ConnId) -> Registration {
        Registration {
            name: name.into(),
            address: SocketAddr::from(([10, 0, 0, 1], 4000)),
            conn,
            agent_version: "0.1.0".into(),
            telemetry: TelemetrySummary::default(),
            data_port: Some(7442),
            zone: None,
        }
    }

    #[test]
    fn silent_host_expires_after_timeout_only() {
        let t0 = Instant::now();
        let mut r = Registry::new([], Duration::from_secs(5));
        assert_eq!(r.register(reg("a", 1), t0, 1000), None);
        assert!(r.heartbeat(
            "a",
            1,
            TelemetrySummary::default(),
            t0 + Duration::from_secs(3),
            4000
        ));
        assert!(r.expire(t0 + Duration::from_secs(7)).is_empty());
        assert_eq!(r.expire(t0 + Duration::from_secs(9)), vec![("a".into(), 1)]);
        assert!(!r.get("a").unwrap().connected);
        assert_eq!(r.connected_count(), 0);
    }

    #[test]
    fn reconnect_replaces_old_connection_and_ignores_its_events() {
        let t0 = Instant::now();
        let mut r = Registry::new([], Duration::from_secs(5));
        r.register(reg("a", 1), t0, 1000);
        assert_eq!(r.register(reg("a", 2), t0, 2000), Some(1));
        // The old connection's late events change nothing.
        assert!(!r.heartbeat("a", 1, TelemetrySummary::default(), t0, 3000));
        assert!(r.disconnected("a", 1).is_none());
        assert!(r.get("a").unwrap().connected);
        assert_eq!(r.get("a").unwrap().first_seen_unix_ms, 1000);
    }

    #[test]
    fn silence_counts_from_the_last_word_heard_or_from_start() {
        let t0 = Instant::now();
        let mut r = Registry::new([], Duration::from_secs(5));
        assert_eq!(
            r.silence("a", t0 + Duration::from_secs(9), t0),
            (false, Duration::from_secs(9))
        );
        r.register(reg("a", 1), t0 + Duration::from_secs(10), 1000);
        assert!(r.heartbeat(
            "a",
            1,
            TelemetrySummary::default(),
            t0 + Duration::from_secs(12),
            2000
        ));
        assert_eq!(
            r.silence("a", t0 + Duration::from_secs(13), t0),
            (true, Duration::from_secs(1))
        );
        r.disconnected("a", 1);
        assert_eq!(
            r.silence("a", t0 + Duration::from_secs(40), t0),
            (false, Duration::from_secs(28)),
            "counted from the last heartbeat, not from the disconnection"
        );
    }

    #[test]
    fn restored_records_start_disconnected() {
        let t0 = Instant::now();
        let mut r = Registry::new([], Duration::from_secs(5));
        r.register(reg("a", 1), t0, 1000);
        let saved: Vec<_> = r.records().cloned().collect();
        let restored = Registry::new(saved, Duration::from_secs(5));
        let a = restored.get("a").unwrap();
        assert!(!a.connected);
        assert_eq!(a.first_seen_unix_ms, 1000);
    }
}
