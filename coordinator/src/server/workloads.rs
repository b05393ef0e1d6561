//! Carrying out workload decisions: creating workloads, driving switchovers through the
//! migration state machine, and applying agents' reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use understudy_common::workload::{Order, OrderReply, Report, WorkloadSpec};

use super::{orders, wall_ms, Shared};
use crate::workloads::migration::{Migration, Outcome, Phase, Step};
use crate::workloads::placement::pick_shadow;
use crate::workloads::{MigrationSummary, WorkloadRecord, WorkloadState};

const ORDER_TIMEOUT: Duration = Duration::from_secs(30);

/// An API error: HTTP status and a message naming the field or value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

fn err(status: u16, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// Body of `POST /v1/workloads`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// What to run.
    pub spec: WorkloadSpec,
    /// Host to run it on.
    pub host: String,
    /// Host to shadow it on (default: chosen by placement).
    #[serde(default)]
    pub shadow: Option<String>,
}

/// Body of `POST /v1/workloads/{name}/migrate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// Target host (default: the current shadow).
    #[serde(default)]
    pub to: Option<String>,
    /// Only say what would happen.
    #[serde(default)]
    pub dry_run: bool,
}

/// A migration as the API shows it, live and after it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// The workload.
    pub workload: String,
    /// Old primary.
    pub from: String,
    /// Target.
    pub to: String,
    /// Generation the switchover runs under.
    pub generation: u64,
    /// Current phase.
    pub phase: Phase,
    /// When it started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Milliseconds since it started (or its total, once finished).
    pub elapsed_ms: u64,
    /// Bytes of the epoch in flight sent so far.
    pub bytes_sent: u64,
    /// Bytes of the epoch in flight.
    pub bytes_total: u64,
    /// Estimated milliseconds until the transfer in flight completes.
    pub eta_ms: Option<u64>,
    /// "succeeded", "rolled back" or "failed" once finished.
    pub outcome: Option<String>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Freeze time, once measured.
    pub freeze_ms: Option<u64>,
    /// What the dry run or the plan says.
    pub plan: String,
}

/// Creates a workload: validates, places its shadow, starts it on its host.
pub async fn create(shared: &Arc<Shared>, req: CreateRequest) -> Result<WorkloadRecord, ApiError> {
    if let Some((field, reason)) = req.spec.problems().into_iter().next() {
        return Err(err(400, format!("{field}: {reason}")));
    }
    let name = req.spec.name.clone();
    if shared.workload(&name).is_some() {
        return Err(err(409, format!("workload {name:?} already exists")));
    }
    shared
        .peer(&req.host)
        .map_err(|e| err(400, format!("host: {e}")))?;
    let shadow = match &req.shadow {
        Some(s) if *s == req.host => {
            return Err(err(400, format!("shadow: {s:?} is the primary itself")))
        }
        Some(s) => {
            shared
                .peer(s)
                .map_err(|e| err(400, format!("shadow: {e}")))?;
            Some(s.clone())
        }
        None => pick_shadow(&name, &req.host, &shared.candidates()),
    };
    let record = WorkloadRecord {
        spec: req.spec.clone(),
        primary: req.host.clone(),
        shadow: shadow.clone(),
        generation: 1,
        state: WorkloadState::Starting,
        unprotected: shadow
            .is_none()
            .then(|| "no other connected host to shadow it on".to_string()),
        last_epoch: None,
        epochs: 0,
        created_unix_ms: wall_ms(),
        last_migration: None,
        restarts: 0,
        last_exit: None,
    };
    if !shared.insert_workload(record) {
        return Err(err(409, format!("workload {name:?} already exists")));
    }
    let shadow_peer = match &shadow {
        Some(s) => expect_shadow(shared, &name, 1, s, &req.host).await,
        None => None,
    };
    let order = Order::Start {
        spec: req.spec,
        generation: 1,
        shadow: shadow_peer.clone(),
    };
    let reply = orders::send(shared, &req.host, &order, ORDER_TIMEOUT).await;
    if let OrderReply::Invalid(e) = reply {
        // Nothing runs: forget the workload, and the shadow's expectation of it.
        shared.remove_workload(&name);
        if let Some(s) = &shadow_peer {
            let forget = Order::Remove {
                workload: name.clone(),
                generation: 1,
            };
            orders::send(shared, &s.name, &forget, ORDER_TIMEOUT).await;
        }
        return Err(err(400, format!("{}: {e}", req.host)));
    }
    let rec = shared.update_workload(&name, |r| {
        if shadow_peer.is_none() {
            r.shadow = None;
        }
        r.state = match reply {
            OrderReply::Done => WorkloadState::Running,
            OrderReply::Failed(e) => WorkloadState::Failed(e),
            other => WorkloadState::Failed(format!("unexpected reply {other:?}")),
        };
    });
    rec.ok_or_else(|| err(500, "workload vanished while starting"))
}

/// Tells `shadow` to accept epochs of `workload` from `primary`; returns how to reach it,
/// or `None` (and marks the workload unprotected) if it refused or is unreachable.
async fn expect_shadow(
    shared: &Arc<Shared>,
    workload: &str,
    generation: u64,
    shadow: &str,
    primary: &str,
) -> Option<understudy_common::workload::Peer> {
    let peer = match shared.peer(shadow) {
        Ok(p) => p,
        Err(e) => {
            shared.update_workload(workload, |r| r.unprotected = Some(e));
            return None;
        }
    };
    let spec = shared.workload(workload).map(|r| r.spec)?;
    let order = Order::ExpectShadow {
        spec,
        generation,
        primary: primary.to_owned(),
    };
    match orders::send(shared, shadow, &order, ORDER_TIMEOUT).await {
        OrderReply::Done => Some(peer),
        other => {
            let why = format!("shadow {shadow} refused: {other:?}");
            shared.update_workload(workload, |r| r.unprotected = Some(why));
            None
        }
    }
}

fn plan_text(rec: &WorkloadRecord, to: &str, new_shadow: Option<&str>) -> String {
    let (epoch, age, size) = rec.last_epoch.as_ref().map_or((0, 0, 0), |e| {
        (
            e.epoch,
            wall_ms().saturating_sub(e.committed_unix_ms),
            e.bytes_total,
        )
    });
    format!(
        "migrate {} from {} to {}: generation {} -> {}; one more epoch while running, then the final epoch with the workload stopped, restore on {to} (newest committed epoch now: {epoch}, {:.1} s old, {:.1} MiB); afterwards shadowed on {}",
        rec.spec.name,
        rec.primary,
        to,
        rec.generation,
        rec.generation + 1,
        age as f64 / 1000.0,
        size as f64 / (1024.0 * 1024.0),
        new_shadow.unwrap_or("nothing (no other host)")
    )
}

/// Validates and starts a switchover (or describes it, for a dry run).
pub async fn migrate(
    shared: &Arc<Shared>,
    name: &str,
    req: MigrateRequest,
) -> Result<MigrationStatus, ApiError> {
    let rec = shared
        .workload(name)
        .ok_or_else(|| err(404, format!("no workload named {name:?}")))?;
    match &rec.state {
        WorkloadState::Running => {}
        WorkloadState::Migrating => {
            return Err(err(409, format!("workload {name:?} is already migrating")))
        }
        other => {
            return Err(err(
                409,
                format!("workload {name:?} is not running ({other:?})"),
            ))
        }
    }
    let to = match (&req.to, &rec.shadow) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(err(
                409,
                format!("workload {name:?} has no shadow; pass --to HOST"),
            ))
        }
    };
    if to == rec.primary {
        return Err(err(400, format!("to: {to:?} already runs {name:?}")));
    }
    let to_peer = shared.peer(&to).map_err(|e| err(400, format!("to: {e}")))?;
    let reshadow = rec.shadow.as_deref() != Some(to.as_str());
    if rec.last_epoch.is_none() && !reshadow {
        return Err(err(
            409,
            format!("workload {name:?} has no committed epoch yet: nothing to restore from"),
        ));
    }
    let new_shadow = pick_shadow(name, &to, &shared.candidates());
    let mut plan = plan_text(&rec, &to, new_shadow.as_deref());
    if reshadow {
        plan = format!(
            "{to} is not the shadow of {name}: first make it the shadow and wait for a whole epoch there; then {plan}"
        );
    }
    let mut status = MigrationStatus {
        workload: name.to_owned(),
        from: rec.primary.clone(),
        to: to.clone(),
        generation: rec.generation + 1,
        phase: Phase::Sync,
        started_unix_ms: wall_ms(),
        elapsed_ms: 0,
        bytes_sent: 0,
        bytes_total: 0,
        eta_ms: None,
        outcome: None,
        error: None,
        freeze_ms: None,
        plan,
    };
    if req.dry_run {
        status.outcome = Some("dry run".into());
        return Ok(status);
    }
    // The commit point of the new generation: from here on, orders carry it.
    let generation = rec.generation + 1;
    shared.update_workload(name, |r| {
        r.generation = generation;
        r.state = WorkloadState::Migrating;
    });
    shared.set_migration(status.clone());
    let shared2 = shared.clone();
    let name2 = name.to_owned();
    tokio::spawn(async move {
        if reshadow {
            if let Err(e) = move_shadow(&shared2, &name2, &rec.primary, generation, &to_peer).await
            {
                finish_early(&shared2, &name2, &rec.primary, &to_peer.name, generation, e);
                return;
            }
        }
        drive(shared2, name2, rec.primary, to_peer, generation, new_shadow).await;
    });
    Ok(status)
}

/// How long a re-shadowed target may take to receive its first (whole) epoch.
const RESHADOW_TIMEOUT: Duration = Duration::from_secs(600);

/// Makes `to` the shadow of `name` and waits until an epoch is committed there.
async fn move_shadow(
    shared: &Arc<Shared>,
    name: &str,
    primary: &str,
    generation: u64,
    to: &understudy_common::workload::Peer,
) -> Result<(), String> {
    if expect_shadow(shared, name, generation, &to.name, primary)
        .await
        .is_none()
    {
        return Err(format!("{} did not accept to become the shadow", to.name));
    }
    let order = Order::SetShadow {
        workload: name.to_owned(),
        generation,
        shadow: to.clone(),
    };
    match orders::send(shared, primary, &order, ORDER_TIMEOUT).await {
        OrderReply::Done => {}
        other => {
            return Err(format!(
                "primary {primary} did not switch shadows: {other:?}"
            ))
        }
    }
    shared.update_workload(name, |r| r.shadow = Some(to.name.clone()));
    let started = Instant::now();
    loop {
        let committed_there = shared.workload(name).is_some_and(|r| {
            r.last_epoch
                .as_ref()
                .is_some_and(|e| e.shadow == to.name && e.generation == generation)
        });
        if committed_there {
            return Ok(());
        }
        if started.elapsed() > RESHADOW_TIMEOUT {
            return Err(format!(
                "no epoch reached {} within {RESHADOW_TIMEOUT:?}",
                to.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ends a migration that failed before anything was stopped.
fn finish_early(shared: &Shared, name: &str, from: &str, to: &str, generation: u64, error: String) {
    tracing::warn!(workload = name, "migration abandoned: {error}");
    let summary = MigrationSummary {
        from: from.to_owned(),
        to: to.to_owned(),
        generation,
        outcome: "rolled back".into(),
        error: Some(error.clone()),
        freeze_ms: None,
        total_ms: 0,
        finished_unix_ms: wall_ms(),
    };
    shared.update_workload(name, |r| {
        r.state = WorkloadState::Running;
        r.last_migration = Some(summary);
    });
    shared.update_migration(name, |m| {
        m.phase = Phase::Finished;
        m.outcome = Some("rolled back".into());
        m.error = Some(error);
    });
}

async fn drive(
    shared: Arc<Shared>,
    name: String,
    from: String,
    to: understudy_common::workload::Peer,
    generation: u64,
    new_shadow: Option<String>,
) {
    let started = Instant::now();
    let to_name = to.name.clone();
    // The target must accept the final epoch under the new generation.
    let ok = expect_shadow(&shared, &name, generation, &to_name, &from).await;
    let new_shadow_peer = match (&ok, &new_shadow) {
        (Some(_), Some(s)) => expect_shadow(&shared, &name, generation, s, &to_name).await,
        _ => None,
    };
    let (mut machine, mut step) =
        Migration::start(&name, &from, to, generation, new_shadow_peer.clone());
    if ok.is_none() {
        step = machine.on_reply(
            OrderReply::Failed(format!("target {to_name} did not accept the epochs")),
            Instant::now(),
        );
    }
    let outcome = loop {
        match step {
            Step::Send {
                host,
                order,
                timeout,
            } => {
                shared.update_migration(&name, |m| {
                    m.phase = machine.phase();
                    m.bytes_sent = 0;
                    m.bytes_total = 0;
                });
                let reply = orders::send(&shared, &host, &order, timeout).await;
                step = machine.on_reply(reply, Instant::now());
            }
            Step::Finished(outcome) => break outcome,
        }
    };
    let total_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let freeze_ms = machine
        .freeze()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (label, error) = match &outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::RolledBack(e) => ("rolled back", Some(e.clone())),
        Outcome::Failed(e) => ("failed", Some(e.clone())),
    };
    tracing::info!(workload = %name, from = %from, to = %to_name, outcome = label, ?freeze_ms, "migration finished");
    let summary = MigrationSummary {
        from: from.clone(),
        to: to_name.clone(),
        generation,
        outcome: label.into(),
        error: error.clone(),
        freeze_ms,
        total_ms,
        finished_unix_ms: wall_ms(),
    };
    shared.update_workload(&name, |r| {
        match &outcome {
            Outcome::Succeeded => {
                r.primary = to_name.clone();
                r.shadow = new_shadow_peer.as_ref().map(|p| p.name.clone());
                r.unprotected = r
                    .shadow
                    .is_none()
                    .then(|| "no other connected host to shadow it on".to_string());
                r.state = WorkloadState::Running;
            }
            Outcome::RolledBack(_) => r.state = WorkloadState::Running,
            Outcome::Failed(e) => r.state = WorkloadState::Failed(e.clone()),
        }
        r.last_migration = Some(summary);
    });
    shared.update_migration(&name, |m| {
        m.phase = Phase::Finished;
        m.outcome = Some(label.into());
        m.error = error;
        m.freeze_ms = freeze_ms;
        m.elapsed_ms = total_ms;
        m.eta_ms = None;
    });
}

/// Deletes a workload: stops it on its primary, drops its epochs on its shadow, forgets
/// its record. Refused while a switchover is running.
pub async fn delete(shared: &Arc<Shared>, name: &str) -> Result<WorkloadRecord, ApiError> {
    let rec = shared
        .workload(name)
        .ok_or_else(|| err(404, format!("no workload named {name:?}")))?;
    if rec.state == WorkloadState::Migrating {
        return Err(err(
            409,
            format!("workload {name:?} is migrating; delete it when the switchover has ended"),
        ));
    }
    let order = Order::Remove {
        workload: name.to_owned(),
        generation: rec.generation,
    };
    if let OrderReply::Failed(e) = orders::send(shared, &rec.primary, &order, ORDER_TIMEOUT).await {
        return Err(err(
            409,
            format!(
                "primary {} did not stop {name:?} ({e}); nothing was deleted",
                rec.primary
            ),
        ));
    }
    if let Some(shadow) = &rec.shadow {
        let _ = orders::send(shared, shadow, &order, ORDER_TIMEOUT).await;
    }
    shared.remove_workload(name);
    Ok(rec)
}

/// Re-sends `ExpectShadow` for every running workload shadowed on `host` (after it
/// registers: a restarted agent has forgotten them).
pub async fn reshadow_host(shared: Arc<Shared>, host: String) {
    let shadowed: Vec<WorkloadRecord> = shared
        .workload_list()
        .into_iter()
        .filter(|w| w.shadow.as_deref() == Some(host.as_str()) && w.state == WorkloadState::Running)
        .collect();
    for w in shadowed {
        if expect_shadow(&shared, &w.spec.name, w.generation, &host, &w.primary)
            .await
            .is_some()
        {
            tracing::info!(workload = %w.spec.name, shadow = %host, "shadow re-armed after reconnect");
        }
    }
}

/// Applies a report from agent `host`.
pub fn on_report(shared: &Shared, host: &str, report: Report) {
    match report {
        Report::EpochCommitted(r) => {
            let name = r.workload.clone();
            shared.update_workload(&name, |w| {
                if w.primary == host {
                    w.epoch_committed(r);
                }
            });
        }
        Report::Progress {
            workload,
            generation,
            sent,
            total,
        } => shared.update_migration(&workload, |m| {
            if m.generation == generation && m.outcome.is_none() {
                m.bytes_sent = sent;
                m.bytes_total = total;
                m.elapsed_ms = wall_ms().saturating_sub(m.started_unix_ms);
            }
        }),
        Report::Unprotected {
            workload,
            generation,
            reason,
        } => {
            shared.update_workload(&workload, |w| {
                if w.primary == host && w.generation == generation {
                    w.unprotected = Some(reason);
                }
            });
        }
        Report::Restarted {
            workload,
            generation,
            status,
            restarts: _,
        } => {
            shared.update_workload(&workload, |w| {
                if w.primary == host && w.generation == generation {
                    w.restarts += 1;
                    w.last_exit = Some((status, wall_ms()));
                    if matches!(w.state, WorkloadState::Exited(_)) {
                        w.state = WorkloadState::Running;
                    }
                }
            });
        }
        Report::Exited {
            workload,
            generation,
            status,
        } => {
            shared.update_workload(&workload, |w| {
                if w.primary == host
                    && w.generation == generation
                    && w.state != WorkloadState::Migrating
                {
                    w.last_exit = Some((status.clone(), wall_ms()));
                    w.state = WorkloadState::Exited(status);
                }
            });
        }
    }
}

/// Live view of a migration: fills in elapsed time and the transfer estimate.
pub fn live_status(shared: &Shared, name: &str) -> Option<MigrationStatus> {
    let mut m = shared.migration(name)?;
    if m.outcome.is_none() {
        m.elapsed_ms = wall_ms().saturating_sub(m.started_unix_ms);
        if m.bytes_sent > 0 && m.bytes_total > m.bytes_sent {
            // Proportional estimate over the migration so far: crude but monotone.
            let rate = m.bytes_sent as f64 / m.elapsed_ms.max(1) as f64;
            m.eta_ms = Some(((m.bytes_total - m.bytes_sent) as f64 / rate) as u64);
        }
    }
    Some(m)
}
