//! The fleet as the coordinator sees it — whether each host's agent is connected, each
//! workload's state, protection and recovery point — in the Prometheus text format,
//! rendered from the registry's and the workload table's records at scrape time. A host's
//! own health is on its agent's `/metrics` (scraped like node_exporter), not repeated here.
//! Pure: no I/O, the caller passes the records and the time.

use understudy_common::prom::{family, per_item, sample, PerItem};

use crate::registry::HostRecord;
use crate::workloads::{WorkloadRecord, WorkloadState};

/// Every fleet family; each family's HELP and TYPE even when the fleet is empty.
pub fn render(hosts: &[HostRecord], workloads: &[WorkloadRecord], now_unix_ms: u64) -> String {
    let mut out = String::new();
    let o = &mut out;
    let age = |ms: u64| now_unix_ms.saturating_sub(ms) as f64 / 1000.0;

    family(
        o,
        "understudy_host_connected",
        "gauge",
        "1 while the host's agent has a live, heartbeating connection.",
    );
    for h in hosts {
        sample(
            o,
            "understudy_host_connected",
            &[("host", &h.name)],
            f64::from(u8::from(h.connected)),
        );
    }
    family(
        o,
        "understudy_host_last_seen_seconds",
        "gauge",
        "Seconds since the coordinator last heard from the host.",
    );
    for h in hosts {
        sample(
            o,
            "understudy_host_last_seen_seconds",
            &[("host", &h.name)],
            age(h.last_seen_unix_ms),
        );
    }

    family(
        o,
        "understudy_workload_state",
        "gauge",
        "1 for the workload's current state (starting, running, migrating, exited, failed), 0 for the others.",
    );
    for w in workloads {
        for state in WorkloadState::NAMES {
            sample(
                o,
                "understudy_workload_state",
                &[
                    ("workload", &w.spec.name),
                    ("primary", &w.primary),
                    ("state", state),
                ],
                f64::from(u8::from(w.state.name() == state)),
            );
        }
    }
    family(
        o,
        "understudy_workload_recovery_point_age_seconds",
        "gauge",
        "Age of the newest checkpoint committed on the shadow: what a failover now would lose.",
    );
    for w in workloads {
        if let Some(e) = &w.last_epoch {
            sample(
                o,
                "understudy_workload_recovery_point_age_seconds",
                &[("workload", &w.spec.name), ("shadow", &e.shadow)],
                age(e.committed_unix_ms),
            );
        }
    }
    // The families with one sample per workload, labelled by its name alone.
    let per_workload: [PerItem<WorkloadRecord>; 6] = [
        (
            "understudy_workload_protected",
            "gauge",
            "1 while the workload has a shadow host keeping its checkpoints current.",
            |w| {
                let protected = w.shadow.is_some() && w.unprotected.is_none();
                Some(f64::from(u8::from(protected)))
            },
        ),
        (
            "understudy_workload_checkpoint_interval_seconds",
            "gauge",
            "Time between the workload's checkpoints: its spec's interval, or longer while its agent's freeze or CPU budget would not allow that.",
            |w| {
                let paced = w.last_epoch.as_ref().and_then(|e| e.cadence);
                let ms = paced.map_or(w.spec.interval_ms, |c| c.interval_ms);
                Some(ms as f64 / 1000.0)
            },
        ),
        (
            "understudy_workload_checkpoint_frozen_seconds",
            "gauge",
            "How long the workload was frozen for its newest committed checkpoint.",
            |w| w.last_epoch.as_ref().map(|e| e.frozen_ms as f64 / 1000.0),
        ),
        (
            "understudy_workload_epochs_committed_total",
            "counter",
            "Checkpoint epochs committed on a shadow since the workload was created.",
            |w| Some(w.epochs as f64),
        ),
        (
            "understudy_workload_generation",
            "gauge",
            "The workload's generation: bumped by every switchover.",
            |w| Some(w.generation as f64),
        ),
        (
            "understudy_workload_last_switchover_frozen_seconds",
            "gauge",
            "How long the workload was frozen by its last switchover (final checkpoint to restored).",
            |w| {
                let ms = w.last_migration.as_ref()?.freeze_ms?;
                Some(ms as f64 / 1000.0)
            },
        ),
    ];
    per_item(o, &per_workload, workloads, "workload", |w| &w.spec.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::telemetry::{HealthLevel, HealthReport, TelemetrySummary};
    use understudy_common::workload::{EpochReport, RestartPolicy, WorkloadSpec};

    fn host(name: &str, connected: bool, health: Option<HealthReport>) -> HostRecord {
        HostRecord {
            name: name.into(),
            address: None,
            connected,
            first_seen_unix_ms: 0,
            last_seen_unix_ms: 95_000,
            agent_version: "0.1.0".into(),
            telemetry: Some(TelemetrySummary {
                sampled_at_unix_ms: 95_000,
                cpu_percent: 1.0,
                memory_used_bytes: 1,
                memory_total_bytes: 2,
                load: [0.0; 3],
                uptime_secs: 1,
                health,
                probes: Vec::new(),
            }),
            heartbeats: 3,
            data_port: None,
        }
    }

    fn workload(name: &str, state: WorkloadState, epoch: Option<u64>) -> WorkloadRecord {
        WorkloadRecord {
            spec: WorkloadSpec {
                name: name.into(),
                command: vec!["true".into()],
                env: Vec::new(),
                workdir: None,
                interval_ms: 1000,
                probe: None,
                data_dirs: Vec::new(),
                restart: RestartPolicy::default(),
                ..Default::default()
            },
            primary: "host-a".into(),
            shadow: Some("host-b".into()),
            generation: 2,
            state,
            unprotected: None,
            last_epoch: epoch.map(|committed| EpochReport {
                workload: name.into(),
                shadow: "host-b".into(),
                frozen_ms: 120,
                committed_unix_ms: committed,
                ..EpochReport::default()
            }),
            epochs: 7,
            created_unix_ms: 0,
            last_migration: None,
            restarts: 0,
            last_exit: None,
            last_correction: None,
            more_shadows: Default::default(),
        }
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    #[test]
    fn hosts_show_whether_connected_and_when_last_heard() {
        let critical = HealthReport {
            score: 55,
            level: HealthLevel::Critical,
            anomaly: 3.0,
            anomaly_threshold: 1.0,
            top: Vec::new(),
            note: None,
            forecasts: Vec::new(),
            risk: None,
            kernel_errors: Vec::new(),
            percentile: None,
        };
        let hosts = [
            host("host-a", true, Some(critical)),
            host("host-b", false, None),
        ];
        let text = render(&hosts, &[], 100_000);
        has(&text, "understudy_host_connected{host=\"host-a\"} 1");
        has(&text, "understudy_host_connected{host=\"host-b\"} 0");
        has(
            &text,
            "understudy_host_last_seen_seconds{host=\"host-b\"} 5",
        );
        assert!(
            !text.contains("understudy_host_health_score"),
            "host health is the agent's to export: {text}"
        );
    }

    #[test]
    fn workloads_show_one_state_and_their_recovery_point_age() {
        let failed = workload("db", WorkloadState::Failed("lost".into()), None);
        let running = workload("web", WorkloadState::Running, Some(97_500));
        let text = render(&[], &[failed, running], 100_000);
        has(
            &text,
            "understudy_workload_state{workload=\"db\",primary=\"host-a\",state=\"failed\"} 1",
        );
        has(
            &text,
            "understudy_workload_state{workload=\"db\",primary=\"host-a\",state=\"running\"} 0",
        );
        has(
            &text,
            "understudy_workload_state{workload=\"web\",primary=\"host-a\",state=\"running\"} 1",
        );
        has(
            &text,
            "understudy_workload_recovery_point_age_seconds{workload=\"web\",shadow=\"host-b\"} 2.5",
        );
        has(
            &text,
            "understudy_workload_checkpoint_frozen_seconds{workload=\"web\"} 0.12",
        );
        assert!(
            !text.contains("recovery_point_age_seconds{workload=\"db\""),
            "no epoch, no recovery point: {text}"
        );
        has(&text, "understudy_workload_protected{workload=\"web\"} 1");
        has(
            &text,
            "understudy_workload_checkpoint_interval_seconds{workload=\"web\"} 1",
        );
    }
}
