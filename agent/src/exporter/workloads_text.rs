//! The resource use, restarts and probes of the workloads this host runs, in the
//! Prometheus text format. Pure: renders what the caller read.

use understudy_common::prom::{per_item, PerItem};
use understudy_common::telemetry::ProbeReport;

use crate::workload::stats::TreeStats;

/// What is rendered for one workload running here.
pub struct Running {
    /// The workload's name.
    pub name: String,
    /// Its process tree's totals, if the tree could be read.
    pub tree: Option<TreeStats>,
    /// Restarts by its restart policy since it started or was restored here.
    pub restarts: u64,
}

/// Every workload family, in order; each family's HELP and TYPE even with no workload.
pub fn render(running: &[Running], probes: &[ProbeReport]) -> String {
    let running_families: [PerItem<Running>; 6] = [
        (
            "understudy_workload_cpu_seconds_total",
            "counter",
            "CPU time of the workload's process tree, seconds.",
            |r| Some(r.tree?.cpu_seconds),
        ),
        (
            "understudy_workload_resident_bytes",
            "gauge",
            "Resident memory of the workload's process tree.",
            |r| Some(r.tree?.rss_bytes as f64),
        ),
        (
            "understudy_workload_open_fds",
            "gauge",
            "Open file descriptors in the workload's process tree.",
            |r| Some(r.tree?.fds as f64),
        ),
        (
            "understudy_workload_threads",
            "gauge",
            "Threads in the workload's process tree.",
            |r| Some(r.tree?.threads as f64),
        ),
        (
            "understudy_workload_processes",
            "gauge",
            "Processes in the workload's process tree.",
            |r| Some(r.tree?.processes as f64),
        ),
        (
            "understudy_workload_restarts_total",
            "counter",
            "Restarts by the workload's restart policy since it started or was restored here.",
            |r| Some(r.restarts as f64),
        ),
    ];
    let probe_families: [PerItem<ProbeReport>; 5] = [
        (
            "understudy_workload_probe_runs_total",
            "counter",
            "Probes run since the workload started here.",
            |p| Some(p.runs as f64),
        ),
        (
            "understudy_workload_probe_failures_total",
            "counter",
            "Probes that failed.",
            |p| Some(p.failures as f64),
        ),
        (
            "understudy_workload_probe_latency_seconds",
            "gauge",
            "Latency of the newest successful probe.",
            |p| p.latency_ms.map(|ms| f64::from(ms) / 1000.0),
        ),
        (
            "understudy_workload_probe_latency_anomaly",
            "gauge",
            "The univariate detector's score of that latency, 0-1.",
            |p| Some(f64::from(p.latency_anomaly)),
        ),
        (
            "understudy_workload_probe_latency_alarms_total",
            "counter",
            "Probe latencies the univariate detector alarmed on.",
            |p| Some(p.latency_alarms as f64),
        ),
    ];
    let mut out = String::new();
    per_item(&mut out, &running_families, running, "workload", |r| {
        &r.name
    });
    per_item(&mut out, &probe_families, probes, "workload", |p| {
        &p.workload
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_has_its_figures_and_a_probe_without_latency_has_none() {
        let running = [Running {
            name: "db".into(),
            tree: Some(TreeStats {
                processes: 2,
                threads: 5,
                cpu_seconds: 1.5,
                rss_bytes: 4096,
                fds: 9,
            }),
            restarts: 1,
        }];
        let probe = ProbeReport {
            workload: "db".into(),
            probe: "tcp 5432".into(),
            runs: 10,
            failures: 10,
            consecutive_failures: 10,
            latency_ms: None,
            latency_anomaly: 0.0,
            latency_alarms: 3,
            last_error: Some("Connection refused".into()),
        };
        let text = render(&running, &[probe]);
        for line in [
            "understudy_workload_resident_bytes{workload=\"db\"} 4096",
            "understudy_workload_restarts_total{workload=\"db\"} 1",
            "understudy_workload_probe_failures_total{workload=\"db\"} 10",
            "understudy_workload_probe_latency_alarms_total{workload=\"db\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("understudy_workload_probe_latency_seconds{"),
            "{text}"
        );
    }
}
