//! The agent's own `/metrics` over HTTP: this host's schema metrics (see `hostmetrics`),
//! sampled every `step_seconds` into a ring of recent samples, newest rendered on request;
//! the health assessment made from each sample (`health_text`); and the resource use and
//! probes of each workload this host runs, read when asked (`workloads_text`). Sampling
//! reads procfs on a blocking thread, never on the async workers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use understudy_common::telemetry::{Forecast, HealthReport};

use crate::hostmetrics::cgroup_memory::MemoryCgroup;
use crate::hostmetrics::compute::Reading;
use crate::hostmetrics::history::History;
use crate::hostmetrics::schema::Schema;
use crate::hostmetrics::Sampler;
use crate::node::Node;
use crate::predict::detector::{Detector, DAY_SECONDS};
use crate::predict::forecast::Forecaster;
use crate::predict::health;
use crate::workload::stats;

mod health_text;
mod tls_listener;
mod workloads_text;

/// Samples kept: ten model windows.
const WINDOWS_KEPT: usize = 10;

/// Shared recent samples.
pub type SharedHistory = Arc<Mutex<History>>;

fn lock(h: &SharedHistory) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sampling and assessment state, used on a blocking thread.
struct Live {
    sampler: Sampler,
    detector: Result<Detector, String>,
    forecaster: Result<Forecaster, String>,
    warmup: f64,
    thresholds: health::Thresholds,
}

impl Live {
    /// Samples the host and assesses its health (and where its anomaly score stands for
    /// this host).
    fn step(&mut self) -> (crate::hostmetrics::Sample, HealthReport, Option<f64>) {
        let sample = self.sampler.sample();
        let schema = self.sampler.schema();
        let forecasts = match &mut self.forecaster {
            Err(_) => Vec::new(),
            Ok(f) => {
                let values: Vec<Option<f64>> = f
                    .metrics()
                    .iter()
                    .map(|name| {
                        let i = schema.metric.iter().position(|m| &m.name == name)?;
                        sample.readings.get(i)?.as_ref().ok().copied()
                    })
                    .collect();
                f.push(&values).ok().flatten().unwrap_or_default()
            }
        };
        let kernel_errors = self.sampler.recent_kernel_errors();
        let schema = self.sampler.schema();
        let report = match &mut self.detector {
            Err(e) => health::degraded(format!("no anomaly model: {e}")),
            Ok(det) => {
                let ctx = Context {
                    schema,
                    warmup: self.warmup,
                    thresholds: &self.thresholds,
                    kernel_errors,
                };
                assess(det, &ctx, &sample.readings, forecasts)
            }
        };
        let percentile = self
            .detector
            .as_ref()
            .ok()
            .and_then(Detector::percentile_now);
        let report = with_standing(report, percentile);
        (
            sample,
            crate::faults::health_score(report, &self.thresholds),
            percentile,
        )
    }
}

/// `report` with how unusual its anomaly score is for this host (`percentile`), which the
/// heartbeat carries so that `understudy host show` says it at every sample; none for a
/// degraded report, which has no score.
fn with_standing(mut report: HealthReport, percentile: Option<f64>) -> HealthReport {
    if report.level != understudy_common::telemetry::HealthLevel::Degraded {
        report.percentile = percentile.map(|p| p as f32);
    }
    report
}

/// What an assessment needs besides the detector and the sample.
struct Context<'a> {
    schema: &'a Schema,
    warmup: f64,
    thresholds: &'a health::Thresholds,
    kernel_errors: [u32; 3],
}

fn assess(
    det: &mut Detector,
    ctx: &Context,
    readings: &[Reading],
    forecasts: Vec<Forecast>,
) -> HealthReport {
    let (schema, warmup) = (ctx.schema, ctx.warmup);
    let row: Vec<Option<f64>> = readings.iter().map(|r| r.as_ref().ok().copied()).collect();
    let row = det.fill_missing(&row);
    let warming = det.warming();
    let mem_used = schema
        .metric
        .iter()
        .position(|m| m.name == "mem_u")
        .and_then(|i| readings.get(i)?.as_ref().ok().copied());
    let mut inputs = health::Inputs {
        anomaly: 0.0,
        threshold: det.threshold(),
        alarm: false,
        mem_used,
        top: Vec::new(),
        forecasts,
        kernel_errors: ctx.kernel_errors,
    };
    let stepped = det.step(&row);
    if warming {
        // Forecasts, risk and kernel errors count from the start; the anomaly model only
        // once it knows this host and has calibrated its threshold.
        if let Err(e) = stepped {
            return health::degraded(format!("anomaly model: {e}"));
        }
        let mut report = health::assess(inputs, ctx.thresholds);
        let learned = det.seen();
        let learning = format!("learning this host's baseline: {learned} of {warmup:.0} samples");
        report.note = Some(match report.note {
            Some(n) => format!("{n}; {learning}"),
            None => learning,
        });
        return report;
    }
    match stepped {
        Err(e) => health::degraded(format!("anomaly model: {e}")),
        Ok(s) => {
            let mut top: Vec<(String, f32)> = schema
                .metric
                .iter()
                .zip(&s.contrib)
                .map(|(m, c)| (m.name.clone(), *c))
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top.truncate(3);
            inputs.anomaly = s.smoothed;
            inputs.alarm = s.alarm;
            inputs.top = top;
            let mut report = health::assess(inputs, ctx.thresholds);
            if s.alarm && report.note.is_none() {
                report.note = det.percentile(s.smoothed).map(|p| {
                    format!(
                        "anomaly alarm: the score is above {p:.2} % of this host's own recent \
                         scores (threshold calibrated for {} false alarms a day)",
                        det.target_per_day()
                    )
                });
            }
            report
        }
    }
}

/// Starts sampling the host every `schema.step_seconds`, assessing its health with the
/// anomaly detector from `models` (or reporting why it cannot); returns the history it
/// fills. Each assessment goes to `node`.
pub fn start_sampling(
    schema: Schema,
    models: &Path,
    (warmup_samples, false_alarms_per_day): (u32, Option<f64>),
    thresholds: health::Thresholds,
    node: Arc<Node>,
    memory: Option<MemoryCgroup>,
) -> SharedHistory {
    let step =
        crate::faults::sample_period(Duration::from_secs(u64::from(schema.step_seconds.max(1))));
    let capacity = schema.window as usize * WINDOWS_KEPT;
    let history = Arc::new(Mutex::new(History::new(schema.clone(), capacity)));
    let h = history.clone();
    let mut detector = crate::predict::load_anomaly(models);
    if let Ok(det) = &mut detector {
        let per_day = DAY_SECONDS / f64::from(schema.step_seconds.max(1));
        det.calibrate_for(per_day, warmup_samples as usize, false_alarms_per_day);
    }
    if let Err(e) = &detector {
        tracing::warn!("host health degraded: {e}");
    }
    let forecaster = Forecaster::load(models);
    if let Err(e) = &forecaster {
        tracing::warn!("no resource forecasts: {e}");
    }
    tokio::spawn(async move {
        let live = Arc::new(Mutex::new(Live {
            sampler: Sampler::new(schema, memory),
            detector,
            forecaster,
            warmup: f64::from(warmup_samples),
            thresholds,
        }));
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let l = live.clone();
            let Ok((sample, report, percentile)) = tokio::task::spawn_blocking(move || {
                l.lock().unwrap_or_else(|e| e.into_inner()).step()
            })
            .await
            else {
                continue;
            };
            node.set_health(report, percentile);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            lock(&h).push(now, sample.readings);
        }
    });
    history
}

/// The workloads this host runs, read now, in the Prometheus text format.
fn render_workloads(node: &Node) -> String {
    let running: Vec<workloads_text::Running> = node
        .primaries()
        .into_iter()
        .map(|p| {
            let snap = p.snapshot();
            workloads_text::Running {
                name: p.spec.name.clone(),
                tree: (snap.pid > 0).then(|| stats::workload(snap.pid)).flatten(),
                restarts: u64::from(snap.restarts),
            }
        })
        .collect();
    workloads_text::render(&running, &node.probes())
}

/// Serves `GET /metrics` on `listen` until the process ends.
pub async fn serve(
    listen: SocketAddr,
    history: SharedHistory,
    node: Arc<Node>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (history, node) = (history.clone(), node.clone());
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    let mut text = lock(&history).render();
                    if let Some(h) = node.health() {
                        text.push_str(&health_text::render(&h, node.anomaly_percentile()));
                    }
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
    match tls {
        Some(config) => axum::serve(tls_listener::TlsListener::new(listener, config)?, app).await,
        None => axum::serve(listener, app).await,
    }
}

#[cfg(test)]
mod tests {
    use super::{health, with_standing};
    use understudy_common::telemetry::HealthLevel;

    #[test]
    fn the_heartbeat_carries_the_scores_standing_unless_there_is_no_score() {
        let t = health::Thresholds::default();
        let inputs = health::Inputs {
            anomaly: 0.2,
            threshold: 1.0,
            alarm: false,
            mem_used: None,
            top: Vec::new(),
            forecasts: Vec::new(),
            kernel_errors: [0; 3],
        };
        let assessed = with_standing(health::assess(inputs, &t), Some(97.25));
        assert_ne!(assessed.level, HealthLevel::Degraded);
        assert_eq!(assessed.percentile, Some(97.25));
        let inputs = health::Inputs {
            threshold: 1.0,
            ..Default::default()
        };
        let warming = with_standing(health::assess(inputs, &t), None);
        assert_eq!(warming.percentile, None, "none in the warm-up");
        let degraded = with_standing(health::degraded("no anomaly model".into()), Some(50.0));
        assert_eq!(degraded.percentile, None, "a degraded report has no score");
    }
}
