//! Periodic probing of the workloads running here: the spec's probe (TCP connect or a
//! command) every `[probes] interval`, its latency fed to the streaming univariate detector
//! (`models/univariate.onnx`) and its failures counted. The reports travel in heartbeats
//! (`understudy workload show`) and are served on `/metrics`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use understudy_common::telemetry::ProbeReport;
use understudy_common::workload::Probe;

use crate::predict::univariate::{Univariate, UnivariateModel};

/// Where a command probe runs: inside the namespaces (PID, mount, IPC) of the workload
/// whose tree is rooted at `pid`, as `account` (its spec's user), as its own command does.
#[derive(Debug, Clone)]
pub struct InWorkload {
    /// The root of the workload's tree (process 1 of its PID namespace).
    pub pid: i32,
    /// `setpriv … --` dropping to the workload's user (empty: root).
    pub setpriv: Vec<String>,
}

impl InWorkload {
    /// The command line that runs `argv` there.
    pub fn command_line(&self, argv: &[String]) -> Vec<String> {
        let mut line = vec![
            "nsenter".to_string(),
            format!("--target={}", self.pid),
            "--pid".into(),
            "--mount".into(),
            "--ipc".into(),
            "--".into(),
        ];
        line.extend(self.setpriv.iter().cloned());
        line.extend(argv.iter().cloned());
        line
    }
}

/// Runs `probe` once against this host; returns how long it took to answer. A command
/// probe runs `within` the workload when given.
pub async fn once(
    probe: &Probe,
    timeout: Duration,
    within: Option<&InWorkload>,
) -> Result<Duration, String> {
    let started = Instant::now();
    match probe {
        Probe::Tcp { port } => {
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect(("127.0.0.1", *port)),
            )
            .await
            .map_err(|_| format!("TCP probe of port {port}: no answer within {timeout:?}"))?
            .map_err(|e| format!("TCP probe of port {port}: {e}"))?;
        }
        Probe::Command { argv } => {
            let prog = argv.first().ok_or("empty probe command")?;
            let line = match within {
                Some(w) => w.command_line(argv),
                None => argv.clone(),
            };
            let (run, args) = line.split_first().ok_or("empty probe command")?;
            let out = tokio::time::timeout(
                timeout,
                tokio::process::Command::new(run)
                    .args(args)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .map_err(|_| format!("probe command {prog:?} timed out after {timeout:?}"))?
            .map_err(|e| format!("probe command {prog:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!("probe command {prog:?} {}", out.status));
            }
        }
    }
    Ok(started.elapsed())
}

/// What is probed, for people.
pub fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Tcp { port } => format!("tcp {port}"),
        Probe::Command { argv } => format!("command {}", argv.join(" ")),
    }
}

/// One workload's probe state.
struct Tracked {
    pid: i32,
    report: ProbeReport,
    detector: Option<Univariate>,
}

/// Folds one probe result into `t`.
fn record(t: &mut Tracked, result: Result<Duration, String>, alarm_level: f64) {
    t.report.runs += 1;
    match result {
        Ok(latency) => {
            let ms = latency.as_secs_f64() * 1000.0;
            t.report.consecutive_failures = 0;
            t.report.latency_ms = Some(ms as f32);
            t.report.last_error = None;
            if let Some(d) = &mut t.detector {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .ok();
                if let Ok(score) = d.step_at(ms, now) {
                    t.report.latency_anomaly = score as f32;
                    if score >= alarm_level {
                        t.report.latency_alarms += 1;
                    }
                }
            }
        }
        Err(e) => {
            t.report.failures += 1;
            t.report.consecutive_failures += 1;
            t.report.last_error = Some(e);
        }
    }
}

/// A workload to probe: its name, its probe, the root pid of its tree (a new pid starts a
/// fresh report and detector), and the `setpriv` arguments for its user (or why its user
/// cannot be found here).
pub type Target = (String, Probe, i32, Result<Vec<String>, String>);

/// Probes each of `targets()` each `interval`, forever, handing the reports to `publish`.
pub async fn watch(
    targets: impl Fn() -> Vec<Target>,
    publish: impl Fn(Vec<ProbeReport>),
    interval: Duration,
    model: Result<UnivariateModel, String>,
) {
    if let Err(e) = &model {
        tracing::warn!("probe latency is not scored: {e}");
    }
    let alarm_level = model.as_ref().map_or(1.0, |m| m.manifest().rest_level);
    let timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(10));
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut seen = Vec::new();
        for (name, probe, pid, setpriv) in targets() {
            if pid <= 0 {
                continue;
            }
            seen.push(name.clone());
            let fresh = || Tracked {
                pid,
                report: empty(&name, &probe),
                detector: model.as_ref().ok().map(UnivariateModel::detector),
            };
            let t = tracked.entry(name.clone()).or_insert_with(fresh);
            if t.pid != pid {
                *t = fresh();
            }
            let result = match setpriv {
                Ok(setpriv) => once(&probe, timeout, Some(&InWorkload { pid, setpriv })).await,
                Err(e) => Err(format!("probe not run: {e}")),
            };
            record(t, result, alarm_level);
        }
        tracked.retain(|name, _| seen.contains(name));
        let mut reports: Vec<ProbeReport> = tracked.values().map(|t| t.report.clone()).collect();
        reports.sort_by(|a, b| a.workload.cmp(&b.workload));
        publish(reports);
    }
}

fn empty(workload: &str, probe: &Probe) -> ProbeReport {
    ProbeReport {
        workload: workload.to_string(),
        probe: describe(probe),
        runs: 0,
        failures: 0,
        consecutive_failures: 0,
        latency_ms: None,
        latency_anomaly: 0.0,
        latency_alarms: 0,
        last_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_in_a_row_and_a_success_resets_the_run() {
        let mut t = Tracked {
            pid: 1,
            report: empty("kv", &Probe::Tcp { port: 7000 }),
            detector: None,
        };
        record(&mut t, Ok(Duration::from_millis(2)), 0.2);
        record(&mut t, Err("refused".into()), 0.2);
        record(&mut t, Err("refused again".into()), 0.2);
        let r = &t.report;
        assert_eq!((r.runs, r.failures, r.consecutive_failures), (3, 2, 2));
        assert_eq!(r.last_error.as_deref(), Some("refused again"));
        assert_eq!(r.latency_ms, Some(2.0), "the last good latency stays");
        record(&mut t, Ok(Duration::from_millis(3)), 0.2);
        assert_eq!(
            (t.report.consecutive_failures, t.report.last_error.clone()),
            (0, None)
        );
    }

    #[tokio::test]
    async fn a_tcp_probe_measures_a_listener_and_names_a_closed_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let took = once(&Probe::Tcp { port }, Duration::from_secs(1), None)
            .await
            .unwrap();
        assert!(took < Duration::from_secs(1));
        drop(l);
        let e = once(&Probe::Tcp { port }, Duration::from_secs(1), None)
            .await
            .unwrap_err();
        assert!(e.contains(&port.to_string()), "{e}");
        let e = once(
            &Probe::Command {
                argv: vec!["false".into()],
            },
            Duration::from_secs(1),
            None,
        )
        .await
        .unwrap_err();
        assert!(e.contains("false"), "{e}");
    }
}
