//! The decision engine at work. Every tick the server builds the fleet as the engine sees
//! it (the registry's hosts and their health, the workload records, what operators said
//! about hosts), runs [`crate::decide::decide`], starts the moves it decides through the
//! same switchover as `understudy migrate`, re-homes the shadows living on a drained host
//! or a host in trouble (not while most hosts are in trouble at once), gives a shadow to
//! a workload that runs with none (in act and advise mode), ends drains that are done or
//! past their deadline, and records as an event every decision that changed since the
//! last tick.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use understudy_common::workload::{Order, OrderReply};

use super::workloads::{expect_shadow, MigrateRequest};
use super::{orders, switchover, wall_ms, Shared};
use crate::decide::{
    decide, shared_trouble, triggers, unshadowed, Action, Decision, Fleet, HostView, Memory,
    WorkloadView,
};
use crate::workloads::WorkloadState;

const ORDER_TIMEOUT: Duration = Duration::from_secs(30);
/// A workload's move or shadow move is started at most this often (a failed one is tried
/// again after it, not at every sweep).
const RETRY_MS: u64 = 10_000;

/// What the engine keeps between ticks.
#[derive(Debug, Default)]
pub struct EngineState {
    memory: Memory,
    /// What was last said about each workload, so that only a change is an event.
    said: HashMap<String, String>,
    /// When the automatic moves of the last hour started.
    recent_moves_ms: Vec<u64>,
    /// Consecutive heartbeats below the health trigger, per host.
    low_beats: HashMap<String, u32>,
    /// Moves decided whose switchover has not taken the workload yet.
    starting: std::collections::HashSet<String>,
    /// Hosts an automatic trigger holds on, as of the last tick: no placement there.
    troubled: std::collections::HashSet<String>,
    /// When a move or shadow move of each workload was last started.
    tried_ms: HashMap<String, u64>,
    /// Why a first shadow could not be armed, per workload, as last said.
    shadow_failures: HashMap<String, String>,
}

impl EngineState {
    /// Whether `message`, a failure to arm a first shadow for `workload`, is new: one
    /// tried again every few seconds is said once, not each time.
    fn first_failure(&mut self, workload: &str, message: &str) -> bool {
        let before = self
            .shadow_failures
            .insert(workload.to_owned(), message.to_owned());
        before.as_deref() != Some(message)
    }

    /// Whether `workload` may be tried now (and notes that it is).
    fn try_now(&mut self, workload: &str, now: u64) -> bool {
        match self.tried_ms.get(workload) {
            Some(t) if now.saturating_sub(*t) < RETRY_MS => false,
            _ => {
                self.tried_ms.insert(workload.to_owned(), now);
                true
            }
        }
    }
}

impl Shared {
    fn engine(&self) -> MutexGuard<'_, EngineState> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `host`'s heartbeats in a row whose health score was below the trigger's.
    pub fn count_health(&self, host: &str, score: Option<u8>) {
        let below = self.decisions.health_below;
        let low = matches!((score, below), (Some(s), Some(b)) if s < b);
        let mut e = self.engine();
        let n = e.low_beats.entry(host.to_owned()).or_default();
        *n = if low { n.saturating_add(1) } else { 0 };
    }

    /// Hosts in trouble by an automatic trigger, as of the last tick.
    pub fn troubled(&self) -> std::collections::HashSet<String> {
        self.engine().troubled.clone()
    }

    /// The fleet as the engine sees it now.
    pub fn fleet(&self) -> Fleet {
        let admin: HashMap<String, crate::admin::HostAdmin> = self
            .host_admins()
            .into_iter()
            .map(|a| (a.host.clone(), a))
            .collect();
        let (low_beats, recent_moves_ms, starting) = {
            let e = self.engine();
            (
                e.low_beats.clone(),
                e.recent_moves_ms.clone(),
                e.starting.clone(),
            )
        };
        let zones = self.zones();
        let hosts = self
            .hosts()
            .into_iter()
            .map(|r| {
                let t = r.telemetry.clone().unwrap_or_default();
                let a = admin.get(&r.name);
                #[allow(clippy::cast_precision_loss)] // a share
                let memory_used = if t.memory_total_bytes == 0 {
                    0.0
                } else {
                    t.memory_used_bytes as f32 / t.memory_total_bytes as f32
                };
                HostView {
                    connected: r.connected,
                    health: t.health.clone(),
                    low_health_beats: low_beats.get(&r.name).copied().unwrap_or(0),
                    memory_bytes: t.memory_total_bytes,
                    memory_used,
                    cordoned: a.is_some_and(|a| a.cordoned),
                    draining: a.is_some_and(|a| a.drain.is_some()),
                    max_moves: a.and_then(|a| a.drain.as_ref()).map(|d| d.parallel),
                    maintenance: a
                        .map(|a| a.maintenance.iter().map(|(_, w)| w.clone()).collect())
                        .unwrap_or_default(),
                    zone: zones.get(&r.name).cloned(),
                    name: r.name,
                }
            })
            .collect();
        let mut speeds = Vec::new();
        let workloads = self
            .workload_list()
            .into_iter()
            .map(|r| {
                let e = r.last_epoch.as_ref();
                if let Some(e) = e.filter(|e| e.transfer_ms > 0 && e.bytes_sent > 0) {
                    speeds.push(e.bytes_sent as f64 * 1000.0 / e.transfer_ms as f64);
                }
                let interval_s = (r.spec.interval_ms.max(1) as f64) / 1000.0;
                WorkloadView {
                    running: r.state == WorkloadState::Running,
                    moving: r.state == WorkloadState::Migrating
                        || self.is_claimed(&r.spec.name)
                        || starting.contains(&r.spec.name),
                    priority: r.spec.priority.weight(),
                    bytes: e.map_or(0, |e| e.bytes_total),
                    dirty_bytes_per_s: e.map_or(0.0, |e| e.bytes_changed as f64 / interval_s),
                    last_freeze_ms: r
                        .last_migration
                        .as_ref()
                        .and_then(|m| m.freeze_ms)
                        .or(e.map(|e| e.frozen_ms)),
                    last_move_ms: r.last_migration.as_ref().map(|m| m.finished_unix_ms),
                    shadow: r.shadow.clone(),
                    primary: r.primary.clone(),
                    name: r.spec.name,
                }
            })
            .collect();
        speeds.sort_by(f64::total_cmp);
        Fleet {
            hosts,
            workloads,
            recent_moves_ms,
            link_bytes_per_s: speeds.get(speeds.len() / 2).copied().unwrap_or(100e6),
        }
    }
}

/// What the engine would decide now, without acting or remembering anything.
pub fn plan(shared: &Shared) -> Vec<Decision> {
    let fleet = shared.fleet();
    let mut memory = shared.engine().memory.clone();
    decide(&fleet, &shared.decisions, &mut memory, wall_ms())
}

/// A stable summary of a decision: a change of it is an event.
fn summary(d: &Decision) -> String {
    let action = match &d.action {
        Action::Move { to } => format!("move to {to}"),
        Action::Advise { to, .. } => format!("advise a move to {to}"),
        Action::Hold { why } => format!("hold: {}", why.split(':').next().unwrap_or(why)),
    };
    format!("{} {action}", d.trigger.kind.as_str())
}

fn inputs(d: &Decision) -> Vec<(String, String)> {
    vec![
        ("trigger".into(), d.trigger.kind.as_str().into()),
        (
            "probability".into(),
            format!("{:.2}", d.trigger.probability),
        ),
        ("benefit".into(), format!("{:.2}", d.benefit)),
        ("cost".into(), format!("{:.2}", d.cost)),
        ("score".into(), format!("{:.2}", d.score)),
    ]
}

/// One round of decisions.
pub fn tick(shared: &Arc<Shared>) {
    let now = wall_ms();
    let fleet = shared.fleet();
    let shared_now;
    let decisions = {
        let mut e = shared.engine();
        e.recent_moves_ms
            .retain(|t| now.saturating_sub(*t) < 3_600_000);
        let mut look = e.memory.clone();
        let triggered = triggers::evaluate(&fleet.hosts, &shared.decisions, &mut look, now);
        shared_now = shared_trouble(&fleet.hosts, &triggered, &shared.decisions, now);
        e.troubled = triggered
            .into_values()
            .filter(|t| !t.kind.is_operator())
            .map(|t| t.host)
            .collect();
        decide(&fleet, &shared.decisions, &mut e.memory, now)
    };
    if shared.decisions.mode == crate::decide::Mode::Act && shared_now.is_none() {
        // A shadow on a host in trouble moves before it is needed (not while most hosts
        // are in trouble at once: moving shadows among them escapes nothing either).
        let troubled = shared.troubled();
        for w in &fleet.workloads {
            if let Some(s) = w.shadow.as_ref().filter(|s| troubled.contains(*s)) {
                if w.running && !w.moving {
                    reshadow(shared, &w.name, Some((s, "in trouble")));
                }
            }
        }
    }
    if shared.decisions.mode != crate::decide::Mode::Off {
        // A workload placed or moved while no host was free to shadow it gets one now.
        for w in unshadowed(&fleet) {
            reshadow(shared, &w.name, None);
        }
    }
    // A shadow whose host has been silent for `replace_shadow_after` is replaced, whatever
    // the mode: like a failover, it keeps the workload protected.
    for s in shared.stranded_shadows() {
        let why = format!("unreachable for {} s", s.silent_for.as_secs());
        reshadow(shared, &s.workload, Some((&s.host, &why)));
    }
    let mut said_now = HashMap::new();
    for d in &decisions {
        let text = summary(d);
        let changed = shared.engine().said.get(&d.workload) != Some(&text);
        said_now.insert(d.workload.clone(), text);
        let subject = (Some(d.from.as_str()), Some(d.workload.as_str()));
        match &d.action {
            Action::Move { to } => {
                if !shared.engine().try_now(&d.workload, now) {
                    continue;
                }
                if !d.trigger.kind.is_operator() {
                    shared.engine().recent_moves_ms.push(now);
                }
                shared.event(
                    "move",
                    subject,
                    format!(
                        "moving {} from {} to {}: {}",
                        d.workload, d.from, to, d.trigger.detail
                    ),
                    inputs(d),
                );
                start_move(shared, &d.workload, to);
            }
            Action::Advise { to, why } if changed => shared.event(
                "decision",
                subject,
                format!(
                    "{} should move from {} to {} ({}), not moved: {why}",
                    d.workload, d.from, to, d.trigger.detail
                ),
                inputs(d),
            ),
            Action::Hold { why } if changed => shared.event(
                "decision",
                subject,
                format!(
                    "{} stays on {} ({}): {why}",
                    d.workload, d.from, d.trigger.detail
                ),
                inputs(d),
            ),
            _ => {}
        }
    }
    shared.engine().said = said_now;
    drains(shared, now);
}

fn start_move(shared: &Arc<Shared>, workload: &str, to: &str) {
    shared.engine().starting.insert(workload.to_owned());
    let (shared, workload) = (shared.clone(), workload.to_owned());
    let req = MigrateRequest {
        to: Some(to.to_owned()),
        dry_run: false,
        // The engine's moves leave a host in trouble, which may not live through a copy.
        post_copy: false,
    };
    tokio::spawn(async move {
        let started = switchover::migrate(&shared, &workload, req).await;
        // Started, the switchover holds the workload; or it did not start.
        shared.engine().starting.remove(&workload);
        if let Err(e) = started {
            shared.event(
                "move",
                (None, Some(&workload)),
                format!("the move of {workload} did not start: {}", e.message),
                Vec::new(),
            );
        }
    });
}

/// Re-homes the shadows on drained hosts, and ends the drains that are done or late.
fn drains(shared: &Arc<Shared>, now: u64) {
    for admin in shared.host_admins() {
        let Some(drain) = admin.drain.clone() else {
            continue;
        };
        let host = admin.host.clone();
        let status = shared.drain_status(&host);
        for name in &status.shadows_left {
            reshadow(shared, name, Some((&host, "drained")));
        }
        if status.primaries_left.is_empty() && status.shadows_left.is_empty() {
            shared.update_host_admin(&host, |a| a.drain = None);
            shared.event(
                "drain",
                (Some(&host), None),
                format!(
                    "{host} drained: {} workloads moved off; it stays cordoned",
                    drain.workloads.len()
                ),
                Vec::new(),
            );
        } else if drain.deadline_unix_ms.is_some_and(|d| now >= d) {
            shared.update_host_admin(&host, |a| a.drain = None);
            let left: Vec<String> = status
                .primaries_left
                .iter()
                .map(|w| {
                    let why = shared
                        .engine()
                        .said
                        .get(w)
                        .cloned()
                        .unwrap_or_else(|| "not considered".into());
                    format!("{w} ({why})")
                })
                .chain(status.shadows_left.iter().map(|w| format!("shadow of {w}")))
                .collect();
            shared.event(
                "drain",
                (Some(&host), None),
                format!(
                    "the drain of {host} passed its deadline; left running there: {}",
                    left.join(", ")
                ),
                Vec::new(),
            );
        }
    }
}

/// Gives `workload` another shadow in place of the one on `from`'s host (and why it moves:
/// drained, in trouble), or, with no `from`, a first one.
fn reshadow(shared: &Arc<Shared>, workload: &str, from: Option<(&str, &str)>) {
    let (host, why) = (
        from.map(|(h, _)| h),
        from.map_or_else(String::new, |(_, why)| why.to_owned()),
    );
    let Some(rec) = shared.workload(workload) else {
        return;
    };
    if rec.state != WorkloadState::Running || !shared.engine().try_now(workload, wall_ms()) {
        return;
    }
    let Ok(claim) = shared.claim(workload, "a shadow move") else {
        return;
    };
    // Not a host that already holds one of its shadows.
    let Some(to) = shared.pick_shadow(workload, &rec.primary, &rec.shadows()) else {
        drop(claim);
        return;
    };
    // The same shadows, with `to` in `host`'s place, or first.
    let shadows: Vec<String> = match host {
        Some(host) => rec
            .shadows()
            .into_iter()
            .map(|h| if h == host { to.clone() } else { h.to_owned() })
            .collect(),
        None => std::iter::once(to.clone())
            .chain(rec.shadows().into_iter().map(str::to_owned))
            .collect(),
    };
    let (shared, workload, host) = (shared.clone(), workload.to_owned(), host.map(str::to_owned));
    tokio::spawn(async move {
        let _claim = claim;
        let result = async {
            let peer = expect_shadow(&shared, &workload, rec.generation, &to, &rec.primary).await?;
            let mut peers = Vec::new();
            for s in &shadows {
                if *s == to {
                    peers.push(peer.clone());
                } else {
                    peers.push(shared.peer(s)?);
                }
            }
            let order = Order::SetShadows {
                workload: workload.clone(),
                generation: rec.generation,
                shadows: peers,
            };
            match orders::send(&shared, &rec.primary, &order, ORDER_TIMEOUT).await {
                OrderReply::Done => Ok(()),
                other => Err(format!(
                    "primary {} did not switch shadows: {other}",
                    rec.primary
                )),
            }
        }
        .await;
        let message = match (&result, &host) {
            (Ok(()), _) => {
                shared.update_workload(&workload, |r| {
                    let mut all = shadows.clone().into_iter();
                    r.shadow = all.next();
                    r.more_shadows.hosts = all.collect();
                    r.more_shadows
                        .epochs
                        .retain(|(h, _)| Some(h) != host.as_ref());
                });
                shared.engine().shadow_failures.remove(&workload);
                match &host {
                    Some(h) => format!("{workload}'s shadow moved from {h} ({why}) to {to}"),
                    None => format!("{workload} had no shadow; {to} is its shadow now"),
                }
            }
            (Err(e), Some(h)) => {
                format!("{workload}'s shadow could not move from {h} to {to}: {e}")
            }
            (Err(e), None) => {
                format!("{workload} has no shadow, and {to} could not become it: {e}")
            }
        };
        let subject = host.as_deref().unwrap_or(&to);
        // A first shadow that keeps failing is tried again and again: said once.
        if host.is_none() && result.is_err() && !shared.engine().first_failure(&workload, &message)
        {
            return;
        }
        shared.event(
            "reshadow",
            (Some(subject), Some(&workload)),
            message,
            Vec::new(),
        );
    });
}
