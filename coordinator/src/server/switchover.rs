//! Carrying out planned switchovers: validating `migrate`, driving the
//! [`Migration`](crate::workloads::migration) state machine with real orders (persisting it
//! before every one), continuing the ones a restart interrupted, and the live view the CLI
//! polls.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use understudy_common::workload::{Order, OrderReply, Peer};

use super::records::Claim;
use super::workloads::{err, expect_shadow, ApiError, MigrateRequest, MigrationStatus};
use super::{orders, wall_ms, Shared};
use crate::workloads::failover::HostNow;
use crate::workloads::migration::{
    hold_for_reconnect, Delivery, Kind, Migration, Outcome, Phase, Step, RECONNECT_GRACE,
};
use crate::workloads::{MigrationSummary, WorkloadRecord, WorkloadState};

const ORDER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a re-shadowed target may take to receive its first (whole) epoch.
const RESHADOW_TIMEOUT: Duration = Duration::from_secs(600);

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

/// The live view of a migration from its machine.
pub fn status_of(m: &Migration, plan: String) -> MigrationStatus {
    MigrationStatus {
        workload: m.workload().to_owned(),
        from: m.from.clone(),
        to: m.to.name.clone(),
        generation: m.generation,
        phase: m.phase,
        started_unix_ms: m.started_unix_ms,
        elapsed_ms: 0,
        bytes_sent: 0,
        bytes_total: 0,
        eta_ms: None,
        outcome: m.outcome.as_ref().map(|o| o.label().to_owned()),
        error: m
            .outcome
            .as_ref()
            .and_then(|o| o.error().map(str::to_owned)),
        freeze_ms: m.freeze_ms,
        plan,
        waiting: m.waiting_for(),
    }
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
    // Held from here: a second migrate (or a delete) of the same workload gets 409.
    let claim = if req.dry_run {
        None
    } else {
        Some(shared.claim(name, "a migration").map_err(|e| err(409, e))?)
    };
    // Read again under the claim: what was checked is what is moved.
    let rec = shared.workload(name).unwrap_or(rec);
    match &rec.state {
        WorkloadState::Running => {}
        WorkloadState::Migrating => {
            return Err(err(409, format!("workload {name:?} is already migrating")))
        }
        other => {
            return Err(err(
                409,
                format!("workload {name:?} is not running ({})", other.name()),
            ))
        }
    }
    // With several shadows: the connected one holding the newest epoch.
    let best_shadow = rec
        .shadows()
        .into_iter()
        .filter(|s| shared.peer(s).is_ok())
        .max_by_key(|s| rec.epoch_on(s))
        .map(str::to_owned)
        .or_else(|| rec.shadow.clone());
    let to = match (&req.to, &best_shadow) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(err(
                409,
                format!("workload {name:?} has no shadow; pass --to HOST"),
            ))
        }
    };
    if req.post_copy && !rec.spec.data_dirs.is_empty() {
        return Err(err(
            400,
            format!("post_copy: {name:?} has data directories, which a post-copy move cannot carry (they must be cut at the instant its memory is); move it without --post-copy"),
        ));
    }
    if to == rec.primary {
        return Err(err(400, format!("to: {to:?} already runs {name:?}")));
    }
    let to_peer = shared.peer(&to).map_err(|e| err(400, format!("to: {e}")))?;
    let reshadow = !rec.is_shadow(&to);
    if rec.last_epoch.is_none() && !reshadow {
        return Err(err(
            409,
            format!("workload {name:?} has no committed epoch yet: nothing to restore from"),
        ));
    }
    // The new primary's first shadow: not one it has already.
    let others: Vec<&str> = rec.shadows().into_iter().filter(|s| *s != to).collect();
    let new_shadow = shared.pick_shadow(name, &to, &others);
    let mut plan = plan_text(&rec, &to, new_shadow.as_deref());
    if req.post_copy {
        plan = format!(
            "{plan}; by post-copy: the final dump leaves the memory out, {to} runs the workload at once and pulls its memory from {}, which must stay up until every page has arrived",
            rec.primary
        );
    }
    if reshadow {
        plan = format!(
            "{to} is not the shadow of {name}: first make it the shadow and wait for a whole epoch there; then {plan}"
        );
    }
    let generation = rec.generation + 1;
    let new_shadow_peer = new_shadow.as_ref().and_then(|s| shared.peer(s).ok());
    let start = if req.post_copy {
        Migration::start_post_copy
    } else {
        Migration::start
    };
    let (machine, step) = start(
        rec.spec.clone(),
        &rec.primary,
        to_peer.clone(),
        generation,
        new_shadow_peer,
        wall_ms(),
    );
    let mut status = status_of(&machine, plan);
    let Some(claim) = claim else {
        status.outcome = Some("dry run".into());
        return Ok(status);
    };
    // The commit point of the new generation: from here on, orders carry it.
    shared.save_migration(&machine, |r| r.state = WorkloadState::Migrating);
    shared.set_migration(status.clone());
    let shared2 = shared.clone();
    tokio::spawn(async move {
        if reshadow {
            if let Err(e) = move_shadow(&shared2, &machine, &to_peer).await {
                let mut machine = machine;
                let step = machine.on_delivery(Delivery::NotSent(e), wall_ms());
                drive(shared2, claim, machine, step).await;
                return;
            }
        }
        let (machine, step) = prepare(&shared2, machine, step).await;
        drive(shared2, claim, machine, step).await;
    });
    Ok(status)
}

/// Tells the target (and the new shadow) to accept epochs under the new generation; a
/// refusal turns the first step into a rollback.
async fn prepare(shared: &Arc<Shared>, mut m: Migration, step: Step) -> (Migration, Step) {
    let name = m.workload().to_owned();
    let to = m.to.name.clone();
    if let Err(why) = expect_shadow(shared, &name, m.generation, &to, &m.from).await {
        let step = m.on_delivery(
            Delivery::NotSent(format!("target {to} did not accept the epochs: {why}")),
            wall_ms(),
        );
        return (m, step);
    }
    if let Some(s) = m.new_shadow.clone() {
        if expect_shadow(shared, &name, m.generation, &s.name, &to)
            .await
            .is_err()
        {
            // The move can go on unshadowed; placement picks another shadow later.
            m.new_shadow = None;
        }
    }
    (m, step)
}

/// Makes `to` the shadow of the workload and waits until an epoch is committed there.
async fn move_shadow(shared: &Arc<Shared>, m: &Migration, to: &Peer) -> Result<(), String> {
    let name = m.workload();
    if let Err(why) = expect_shadow(shared, name, m.generation, &to.name, &m.from).await {
        return Err(format!(
            "{} did not accept to become the shadow: {why}",
            to.name
        ));
    }
    // The target replaces the first shadow; the others stay.
    let mut shadows = vec![to.clone()];
    for extra in shared
        .workload(name)
        .map(|r| r.more_shadows.hosts)
        .unwrap_or_default()
    {
        if let Ok(p) = shared.peer(&extra) {
            shadows.push(p);
        }
    }
    let order = Order::SetShadows {
        workload: name.to_owned(),
        generation: m.generation,
        shadows,
    };
    match orders::send(shared, &m.from, &order, ORDER_TIMEOUT).await {
        OrderReply::Done => {}
        other => {
            return Err(format!(
                "primary {} did not switch shadows: {other}",
                m.from
            ))
        }
    }
    shared.update_workload(name, |r| {
        r.shadow = Some(to.name.clone());
        r.more_shadows.epochs.retain(|(h, _)| *h != to.name);
    });
    let started = Instant::now();
    loop {
        let committed_there = shared.workload(name).is_some_and(|r| {
            r.last_epoch
                .as_ref()
                .is_some_and(|e| e.shadow == to.name && e.generation == m.generation)
                || r.more_shadows.epochs.iter().any(|(h, _)| *h == to.name)
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

/// Continues every switchover the previous coordinator process left unfinished.
pub fn resume_interrupted(shared: &Arc<Shared>, machines: Vec<Migration>) {
    for mut m in machines {
        if m.phase == Phase::Finished {
            continue;
        }
        let name = m.workload().to_owned();
        let claim = match shared.claim(&name, "a migration") {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(workload = %name, "cannot continue its switchover: {e}");
                continue;
            }
        };
        tracing::warn!(workload = %name, phase = m.phase.name(), from = %m.from, to = %m.to.name, "continuing a switchover interrupted by a restart");
        let step = m.after_restart(wall_ms());
        tokio::spawn(drive(shared.clone(), claim, m, step));
    }
}

/// Waits while `host` is reconnecting ([`hold_for_reconnect`]), saying so in the live view,
/// and returns what is known of it afterwards.
async fn held_for_reconnect(
    shared: &Shared,
    name: &str,
    machine: &Migration,
    host: &str,
) -> HostNow {
    let held = Instant::now();
    let mut now = shared.host_now(host);
    if !hold_for_reconnect(now, Duration::ZERO, shared.failover.failover_after) {
        return now;
    }
    tracing::warn!(workload = %name, host, "host not connected; holding the order until it reconnects");
    shared.update_migration(name, |s| {
        s.waiting = Some(format!(
            "{host} is not connected: waiting up to {} for it to reconnect",
            humantime::format_duration(RECONNECT_GRACE)
        ))
    });
    while hold_for_reconnect(now, held.elapsed(), shared.failover.failover_after) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = shared.host_now(host);
    }
    shared.update_migration(name, |s| s.waiting = machine.waiting_for());
    now
}

/// Runs the machine to its end, persisting it before every order.
pub(super) async fn drive(
    shared: Arc<Shared>,
    claim: Claim,
    mut machine: Migration,
    mut step: Step,
) {
    let name = machine.workload().to_owned();
    let outcome = loop {
        match step {
            Step::Send {
                host,
                order,
                timeout,
                after,
            } => {
                shared.save_migration(&machine, |r| r.state = WorkloadState::Migrating);
                shared.update_migration(&name, |s| {
                    s.phase = machine.phase;
                    s.waiting = machine.waiting_for();
                    s.bytes_sent = 0;
                    s.bytes_total = 0;
                });
                tokio::time::sleep(after).await;
                let silent = held_for_reconnect(&shared, &name, &machine, &host).await;
                if host == machine.from
                    && !silent.connected
                    && silent.silent_for >= shared.failover.failover_after
                {
                    if let Some(s) = machine.old_primary_lost() {
                        step = s;
                        continue;
                    }
                }
                if host == machine.to.name
                    && !silent.connected
                    && silent.silent_for >= shared.failover.failover_after
                {
                    let leased = shared.lease_of(&machine.spec).is_some();
                    if let Some(s) = machine.target_lost(leased) {
                        tracing::warn!(workload = %name, target = %host, "the target is lost: going on without its answer (any copy it restored froze when its lease ran out)");
                        step = s;
                        continue;
                    }
                }
                let mut order = order;
                if let Order::Restore { spec, lease_ms, .. } = &mut order {
                    *lease_ms = shared.lease_of(spec);
                }
                let delivery = orders::deliver(&shared, &host, &order, timeout).await;
                step = machine.on_delivery(delivery, wall_ms());
            }
            Step::Finished(outcome) => break outcome,
        }
    };
    let total_ms = wall_ms().saturating_sub(machine.started_unix_ms);
    let to = machine.to.name.clone();
    tracing::info!(workload = %name, from = %machine.from, to = %to, outcome = outcome.label(), freeze_ms = ?machine.freeze_ms, "migration finished");
    let failover = machine.kind == Kind::Failover;
    let mut summary = MigrationSummary {
        from: machine.from.clone(),
        to: to.clone(),
        generation: machine.current_generation(),
        outcome: if failover && outcome == Outcome::Succeeded {
            "failed over".into()
        } else {
            outcome.label().into()
        },
        error: match &outcome {
            // A failover that restored an older epoch than the newest: why.
            Outcome::Succeeded if failover => machine.error.clone(),
            _ => outcome.error().map(str::to_owned),
        },
        freeze_ms: machine.freeze_ms,
        total_ms,
        finished_unix_ms: wall_ms(),
        recovery_epoch: None,
        recovery_age_ms: None,
    };
    let new_shadow = machine.new_shadow.as_ref().map(|p| p.name.clone());
    // A failover that failed is tried again later, less often each time: say when.
    let retry = match &outcome {
        Outcome::Failed(_) if failover => {
            let (failures, wait) = shared.failover_failed(&name);
            format!(
                "; failover attempt {failures} in a row failed, the next in {}",
                humantime::format_duration(wait)
            )
        }
        _ => {
            if failover {
                shared.failover_succeeded(&name);
            }
            String::new()
        }
    };
    if let (Outcome::Succeeded, true, Some(why)) = (&outcome, failover, &machine.error) {
        shared.event(
            "move",
            (Some(to.as_str()), Some(name.as_str())),
            format!(
                "failed over from {} to {to} from epoch {}, older than the newest: {why}",
                machine.from,
                machine.final_epoch.unwrap_or(0)
            ),
            Vec::new(),
        );
    }
    shared.save_migration(&machine, |r| {
        if failover {
            summary.recovery_epoch = machine.final_epoch;
            // The age of the recorded recovery point when the primary was declared lost.
            summary.recovery_age_ms = r
                .last_epoch
                .as_ref()
                .filter(|e| Some(e.epoch) == machine.final_epoch)
                .map(|e| machine.started_unix_ms.saturating_sub(e.committed_unix_ms));
        }
        match &outcome {
            Outcome::Succeeded => {
                // The other shadows stay; the new primary is told of them by
                // reconciliation, which arms them for it too.
                let kept: Vec<String> = r
                    .shadows()
                    .into_iter()
                    .filter(|s| *s != to && Some(*s) != new_shadow.as_deref())
                    .map(str::to_owned)
                    .collect();
                r.more_shadows.epochs.clear();
                r.primary = to.clone();
                match new_shadow {
                    Some(s) => {
                        r.shadow = Some(s);
                        r.more_shadows.hosts = kept;
                    }
                    None => {
                        let mut kept = kept.into_iter();
                        r.shadow = kept.next();
                        r.more_shadows.hosts = kept.collect();
                    }
                }
                r.unprotected = r
                    .shadow
                    .is_none()
                    .then(|| "no other connected host to shadow it on".to_string());
                // The final epoch now runs on the target: there is no recovery point
                // until the new shadow commits one.
                r.last_epoch = None;
                r.state = WorkloadState::Running;
            }
            Outcome::RolledBack(_) => r.state = WorkloadState::Running,
            Outcome::Failed(e) if failover => r.state = WorkloadState::Lost(format!("{e}{retry}")),
            Outcome::Failed(e) => r.state = WorkloadState::Failed(e.clone()),
            Outcome::Lost(e) => r.state = WorkloadState::Lost(e.clone()),
        }
        r.last_migration = Some(summary);
    });
    let status = status_of(&machine, String::new());
    shared.update_migration(&name, |m| {
        m.phase = Phase::Finished;
        m.outcome = status.outcome;
        m.error = status.error;
        m.freeze_ms = machine.freeze_ms;
        m.elapsed_ms = total_ms;
        m.eta_ms = None;
        m.waiting = None;
    });
    drop(claim);
}

impl Shared {
    pub(super) fn migrations_lock(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<String, MigrationStatus>> {
        self.migrations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current or last migration of a workload.
    pub fn migration(&self, name: &str) -> Option<MigrationStatus> {
        self.migrations_lock().get(name).cloned()
    }

    /// Changes a migration's live status.
    pub fn update_migration(&self, name: &str, f: impl FnOnce(&mut MigrationStatus)) {
        if let Some(m) = self.migrations_lock().get_mut(name) {
            f(m);
        }
    }

    /// Records a new migration's live status.
    pub fn set_migration(&self, status: MigrationStatus) {
        self.migrations_lock()
            .insert(status.workload.clone(), status);
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
