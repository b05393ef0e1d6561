//! The coordinator's own counters (connections, heartbeats, refusals, protocol errors,
//! events by kind),
//! rendered in the Prometheus text format (version 0.0.4, as node_exporter serves it).
//! The fleet's state is rendered beside them by `fleet_metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use understudy_common::prom::{family, sample};
use understudy_common::tls::Refusal;

/// A gauge that can be set.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64
    }
}

/// A counter that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64
    }
}

/// Every metric the coordinator counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Agents with a live connection.
    pub agents_connected: Gauge,
    /// Hosts in the registry, connected or not.
    pub hosts_known: Gauge,
    /// Heartbeats recorded.
    pub heartbeats: Counter,
    /// Authenticated connections closed for protocol violations.
    pub protocol_errors: Counter,
    /// Refused connections, indexed like `Refusal::ALL`.
    refused: [Counter; Refusal::ALL.len()],
    /// Events recorded, indexed like [`EVENT_KINDS`].
    events: [Counter; EVENT_KINDS.len()],
}

/// The kinds of event the coordinator records (`other` for any not listed).
pub const EVENT_KINDS: [&str; 8] = [
    "trigger",
    "decision",
    "move",
    "reshadow",
    "drain",
    "cordon",
    "maintenance",
    "other",
];

impl Metrics {
    /// Every metric at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one refused connection.
    pub fn refused(&self, reason: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == reason) {
            self.refused[i].inc();
        }
    }

    /// Counts one event of `kind`.
    pub fn event(&self, kind: &str) {
        let i = EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(EVENT_KINDS.len() - 1);
        self.events[i].inc();
    }

    /// The text exposition of every metric, every refusal reason present from the start.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let o = &mut out;
        family(
            o,
            "understudy_agents_connected",
            "gauge",
            "Agents with a live, heartbeating connection.",
        );
        sample(
            o,
            "understudy_agents_connected",
            &[],
            self.agents_connected.get(),
        );
        family(
            o,
            "understudy_hosts_known",
            "gauge",
            "Hosts in the registry, connected or not.",
        );
        sample(o, "understudy_hosts_known", &[], self.hosts_known.get());
        family(
            o,
            "understudy_heartbeats_received_total",
            "counter",
            "Heartbeats received from agents.",
        );
        sample(
            o,
            "understudy_heartbeats_received_total",
            &[],
            self.heartbeats.get(),
        );
        family(
            o,
            "understudy_protocol_errors_total",
            "counter",
            "Authenticated connections closed because the peer broke the protocol.",
        );
        sample(
            o,
            "understudy_protocol_errors_total",
            &[],
            self.protocol_errors.get(),
        );
        family(
            o,
            "understudy_connections_refused_total",
            "counter",
            "Connections refused, by reason.",
        );
        for (r, n) in Refusal::ALL.iter().zip(&self.refused) {
            sample(
                o,
                "understudy_connections_refused_total",
                &[("reason", r.label())],
                n.get(),
            );
        }
        family(
            o,
            "understudy_events_total",
            "counter",
            "Events recorded (decisions, triggers, moves, operator actions), by kind.",
        );
        for (k, n) in EVENT_KINDS.iter().zip(&self.events) {
            sample(o, "understudy_events_total", &[("kind", k)], n.get());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_reason() {
        let m = Metrics::new();
        m.refused(Refusal::UnknownCa);
        m.refused(Refusal::UnknownCa);
        let text = m.render();
        assert!(
            text.contains("understudy_connections_refused_total{reason=\"unknown_ca\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("understudy_connections_refused_total{reason=\"expired\"} 0\n"));
        assert!(
            text.contains("# TYPE understudy_connections_refused_total counter\n"),
            "the family is named as its samples are, as the 0.0.4 text format wants: {text}"
        );
    }
}
