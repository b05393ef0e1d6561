//! Failover decisions and leases, free of I/O.
//!
//! A workload runs on its primary under a **lease** the coordinator renews with every
//! heartbeat answer while it records that host as the primary (`fence_after` long; without
//! a bound when its failover is manual). A host silent for `failover_after` — counted from
//! the last time this coordinator heard from it, or from its own start — has each of its
//! workloads **failed over**: restored on its shadow from the newest committed epoch, if the
//! shadow is connected and holds the recorded recovery point. Otherwise the workload is
//! **lost**, with the reason, and nothing older than the recorded recovery point is ever
//! restored. The timing rule (`failover_after > fence_after + heartbeat timeout + margin`,
//! checked by the config) makes sure a lost primary froze its copy first.

use std::collections::BTreeSet;
use std::time::Duration;

use understudy_common::protocol::Lease;
use understudy_common::workload::FailoverMode;

use super::{WorkloadRecord, WorkloadState};

/// The failover settings (`[failover]` in coordinator.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether failovers happen by themselves at all.
    pub mode: FailoverMode,
    /// The lease.
    pub fence_after: Duration,
    /// How long a host must be silent before its workloads move.
    pub failover_after: Duration,
    /// How long a shadow's host must be silent before another host takes its place (zero:
    /// never; the shadow waits for its host, or a drain).
    pub replace_shadow_after: Duration,
}

impl Settings {
    fn automatic(&self, rec: &WorkloadRecord) -> bool {
        self.mode == FailoverMode::Auto && rec.spec.failover == FailoverMode::Auto
    }
}

/// What the coordinator knows of a host right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostNow {
    /// It has a live connection.
    pub connected: bool,
    /// Time since this coordinator last heard from it (or since it started, if never).
    pub silent_for: Duration,
}

/// A decision about one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Restore it on `to`, its shadow.
    FailOver {
        /// The workload.
        workload: String,
        /// The lost primary.
        from: String,
        /// The shadow that takes over.
        to: String,
    },
    /// Nothing can restore it now: say so.
    Lose {
        /// The workload.
        workload: String,
        /// Why, with the recovery point.
        why: String,
    },
}

/// How long after its `failures`-th failed failover in a row a workload's failover is tried
/// again: 2 s, doubling each time, at most a minute (a restore that fails may be fixed on the
/// shadow, and a lost workload must come back when it is; asking every sweep only fills the
/// logs and burns generations).
pub fn retry_after(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(2);
    const MOST: Duration = Duration::from_secs(60);
    FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MOST)
}

/// States in which a copy may run on the recorded primary.
fn may_run(state: &WorkloadState) -> bool {
    matches!(
        state,
        WorkloadState::Running
            | WorkloadState::Starting
            | WorkloadState::Migrating
            | WorkloadState::Lost(_)
    )
}

/// The lease of `spec`'s workload, ms: `fence_after` when it fails over by itself, none
/// otherwise.
pub fn lease_ms(
    spec: &understudy_common::workload::WorkloadSpec,
    settings: &Settings,
) -> Option<u64> {
    (settings.mode == FailoverMode::Auto && spec.failover == FailoverMode::Auto)
        .then(|| u64::try_from(settings.fence_after.as_millis()).unwrap_or(u64::MAX))
}

/// The leases `host` holds: one per workload it is the recorded primary of.
pub fn leases<'a>(
    host: &str,
    records: impl IntoIterator<Item = &'a WorkloadRecord>,
    settings: &Settings,
) -> Vec<Lease> {
    records
        .into_iter()
        .filter(|r| r.primary == host && may_run(&r.state))
        .map(|r| Lease {
            workload: r.spec.name.clone(),
            generation: r.generation,
            valid_ms: lease_ms(&r.spec, settings),
            data_key: None,
        })
        .collect()
}

/// Which idle workloads whose primary is lost must fail over now, and which are lost.
pub fn decide<'a>(
    records: impl IntoIterator<Item = &'a WorkloadRecord>,
    host: impl Fn(&str) -> HostNow,
    idle: &BTreeSet<String>,
    settings: &Settings,
) -> Vec<Decision> {
    let mut out = Vec::new();
    for r in records {
        let name = &r.spec.name;
        if !idle.contains(name) || !may_run(&r.state) || !settings.automatic(r) {
            continue;
        }
        let primary = host(&r.primary);
        if primary.connected || primary.silent_for < settings.failover_after {
            continue;
        }
        // With several shadows: the connected one holding the newest epoch.
        let best = r
            .more_shadows
            .hosts
            .iter()
            .chain(&r.shadow)
            .filter(|s| host(s).connected)
            .filter_map(|s| r.epoch_on(s).map(|e| (e, s)))
            .max_by_key(|(e, _)| *e);
        if let Some((_, s)) = best.filter(|_| !r.more_shadows.hosts.is_empty()) {
            out.push(Decision::FailOver {
                workload: name.clone(),
                from: r.primary.clone(),
                to: s.clone(),
            });
            continue;
        }
        let point = r.last_epoch.as_ref();
        let shadow = r.shadow.as_deref().map(|s| (s, host(s)));
        let why = match (shadow, point) {
            (Some((s, h)), Some(e)) if h.connected && e.shadow == s => {
                out.push(Decision::FailOver {
                    workload: name.clone(),
                    from: r.primary.clone(),
                    to: s.to_owned(),
                });
                continue;
            }
            (Some((s, _)), Some(e)) if e.shadow == s => format!(
                "{} unreachable for {} s and its shadow {s}, which holds the recovery point (epoch {}), unreachable too; it is restored when either returns",
                r.primary,
                primary.silent_for.as_secs(),
                e.epoch
            ),
            (Some((s, _)), _) => format!(
                "{} unreachable for {} s and its shadow {s} holds no committed epoch; nothing can restore it until {} returns",
                r.primary,
                primary.silent_for.as_secs(),
                r.primary
            ),
            (None, _) => format!(
                "{} unreachable for {} s and it has no shadow; nothing can restore it until {} returns",
                r.primary,
                primary.silent_for.as_secs(),
                r.primary
            ),
        };
        // Declared once; a failover still follows as soon as one becomes possible.
        if !matches!(r.state, WorkloadState::Lost(_)) {
            out.push(Decision::Lose {
                workload: name.clone(),
                why,
            });
        }
    }
    out
}

/// A shadow to replace: its host has been silent for long enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedShadow {
    /// The workload.
    pub workload: String,
    /// The silent shadow host.
    pub host: String,
    /// How long it has been silent.
    pub silent_for: Duration,
}

/// Which idle, running workloads whose primary is connected have a shadow whose host has
/// been silent for `replace_shadow_after` or longer: that shadow is replaced by another
/// host (one per workload at a time, the first such shadow), so that the workload is
/// protected again rather than waiting for a host that may never come back. A workload
/// whose primary is away is left as it is: its shadows are what a failover restores from.
pub fn stranded_shadows<'a>(
    records: impl IntoIterator<Item = &'a WorkloadRecord>,
    host: impl Fn(&str) -> HostNow,
    idle: &BTreeSet<String>,
    settings: &Settings,
) -> Vec<StrandedShadow> {
    if settings.replace_shadow_after.is_zero() {
        return Vec::new();
    }
    records
        .into_iter()
        .filter(|r| {
            idle.contains(&r.spec.name)
                && r.state == WorkloadState::Running
                && host(&r.primary).connected
        })
        .filter_map(|r| {
            r.shadows().into_iter().find_map(|s| {
                let h = host(s);
                (!h.connected && h.silent_for >= settings.replace_shadow_after).then(|| {
                    StrandedShadow {
                        workload: r.spec.name.clone(),
                        host: s.to_owned(),
                        silent_for: h.silent_for,
                    }
                })
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;
