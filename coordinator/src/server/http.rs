//! The operator HTTP API: `GET /v1/hosts`, `GET /v1/health`, `GET /metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::registry::HostRecord;

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
        shared.metrics.render(),
    )
}
