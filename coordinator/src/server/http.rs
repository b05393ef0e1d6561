//! The operator HTTP API: `GET /v1/hosts`, `GET /v1/health`, `GET /metrics` (the
//! coordinator's own counters and the fleet's state), and the workload endpoints.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::workloads::{self, ApiError, CreateRequest, MigrateRequest};
use super::Shared;
use crate::fleet_metrics;
use crate::registry::HostRecord;
use crate::workloads::WorkloadRecord;

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, naming the field or value.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Body of `GET /v1/workloads`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadList {
    /// Every workload, by name.
    pub workloads: Vec<WorkloadRecord>,
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
        .with_state(shared)
}

async fn hosts(State(shared): State<Arc<Shared>>) -> Json<HostList> {
    Json(HostList {
        hosts: shared.hosts(),
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

async fn list_workloads(State(shared): State<Arc<Shared>>) -> Json<WorkloadList> {
    Json(WorkloadList {
        workloads: shared.workload_list(),
    })
}

async fn get_workload(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<WorkloadRecord>, ApiError> {
    shared.workload(&name).map(Json).ok_or(ApiError {
        status: 404,
        message: format!("no workload named {name:?}"),
    })
}

async fn create_workload(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<WorkloadRecord>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError {
        status: 400,
        message: e.body_text(),
    })?;
    let rec = workloads::create(&shared, req).await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

async fn migrate(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Json<MigrateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<workloads::MigrationStatus>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError {
        status: 400,
        message: e.body_text(),
    })?;
    let dry = req.dry_run;
    let status = workloads::migrate(&shared, &name, req).await?;
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
    workloads::live_status(&shared, &name)
        .map(Json)
        .ok_or(ApiError {
            status: 404,
            message: format!("workload {name:?} has no migration"),
        })
}

async fn delete_workload(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<WorkloadRecord>, ApiError> {
    workloads::delete(&shared, &name).await.map(Json)
}
