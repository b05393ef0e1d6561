//! The agent's own `/metrics` over HTTP: this host's schema metrics (see `hostmetrics`),
//! sampled every `step_seconds` into a ring of recent samples, newest rendered on request;
//! and the resource use of each workload this host runs, read when asked. Sampling reads
//! procfs on a blocking thread, never on the async workers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use std::fmt::Write;

use crate::hostmetrics::history::History;
use crate::hostmetrics::schema::Schema;
use crate::hostmetrics::Sampler;
use crate::node::Node;
use crate::workload::stats::{self, TreeStats};

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

/// The workloads' resource use in the Prometheus text format.
fn render_workloads(node: &Node) -> String {
    let families = [
        (
            "understudy_workload_cpu_seconds_total",
            "counter",
            "CPU time of the workload's process tree, seconds",
        ),
        (
            "understudy_workload_resident_bytes",
            "gauge",
            "resident memory of the workload's process tree",
        ),
        (
            "understudy_workload_open_fds",
            "gauge",
            "open file descriptors in the workload's process tree",
        ),
        (
            "understudy_workload_threads",
            "gauge",
            "threads in the workload's process tree",
        ),
        (
            "understudy_workload_processes",
            "gauge",
            "processes in the workload's process tree",
        ),
    ];
    let trees: Vec<(String, TreeStats)> = node
        .primaries()
        .into_iter()
        .filter_map(|p| {
            let pid = p.pid.load(std::sync::atomic::Ordering::Relaxed);
            (pid > 0)
                .then(|| stats::tree(pid))
                .flatten()
                .map(|s| (p.spec.name.clone(), s))
        })
        .collect();
    let mut out = String::new();
    for (i, (family, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {family} {help}.");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for (name, s) in &trees {
            let v = match i {
                0 => s.cpu_seconds,
                1 => s.rss_bytes as f64,
                2 => s.fds as f64,
                3 => s.threads as f64,
                _ => s.processes as f64,
            };
            let _ = writeln!(out, "{family}{{workload=\"{name}\"}} {v}");
        }
    }
    out
}

/// Serves `GET /metrics` on `listen` until the process ends.
pub async fn serve(
    listen: SocketAddr,
    history: SharedHistory,
    node: Arc<Node>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (history, node) = (history.clone(), node.clone());
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    let mut text = lock(&history).render();
                    text.push_str(&render_workloads(&node));
                    text
                })
                .await
                .unwrap_or_default();
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
