//! The API of what operators say about hosts and of what the coordinator decides:
//! cordon, drain, maintenance windows, the plan (a dry run of the decision engine) and the
//! event log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::admin::{DrainStatus, WindowView};
use super::workloads::{err, ApiError};
use super::{decisions, wall_ms, Shared};
use crate::admin::{Drain, HostAdmin};
use crate::decide::{Decision, Window};
use crate::events::{Event, Filter};
use crate::revocation::Revocation;

/// Most events one read returns.
const MAX_READ: usize = 1000;
/// Longest maintenance window.
const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// `POST /v1/hosts/{host}/drain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Give up on what has not moved after this long, ms.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Workloads moved at once (default 1).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Stop the drain (what moved stays moved; the host stays cordoned).
    #[serde(default)]
    pub cancel: bool,
}

/// `POST /v1/maintenance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    /// The host.
    pub host: String,
    /// When it opens, ms since the Unix epoch.
    pub start_unix_ms: u64,
    /// How long it lasts, ms.
    pub duration_ms: u64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `GET /v1/plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The engine's mode.
    pub mode: String,
    /// What it would decide now.
    pub decisions: Vec<Decision>,
    /// Maintenance windows to come, in order.
    pub windows: Vec<WindowView>,
}

/// `GET /v1/events` query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventQuery {
    after: Option<u64>,
    host: Option<String>,
    workload: Option<String>,
    limit: Option<usize>,
    /// A blocking query (as Nomad's): with no matching event after `after` yet, wait up to
    /// this long (e.g. `30s`, at most [`MAX_WAIT`]) for one.
    wait: Option<String>,
}

/// The longest a blocking events query waits.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/hosts/{host}/admin", get(admin))
        .route("/v1/hosts/{host}/cordon", post(cordon))
        .route("/v1/hosts/{host}/uncordon", post(uncordon))
        .route("/v1/hosts/{host}/revoke", post(revoke))
        .route("/v1/certificates/{name}/revoke", post(revoke_name))
        .route("/v1/revocations", get(revocations))
        .route("/v1/hosts/{host}/drain", get(drain_status).post(drain))
        .route("/v1/maintenance", get(windows).post(add_window))
        .route("/v1/maintenance/{id}", delete(remove_window))
        .route("/v1/plan", get(plan))
        .route("/v1/events", get(events))
}

fn known(shared: &Shared, host: &str) -> Result<(), ApiError> {
    if shared.hosts().iter().any(|h| h.name == host) {
        Ok(())
    } else {
        Err(err(404, format!("no host named {host:?}")))
    }
}

fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| err(400, e.body_text()))
}

async fn admin(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Result<Json<HostAdmin>, ApiError> {
    known(&shared, &host)?;
    Ok(Json(shared.host_admin(&host)))
}

async fn cordon(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Result<Json<HostAdmin>, ApiError> {
    known(&shared, &host)?;
    let rec = shared.update_host_admin(&host, |a| a.cordoned = true);
    shared.event(
        "cordon",
        (Some(&host), None),
        format!("{host} cordoned: nothing new is placed there"),
        Vec::new(),
    );
    Ok(Json(rec))
}

/// Revokes `name`'s certificates for `caller` (validated, recorded, told to every
/// agent); the revocation and who made it.
fn revoke_for(
    shared: &Arc<Shared>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    name: &str,
    field: &str,
) -> Result<(Revocation, String), ApiError> {
    understudy_common::tls::identity::validate_host_name(name)
        .map_err(|e| err(400, format!("{field}: {e}")))?;
    let by = caller.map_or_else(|| "an unknown caller".to_owned(), |c| c.who());
    let r = shared
        .revoke(name, &by)
        .map_err(|e| err(503, format!("the revocation was not recorded: {e}")))?;
    super::revocations::tell_all(shared);
    Ok((r, by))
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    Path(host): Path<String>,
) -> Result<Json<Revocation>, ApiError> {
    let (r, by) = revoke_for(&shared, caller, &host, "host")?;
    shared.event(
        "revoke",
        (Some(&host), None),
        format!("{host}'s certificates issued until now are refused (revoked by {by}); its connection is closed"),
        Vec::new(),
    );
    Ok(Json(r))
}

/// Revokes every certificate of a name, whoever holds it: a person's or a tool's on the
/// operator API (refused there from now on), or a host's (as `revoke`). Certificate names
/// are one namespace of the cluster CA.
async fn revoke_name(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    Path(name): Path<String>,
) -> Result<Json<Revocation>, ApiError> {
    let (r, by) = revoke_for(&shared, caller, &name, "name")?;
    shared.event(
        "revoke",
        (None, None),
        format!("certificates of {name} issued until now are refused (revoked by {by})"),
        vec![("name".into(), name.clone())],
    );
    Ok(Json(r))
}

async fn revocations(State(shared): State<Arc<Shared>>) -> Json<Vec<Revocation>> {
    Json(shared.revocations())
}

async fn uncordon(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Result<Json<HostAdmin>, ApiError> {
    known(&shared, &host)?;
    if shared.host_admin(&host).drain.is_some() {
        return Err(err(
            409,
            format!("{host} is being drained; cancel the drain first"),
        ));
    }
    let rec = shared.update_host_admin(&host, |a| a.cordoned = false);
    shared.event(
        "cordon",
        (Some(&host), None),
        format!("{host} uncordoned"),
        Vec::new(),
    );
    Ok(Json(rec))
}

async fn drain(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
    req: Result<Json<DrainRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<DrainStatus>), ApiError> {
    known(&shared, &host)?;
    let req = body(req)?;
    if req.cancel {
        if shared.host_admin(&host).drain.is_none() {
            return Err(err(409, format!("{host} is not being drained")));
        }
        shared.update_host_admin(&host, |a| a.drain = None);
        shared.event(
            "drain",
            (Some(&host), None),
            format!(
                "the drain of {host} was cancelled; what moved stays moved, {host} stays cordoned"
            ),
            Vec::new(),
        );
        return Ok((StatusCode::OK, Json(shared.drain_status(&host))));
    }
    let parallel = req.parallel.unwrap_or(1);
    if !(1..=64).contains(&parallel) {
        return Err(err(400, format!("parallel: {parallel} is outside 1..64")));
    }
    if shared.host_admin(&host).drain.is_some() {
        return Ok((StatusCode::OK, Json(shared.drain_status(&host))));
    }
    let now = wall_ms();
    let workloads: Vec<String> = shared
        .drain_status(&host)
        .primaries_left
        .into_iter()
        .collect();
    let d = Drain {
        started_unix_ms: now,
        deadline_unix_ms: req.deadline_ms.map(|ms| now.saturating_add(ms)),
        parallel,
        workloads,
    };
    let n = d.workloads.len();
    shared.update_host_admin(&host, |a| {
        a.cordoned = true;
        a.drain = Some(d);
    });
    shared.event(
        "drain",
        (Some(&host), None),
        format!("draining {host}: {n} workloads to move, {parallel} at a time; cordoned"),
        Vec::new(),
    );
    Ok((StatusCode::ACCEPTED, Json(shared.drain_status(&host))))
}

async fn drain_status(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Result<Json<DrainStatus>, ApiError> {
    known(&shared, &host)?;
    Ok(Json(shared.drain_status(&host)))
}

async fn windows(State(shared): State<Arc<Shared>>) -> Json<Vec<WindowView>> {
    Json(shared.windows())
}

async fn add_window(
    State(shared): State<Arc<Shared>>,
    req: Result<Json<WindowRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<WindowView>), ApiError> {
    let req = body(req)?;
    known(&shared, &req.host)?;
    if req.duration_ms == 0 || req.duration_ms > MAX_WINDOW.as_millis() as u64 {
        return Err(err(
            400,
            format!("duration: {} ms is outside 1 ms..30 days", req.duration_ms),
        ));
    }
    if req.start_unix_ms.saturating_add(req.duration_ms) <= wall_ms() {
        return Err(err(400, "start: the window would already be over"));
    }
    if req.reason.len() > 1000 || req.reason.contains('\0') {
        return Err(err(400, "reason: at most 1000 bytes, no NUL"));
    }
    let window = Window {
        start_ms: req.start_unix_ms,
        duration_ms: req.duration_ms,
        reason: req.reason,
    };
    let id = shared.add_window(&req.host, window.clone());
    shared.event(
        "maintenance",
        (Some(&req.host), None),
        format!(
            "maintenance window {id} on {}: {} for {} s ({})",
            req.host,
            window.start_ms,
            window.duration_ms / 1000,
            window.reason
        ),
        Vec::new(),
    );
    Ok((
        StatusCode::CREATED,
        Json(WindowView {
            id,
            host: req.host,
            window,
        }),
    ))
}

async fn remove_window(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    if !shared.remove_window(id) {
        return Err(err(404, format!("no maintenance window {id}")));
    }
    shared.event(
        "maintenance",
        (None, None),
        format!("maintenance window {id} removed"),
        Vec::new(),
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn plan(State(shared): State<Arc<Shared>>) -> Json<Plan> {
    Json(Plan {
        mode: format!("{:?}", shared.decisions.mode).to_lowercase(),
        decisions: decisions::plan(&shared),
        windows: shared.windows(),
    })
}

async fn events(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let Query(q) = query.map_err(|e| err(400, e.body_text()))?;
    let wait = match q.wait.as_deref() {
        None => std::time::Duration::ZERO,
        Some(w) => humantime::parse_duration(w)
            .map_err(|e| err(400, format!("wait: {w:?}: {e}")))?
            .min(MAX_WAIT),
    };
    let filter = Filter {
        after: q.after,
        host: q.host,
        workload: q.workload,
    };
    let limit = q.limit.unwrap_or(100).min(MAX_READ);
    let until = tokio::time::Instant::now() + wait;
    loop {
        let found = shared.events(&filter, limit);
        if !found.is_empty() || tokio::time::Instant::now() >= until {
            return Ok(Json(found));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
