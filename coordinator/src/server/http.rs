//! The operator HTTP API: `GET /v1/hosts`, `GET /v1/health`, `GET /metrics` (the
//! coordinator's own counters and the fleet's state), and the workload endpoints.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Policy};
use super::switchover;
use super::workloads::{self, ApiError, CreateRequest, MigrateRequest};
use super::Shared;
use crate::fleet_metrics;
use crate::registry::HostRecord;
use crate::workloads::WorkloadRecord;
use understudy_common::tls::Role;

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, naming the field or value.
    pub error: String,
    /// The coordinator stopped leading its group while it acted on the request: what it
    /// started may or may not stand, and the group's new leader settles it from what the
    /// hosts report. Asking again blindly could act twice; look first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsettled: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                error: self.message,
                unsettled: false,
            }),
        )
            .into_response()
    }
}

/// A workload as the API shows it: its record, plus what is true of it right now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadView {
    /// The stored record.
    #[serde(flatten)]
    pub record: WorkloadRecord,
    /// Why it is not protected right now (its primary's or its shadow's agent
    /// disconnected, or the reason its agent last reported); absent while it is protected.
    #[serde(default)]
    pub protection: Option<String>,
}

impl WorkloadView {
    fn of(shared: &Shared, record: WorkloadRecord) -> Self {
        let protection = shared
            .primary_unreachable(&record)
            .or_else(|| shared.shadow_unreachable(&record))
            .or_else(|| record.unprotected.clone());
        WorkloadView { record, protection }
    }
}

/// Body of `GET /v1/workloads`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadList {
    /// Every workload, by name.
    pub workloads: Vec<WorkloadView>,
}

/// Query of `DELETE /v1/workloads/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete the record even if the primary cannot confirm it stopped the workload.
    #[serde(default)]
    pub force: bool,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    understudy_common::workload::validate_workload_name(name).map_err(|e| ApiError {
        status: 400,
        message: format!("name: {e}"),
    })
}

/// Body of `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Always "ok" when the coordinator answers.
    pub status: String,
    /// The coordinator's build version.
    pub version: String,
    /// Seconds since the coordinator started.
    pub uptime_secs: u64,
    /// Hosts with a live connection.
    pub hosts_connected: usize,
    /// Hosts in the registry.
    pub hosts_known: usize,
}

/// Body of `GET /v1/hosts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostList {
    /// Every known host, by name.
    pub hosts: Vec<HostRecord>,
    /// The failure domain of each connected host that names one (`[agent] zone`).
    #[serde(default)]
    pub zones: std::collections::BTreeMap<String, String>,
}

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/hosts", get(hosts))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/workloads", get(list_workloads).post(create_workload))
        .route(
            "/v1/workloads/{name}",
            get(get_workload).delete(delete_workload),
        )
        .route("/v1/workloads/{name}/migrate", post(migrate))
        .route("/v1/workloads/{name}/migration", get(migration))
        .merge(super::http_admin::routes())
        .merge(super::http_backup::routes())
        .merge(super::join::routes())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            super::auth::guard,
        ))
        .with_state(shared)
}

async fn hosts(State(shared): State<Arc<Shared>>) -> Json<HostList> {
    Json(HostList {
        hosts: shared.hosts(),
        zones: shared.zones().into_iter().collect(),
    })
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Health> {
    let hosts = shared.hosts();
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: shared.started.elapsed().as_secs(),
        hosts_connected: hosts.iter().filter(|h| h.connected).count(),
        hosts_known: hosts.len(),
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render()
            + &fleet_metrics::render(&shared.hosts(), &shared.workload_list(), super::wall_ms()),
    )
}

/// What a workload's environment shows a caller below the operator role: the names only.
pub const REDACTED: &str = "(redacted)";
/// What the value of a variable named in the spec's `secret_env` shows everyone.
pub const SECRET: &str = "(secret)";

/// `rec` as `caller` may see it: the values of `secret_env` variables nobody sees; a
/// viewer sees the names of the environment, not the values (they often hold secrets).
fn visible(caller: Option<&Caller>, mut rec: WorkloadRecord) -> WorkloadRecord {
    let all = !caller.is_some_and(|c| c.may(Role::Operator));
    let spec = &mut rec.spec;
    for (name, value) in &mut spec.env {
        if spec.secret_env.contains(name) {
            *value = SECRET.to_owned();
        } else if all {
            *value = REDACTED.to_owned();
        }
    }
    rec
}

async fn list_workloads(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
) -> Json<WorkloadList> {
    Json(WorkloadList {
        workloads: shared
            .workload_list()
            .into_iter()
            .map(|r| WorkloadView::of(&shared, visible(caller.as_deref(), r)))
            .collect(),
    })
}

async fn get_workload(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
) -> Result<Json<WorkloadView>, ApiError> {
    check_name(&name)?;
    let rec = shared.workload(&name).ok_or(ApiError {
        status: 404,
        message: format!("no workload named {name:?}"),
    })?;
    Ok(Json(WorkloadView::of(
        &shared,
        visible(caller.as_deref(), rec),
    )))
}

async fn create_workload(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    policy: Option<axum::Extension<Policy>>,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<WorkloadRecord>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError {
        status: 400,
        message: e.body_text(),
    })?;
    let allow_root = policy.is_none_or(|p| p.allow_root_workloads);
    check_user(&req.spec, caller.as_deref(), allow_root)?;
    let rec = workloads::create(&shared, req).await?;
    Ok((StatusCode::CREATED, Json(visible(caller.as_deref(), rec))))
}

/// Whether `caller` may create a workload that runs as `spec.user`: root (written out or
/// left unset) needs the admin role and a config that allows root workloads.
fn check_user(
    spec: &understudy_common::workload::WorkloadSpec,
    caller: Option<&Caller>,
    allow_root: bool,
) -> Result<(), ApiError> {
    let user = spec.user.as_deref();
    if !matches!(user, None | Some("root") | Some("0")) {
        return Ok(());
    }
    let refuse = |message: String| {
        Err(ApiError {
            status: 403,
            message,
        })
    };
    if !allow_root {
        return refuse("spec.user: this coordinator refuses workloads that run as root (http.allow_root_workloads = false); set user to another account".into());
    }
    if caller.is_some_and(|c| c.may(Role::Admin)) {
        return Ok(());
    }
    let who = caller.map_or("this caller".into(), Caller::who);
    match user {
        None => refuse(format!("spec.user: not set, so the workload would run as root, which needs the admin role ({who} has not); set user (--user NAME) to the account it should run as")),
        Some(u) => refuse(format!("spec.user: {u:?} is root, which needs the admin role ({who} has not)")),
    }
}

async fn migrate(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Json<MigrateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<workloads::MigrationStatus>), ApiError> {
    check_name(&name)?;
    let Json(req) = body.map_err(|e| ApiError {
        status: 400,
        message: e.body_text(),
    })?;
    let dry = req.dry_run;
    let status = switchover::migrate(&shared, &name, req).await?;
    let code = if dry {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(status)))
}

async fn migration(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<workloads::MigrationStatus>, ApiError> {
    switchover::live_status(&shared, &name)
        .map(Json)
        .ok_or(ApiError {
            status: 404,
            message: format!("workload {name:?} has no migration"),
        })
}

async fn delete_workload(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkloadRecord>, ApiError> {
    check_name(&name)?;
    let Query(q) = query.map_err(|e| ApiError {
        status: 400,
        message: e.body_text(),
    })?;
    workloads::delete(&shared, &name, q.force).await.map(Json)
}
