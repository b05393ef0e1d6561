//! Carrying out workload decisions: creating and deleting workloads, arming shadows, and
//! applying agents' reports. Switchovers are in [`super::switchover`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use understudy_common::workload::{Order, OrderReply, Report, WorkloadSpec};

use super::{orders, wall_ms, Shared};
use crate::workloads::migration::{Delivery, Phase};
use crate::workloads::{MoreShadows, WorkloadRecord, WorkloadState};

const ORDER_TIMEOUT: Duration = Duration::from_secs(30);

/// An API error: HTTP status and a message naming the field or value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

pub(super) fn err(status: u16, message: impl Into<String>) -> ApiError {
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
    /// How many shadows it gets, on as many other hosts (default 1; the ones beyond
    /// `shadow` are chosen by placement).
    #[serde(default)]
    pub shadows: Option<u8>,
}

/// The most shadows a workload may have.
pub const MAX_SHADOWS: u8 = 3;

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
    /// Move by post-copy: the workload runs on the target before its memory has arrived,
    /// so the freeze does not grow with its size (docs/failover.md says what it risks).
    #[serde(default)]
    pub post_copy: bool,
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
    /// Whom the migration keeps asking, when a host it cannot do without does not answer.
    #[serde(default)]
    pub waiting: Option<String>,
}

/// Refuses a data directory that is, contains or lies in another workload's.
fn check_overlap(others: &[WorkloadRecord], spec: &WorkloadSpec) -> Result<(), ApiError> {
    for other in others.iter().filter(|o| o.spec.name != spec.name) {
        for d in &spec.data_dirs {
            for e in &other.spec.data_dirs {
                if d.starts_with(e) || e.starts_with(d) {
                    return Err(err(
                        400,
                        format!(
                            "data_dirs: {} overlaps {} of workload {:?}; two workloads never share a data directory",
                            d.display(),
                            e.display(),
                            other.spec.name
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Creates a workload: validates, places its shadow, starts it on its host.
pub async fn create(shared: &Arc<Shared>, req: CreateRequest) -> Result<WorkloadRecord, ApiError> {
    if let Some((field, reason)) = req.spec.problems().into_iter().next() {
        return Err(err(400, format!("{field}: {reason}")));
    }
    let wanted = req.shadows.unwrap_or(1);
    if !(1..=MAX_SHADOWS).contains(&wanted) {
        return Err(err(
            400,
            format!("shadows: {wanted} is not between 1 and {MAX_SHADOWS}"),
        ));
    }
    let name = req.spec.name.clone();
    let _claim = shared.claim(&name, "a create").map_err(|e| err(409, e))?;
    if shared.workload(&name).is_some() {
        return Err(err(409, format!("workload {name:?} already exists")));
    }
    check_overlap(&shared.workload_list(), &req.spec)?;
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
        None => shared.pick_shadow(&name, &req.host, &[]),
    };
    // The shadows beyond the first: as many as there are other hosts to hold them.
    let mut extras: Vec<String> = Vec::new();
    if let Some(first) = &shadow {
        while extras.len() + 1 < usize::from(wanted) {
            let mut taken = vec![first.as_str()];
            taken.extend(extras.iter().map(String::as_str));
            match shared.pick_shadow(&name, &req.host, &taken) {
                Some(h) => extras.push(h),
                None => break,
            }
        }
    }
    let generation = shared.first_generation(&name);
    let record = WorkloadRecord {
        spec: req.spec.clone(),
        primary: req.host.clone(),
        shadow: shadow.clone(),
        generation,
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
        last_correction: None,
        more_shadows: MoreShadows {
            wanted,
            hosts: extras.clone(),
            epochs: Vec::new(),
        },
    };
    if !shared.insert_workload(record) {
        return Err(err(409, format!("workload {name:?} already exists")));
    }
    let shadow_peer = match &shadow {
        Some(s) => expect_shadow(shared, &name, generation, s, &req.host)
            .await
            .ok(),
        None => None,
    };
    let mut peers: Vec<_> = shadow_peer.clone().into_iter().collect();
    for extra in &extras {
        if let Ok(p) = expect_shadow(shared, &name, generation, extra, &req.host).await {
            peers.push(p);
        }
    }
    let order = Order::Start {
        spec: req.spec,
        generation,
        shadows: peers.clone(),
    };
    let reply = match orders::deliver(shared, &req.host, &order, ORDER_TIMEOUT).await {
        Delivery::Reply(r) => Some(r),
        Delivery::NotSent(e) => Some(OrderReply::Failed(e)),
        // The host may have started it: the record stays `starting` until the host's next
        // inventory settles it (running, or failed once it is seen not to run).
        Delivery::Unknown(e) => {
            tracing::warn!(workload = %name, host = %req.host, "start order unanswered; left to the host's next report: {e}");
            None
        }
    };
    if let Some(OrderReply::Invalid(e)) = reply {
        // Nothing runs: forget the workload, and the shadow's expectation of it.
        shared.remove_workload(&name, Some(generation));
        for s in &peers {
            let forget = Order::Remove {
                workload: name.clone(),
                generation,
            };
            orders::send(shared, &s.name, &forget, ORDER_TIMEOUT).await;
        }
        return Err(err(400, format!("{}: {e}", req.host)));
    }
    let rec = shared.update_workload(&name, |r| {
        if shadow_peer.is_none() {
            r.shadow = None;
        }
        r.more_shadows
            .hosts
            .retain(|h| peers.iter().any(|p| &p.name == h));
        r.state = match reply {
            Some(OrderReply::Done) => WorkloadState::Running,
            Some(OrderReply::Failed(e)) => WorkloadState::Failed(e),
            Some(other) => WorkloadState::Failed(format!("unexpected reply: {other}")),
            None => WorkloadState::Starting,
        };
    });
    rec.ok_or_else(|| err(500, "workload vanished while starting"))
}

/// Tells `shadow` to accept epochs of `workload` from `primary`; returns how to reach it,
/// or why not (the workload is then marked unprotected with that reason).
pub(super) async fn expect_shadow(
    shared: &Arc<Shared>,
    workload: &str,
    generation: u64,
    shadow: &str,
    primary: &str,
) -> Result<understudy_common::workload::Peer, String> {
    let refused = |why: String| {
        shared.update_workload(workload, |r| r.unprotected = Some(why.clone()));
        Err(why)
    };
    let peer = match shared.peer(shadow) {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let Some(spec) = shared.workload(workload).map(|r| r.spec) else {
        return Err(format!("workload {workload:?} is gone"));
    };
    let order = Order::ExpectShadow {
        spec,
        generation,
        primary: primary.to_owned(),
    };
    match orders::send(shared, shadow, &order, ORDER_TIMEOUT).await {
        OrderReply::Done => Ok(peer),
        other => refused(format!("shadow {shadow} refused: {other}")),
    }
}

/// Deletes a workload: stops it on its primary, drops its epochs on its shadow, forgets
/// its record and leaves a tombstone, so that a copy a host still holds is stopped when
/// that host reports it. Refused while another operation holds the workload, and when the
/// primary cannot confirm it stopped it — unless `force`, which deletes the record anyway
/// and leaves the stopping to the tombstone.
pub async fn delete(
    shared: &Arc<Shared>,
    name: &str,
    force: bool,
) -> Result<WorkloadRecord, ApiError> {
    let _claim = shared.claim(name, "a delete").map_err(|e| err(409, e))?;
    let rec = shared
        .workload(name)
        .ok_or_else(|| err(404, format!("no workload named {name:?}")))?;
    // A newer generation fences every order still in flight under the old one.
    let generation = rec.generation + 1;
    shared.update_workload(name, |r| r.generation = generation);
    let order = Order::Remove {
        workload: name.to_owned(),
        generation,
    };
    if let OrderReply::Failed(e) = orders::send(shared, &rec.primary, &order, ORDER_TIMEOUT).await {
        if !force {
            return Err(err(
                409,
                format!(
                    "primary {} did not confirm that it stopped {name:?} ({e}); nothing was deleted (--force deletes the record anyway: {} stops its copy when it reconnects)",
                    rec.primary, rec.primary
                ),
            ));
        }
        tracing::warn!(
            workload = name,
            "deleted with --force; {} did not confirm: {e}",
            rec.primary
        );
    }
    for shadow in rec.shadows() {
        // Epochs a shadow keeps are dropped when it reports them, if not now.
        let _ = orders::send(shared, shadow, &order, ORDER_TIMEOUT).await;
    }
    shared.remove_workload(name, Some(generation));
    Ok(rec)
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
