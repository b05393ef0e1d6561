//! What is wrong with a host, and how likely it is to fail or run out because of it.
//!
//! Operator intents (a drain, a maintenance window opening within the lead time) hold at
//! once. The health trigger holds after its number of consecutive low heartbeats (counted
//! by the registry). Risk, exhaustion and error triggers must hold for `persist_ms` before
//! they count: the engine's [`Memory`] keeps since when each has held, and forgets it the
//! first tick it does not. A disconnected host has no triggers: losing it is failover's
//! business.

use std::collections::{BTreeMap, BTreeSet};

use understudy_common::telemetry::HealthLevel;

use super::{HostView, Memory, Settings};

/// Forecast metrics whose exhaustion is a trigger: memory and disk space, as shares of
/// capacity (the agent's own list). Disk busy time (`disk_u`) is not one: a disk busy for a
/// while is saturated, not used up, and a build or a backup makes it so on a healthy host.
const EXHAUSTIBLE: [&str; 2] = ["mem_u", "fs_used"];

/// A kind of trigger.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// An operator drains the host.
    Drain,
    /// A maintenance window opens soon or is open.
    Maintenance,
    /// Health below the threshold for long enough.
    Health,
    /// Failure risk within the horizon above the threshold.
    Risk,
    /// Memory or disk forecast to run out within the horizon.
    Exhaustion,
    /// Kernel or hardware errors above the rate.
    Errors,
}

impl TriggerKind {
    /// Its name in events and output.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Drain => "drain",
            TriggerKind::Maintenance => "maintenance",
            TriggerKind::Health => "health",
            TriggerKind::Risk => "risk",
            TriggerKind::Exhaustion => "exhaustion",
            TriggerKind::Errors => "errors",
        }
    }

    /// Whether an operator asked for it: such moves are made whatever the mode, score,
    /// cool-down or budget.
    pub fn is_operator(self) -> bool {
        matches!(self, TriggerKind::Drain | TriggerKind::Maintenance)
    }
}

/// A trigger that holds on a host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    /// Which.
    pub kind: TriggerKind,
    /// The host.
    pub host: String,
    /// How likely the host is to fail or run out because of it, 0–1.
    pub probability: f64,
    /// The inputs that crossed which thresholds, for people.
    pub detail: String,
}

fn trigger(kind: TriggerKind, host: &HostView, probability: f64, detail: String) -> Trigger {
    Trigger {
        kind,
        host: host.name.clone(),
        probability: probability.clamp(0.0, 1.0),
        detail,
    }
}

/// The triggers that hold on `host` at `now_ms`, before hysteresis.
fn raw(host: &HostView, s: &Settings, now_ms: u64) -> Vec<Trigger> {
    let mut out = Vec::new();
    if host.draining {
        out.push(trigger(
            TriggerKind::Drain,
            host,
            1.0,
            "the operator drains the host".into(),
        ));
    }
    if let Some(w) = host
        .maintenance
        .iter()
        .find(|w| w.near(now_ms, s.maintenance_lead_ms))
    {
        let detail = if now_ms >= w.start_ms {
            format!("maintenance window open: {}", w.reason)
        } else {
            format!(
                "maintenance window opens in {} s: {}",
                (w.start_ms - now_ms) / 1000,
                w.reason
            )
        };
        out.push(trigger(TriggerKind::Maintenance, host, 1.0, detail));
    }
    let Some(h) = &host.health else {
        return out;
    };
    if let Some(below) = s.health_below {
        if h.level != HealthLevel::Degraded
            && h.score < below
            && host.low_health_beats >= s.health_heartbeats
        {
            out.push(trigger(
                TriggerKind::Health,
                host,
                1.0 - f64::from(h.score) / 100.0,
                format!(
                    "health {} below {below} for {} heartbeats",
                    h.score, host.low_health_beats
                ),
            ));
        }
    }
    if let (Some(above), Some(r)) = (s.risk_above, &h.risk) {
        if r.probability > above {
            out.push(trigger(
                TriggerKind::Risk,
                host,
                f64::from(r.probability),
                format!(
                    "failure risk {:.2} within {} s ({}) above {above}",
                    r.probability, r.horizon_secs, r.cause
                ),
            ));
        }
    }
    if let Some(share) = s.exhaustion_share {
        let worst = h
            .forecasts
            .iter()
            .filter(|f| EXHAUSTIBLE.contains(&f.metric.as_str()) && f.upper >= share)
            .max_by(|a, b| a.upper.total_cmp(&b.upper));
        if let Some(f) = worst {
            // The central estimate crossing is likelier than only the p90 bound crossing.
            let p = if f.central >= share { 0.9 } else { 0.5 };
            out.push(trigger(
                TriggerKind::Exhaustion,
                host,
                p,
                format!(
                    "{} forecast to reach {:.2} (p90; central {:.2}) within {} s, at or above {share}",
                    f.metric, f.upper, f.central, f.horizon_secs
                ),
            ));
        }
    }
    if let Some(limit) = s.errors_per_hour {
        let total: u32 = h.kernel_errors.iter().map(|(_, n)| n).sum();
        if limit > 0 && total >= limit {
            let kinds: Vec<String> = h
                .kernel_errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            out.push(trigger(
                TriggerKind::Errors,
                host,
                (f64::from(total) / (2.0 * f64::from(limit))).max(0.5),
                format!(
                    "{total} kernel errors in the last hour ({}), at or above {limit}",
                    kinds.join(", ")
                ),
            ));
        }
    }
    out
}

/// The connected hosts that show trouble now, whether or not it has held long enough to be
/// a trigger: health below the threshold at the last heartbeat, a risk, an exhaustion
/// forecast or an error burst (operator intents are not trouble). A cause shared by many
/// hosts reaches each host's trigger up to a heartbeat apart; counted this way, the first
/// host past its count is not taken for the only one in trouble.
pub fn showing(hosts: &[HostView], s: &Settings, now_ms: u64) -> BTreeSet<String> {
    let eager = Settings {
        health_heartbeats: s.health_heartbeats.min(1),
        ..s.clone()
    };
    hosts
        .iter()
        .filter(|h| h.connected)
        .filter(|h| raw(h, &eager, now_ms).iter().any(|t| !t.kind.is_operator()))
        .map(|h| h.name.clone())
        .collect()
}

fn needs_persisting(kind: TriggerKind) -> bool {
    matches!(
        kind,
        TriggerKind::Risk | TriggerKind::Exhaustion | TriggerKind::Errors
    )
}

/// The strongest trigger that holds on each connected host at `now_ms`, after hysteresis;
/// `memory` is brought up to date.
pub fn evaluate(
    hosts: &[HostView],
    s: &Settings,
    memory: &mut Memory,
    now_ms: u64,
) -> BTreeMap<String, Trigger> {
    let mut holding: BTreeMap<(String, TriggerKind), u64> = BTreeMap::new();
    let mut out: BTreeMap<String, Trigger> = BTreeMap::new();
    for host in hosts.iter().filter(|h| h.connected) {
        for t in raw(host, s, now_ms) {
            let key = (host.name.clone(), t.kind);
            let since = memory.since_ms.get(&key).copied().unwrap_or(now_ms);
            holding.insert(key, since);
            if needs_persisting(t.kind) && now_ms.saturating_sub(since) < s.persist_ms {
                continue;
            }
            let stronger = out.get(&host.name).is_none_or(|o| {
                (t.kind.is_operator(), t.probability) > (o.kind.is_operator(), o.probability)
            });
            if stronger {
                out.insert(host.name.clone(), t);
            }
        }
    }
    memory.since_ms = holding;
    out
}
