//! `GET /v1/backup` (every record of the store, as a backup file: [`crate::backup`]) and
//! `POST /v1/restore` (a backup's records into a coordinator group that holds no workload,
//! through the group's log in one entry; the leader then rebuilds its state from them as
//! a newly elected leader does).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::workloads::{err, ApiError};
use super::{wall_ms, Shared};
use crate::backup::{self, Backup, MAX_BACKUP};

/// Answer to `POST /v1/restore`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restored {
    /// Records written.
    pub records: usize,
    /// Of which workloads.
    pub workloads: usize,
    /// When the backup was taken, ms since the Unix epoch.
    pub taken_unix_ms: u64,
}

/// The routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/backup", get(take)).route(
        "/v1/restore",
        post(restore).layer(DefaultBodyLimit::max(MAX_BACKUP)),
    )
}

async fn take(State(shared): State<Arc<Shared>>) -> Result<impl IntoResponse, ApiError> {
    let store = shared.store().clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let (records, _) = store.export().map_err(|e| err(500, e.to_string()))?;
        backup::encode(&Backup {
            taken_unix_ms: wall_ms(),
            records,
        })
        .map_err(|e| err(500, e.to_string()))
    })
    .await
    .map_err(|e| err(500, e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

async fn restore(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Restored>, ApiError> {
    let b = backup::decode(&body).map_err(|e| err(400, e.to_string()))?;
    let s = shared.clone();
    tokio::task::spawn_blocking(move || restore_here(&s, b))
        .await
        .map_err(|e| err(500, e.to_string()))?
}

fn restore_here(shared: &Shared, b: Backup) -> Result<Json<Restored>, ApiError> {
    let store = shared.store();
    if !store.is_replicated() {
        return Err(err(
            409,
            "a single coordinator restores offline: stop it, then `understudy store restore \
             --config FILE --from BACKUP` (docs/ha.md)",
        ));
    }
    let unusable = store.unusable(&b.records);
    if let Some((kind, key, why)) = unusable.first() {
        return Err(err(
            422,
            format!(
                "the backup holds {} record(s) this build cannot use, first the {kind} record {key:?}: {why}",
                unusable.len()
            ),
        ));
    }
    let (workloads, moving) = store
        .workload_count()
        .map_err(|e| err(500, e.to_string()))?;
    if workloads + moving > 0 {
        return Err(err(
            409,
            format!(
                "this group already holds {workloads} workload(s): a backup is restored into a new, empty group"
            ),
        ));
    }
    store
        .restore(&b.records)
        .map_err(|e| err(503, e.to_string()))?;
    // The state acting now predates the records: fence it, so the leader rebuilds its
    // state from the store (agents reconnect to it and report what they run).
    shared.fence_to_rebuild();
    let restored_workloads = b
        .records
        .iter()
        .filter(|op| crate::store::kind_name(op.kind) == Some("workload"))
        .count();
    tracing::warn!(
        records = b.records.len(),
        workloads = restored_workloads,
        "restored a backup; rebuilding the leader's state from it"
    );
    Ok(Json(Restored {
        records: b.records.len(),
        workloads: restored_workloads,
        taken_unix_ms: b.taken_unix_ms,
    }))
}
