//! The coordinator's Prometheus metrics, rendered in the text exposition format.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;
use understudy_common::tls::Refusal;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Every metric the coordinator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Agents with a live connection.
    pub agents_connected: Gauge,
    /// Hosts in the registry, connected or not.
    pub hosts_known: Gauge,
    /// Heartbeats recorded.
    pub heartbeats: Counter,
    /// Authenticated connections closed for protocol violations.
    pub protocol_errors: Counter,
    refused: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// Registers every metric, with every refusal reason present from the start at 0.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let agents_connected = Gauge::default();
        let hosts_known = Gauge::default();
        let heartbeats = Counter::default();
        let protocol_errors = Counter::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "understudy_agents_connected",
            "Agents with a live, heartbeating connection",
            agents_connected.clone(),
        );
        registry.register(
            "understudy_hosts_known",
            "Hosts in the registry, connected or not",
            hosts_known.clone(),
        );
        registry.register(
            "understudy_heartbeats_received",
            "Heartbeats received from agents",
            heartbeats.clone(),
        );
        registry.register(
            "understudy_protocol_errors",
            "Authenticated connections closed because the peer broke the protocol",
            protocol_errors.clone(),
        );
        registry.register(
            "understudy_connections_refused",
            "Connections refused, by reason",
            refused.clone(),
        );
        for r in Refusal::ALL {
            let _ = refused.get_or_create(&ReasonLabel { reason: r.label() });
        }
        Metrics {
            registry,
            agents_connected,
            hosts_known,
            heartbeats,
            protocol_errors,
            refused,
        }
    }

    /// Counts one refused connection.
    pub fn refused(&self, reason: Refusal) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
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
            text.contains("understudy_connections_refused_total{reason=\"unknown_ca\"} 2"),
            "{text}"
        );
        assert!(text.contains("understudy_connections_refused_total{reason=\"expired\"} 0"));
    }
}
