//! The agent's own `/metrics` over HTTP: this host's schema metrics (see `hostmetrics`),
//! sampled every `step_seconds` into a ring of recent samples, newest rendered on request.
//! Sampling reads procfs on a blocking thread, never on the async workers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::hostmetrics::history::History;
use crate::hostmetrics::schema::Schema;
use crate::hostmetrics::Sampler;

/// Samples kept: ten model windows.
const WINDOWS_KEPT: usize = 10;

/// Shared recent samples.
pub type SharedHistory = Arc<Mutex<History>>;

fn lock(h: &SharedHistory) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts sampling the host every `schema.step_seconds`; returns the history it fills.
pub fn start_sampling(schema: Schema) -> SharedHistory {
    let step = Duration::from_secs(u64::from(schema.step_seconds.max(1)));
    let capacity = schema.window as usize * WINDOWS_KEPT;
    let history = Arc::new(Mutex::new(History::new(schema.clone(), capacity)));
    let h = history.clone();
    tokio::spawn(async move {
        let sampler = Arc::new(Mutex::new(Sampler::new(schema)));
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = sampler.clone();
            let Ok(sample) = tokio::task::spawn_blocking(move || {
                s.lock().unwrap_or_else(|e| e.into_inner()).sample()
            })
            .await
            else {
                continue;
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            lock(&h).push(now, sample.readings);
        }
    });
    history
}

/// Serves `GET /metrics` on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, history: SharedHistory) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = lock(&history).render();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app).await
}
