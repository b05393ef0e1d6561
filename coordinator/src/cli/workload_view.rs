//! How a workload reads in the CLI: the short state of `workload list`, the full state and
//! reasons of `workload show`, its command shell-quoted, its probe and its recovery point.
//! Pure text functions of the API's view and the time, unit-tested.

use std::time::Duration;

use understudy_common::workload::{CadenceLimit, Probe};

use super::api::short_duration;
use crate::server::http::WorkloadView;
use crate::workloads::{WorkloadRecord, WorkloadState};

/// The one-word-or-two state of `workload list`: the state, and what limits its
/// protection, without the reasons (`workload show` has them).
pub fn short_state(w: &WorkloadView) -> String {
    let state = w.record.state.name();
    if w.record.state != WorkloadState::Running {
        return state.to_owned();
    }
    match w.protection.as_deref() {
        None => state.to_owned(),
        Some(p) if p.starts_with("shadow unreachable") => format!("{state}, shadow unreachable"),
        Some(p) if p.starts_with("shadow lagging") => format!("{state}, shadow lagging"),
        Some(_) => format!("{state}, unprotected"),
    }
}

/// The state of `workload show`, with its reason.
pub fn long_state(r: &WorkloadRecord) -> String {
    match &r.state {
        WorkloadState::Exited(s) => format!("exited ({s})"),
        WorkloadState::Failed(e) => format!("failed: {e}"),
        WorkloadState::Lost(e) => format!("lost: {e}"),
        other => other.name().to_owned(),
    }
}

/// What limits protection, as `workload show` says it, or `protected`.
pub fn protection_text(w: &WorkloadView) -> String {
    match w.protection.as_deref() {
        None if w.record.state == WorkloadState::Running => "protected".into(),
        None => "-".into(),
        Some(p)
            if p.starts_with("unprotected")
                || p.starts_with("shadow ")
                || p.starts_with("primary ") =>
        {
            p.to_owned()
        }
        Some(p) => format!("unprotected: {p}"),
    }
}

/// The command as a shell would need it typed.
pub fn quoted(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| format!("{argv:?}"))
}

/// `tcp port 6379` or `command: /usr/bin/check --fast`.
pub fn probe_text(p: &Probe) -> String {
    match p {
        Probe::Tcp { port } => format!("tcp port {port}"),
        Probe::Command { argv } => format!("command: {}", quoted(argv)),
    }
}

/// The epoch interval of `workload show`: the spec's, or the one its primary paces epochs
/// at and the budget that set it: `6.2s (the freeze budget binds; spec 1s)`.
pub fn interval_text(r: &WorkloadRecord) -> String {
    let spec = humantime::format_duration(Duration::from_millis(r.spec.interval_ms));
    match r.last_epoch.as_ref().and_then(|e| e.cadence) {
        Some(c) if c.limit != CadenceLimit::Spec => format!(
            "{:.1}s ({} binds; spec {spec})",
            c.interval_ms as f64 / 1000.0,
            c.limit.describe()
        ),
        _ => spec.to_string(),
    }
}

/// Where the recovery point is and how old: `epoch 17 on host-b, committed 3s ago`.
pub fn recovery_point(r: &WorkloadRecord, now_ms: u64) -> String {
    match &r.last_epoch {
        Some(e) => format!(
            "epoch {} on {}, committed {} ago",
            e.epoch,
            e.shadow,
            short_duration(Duration::from_millis(
                now_ms.saturating_sub(e.committed_unix_ms)
            ))
        ),
        None => match (&r.shadow, &r.last_migration) {
            (Some(s), Some(_)) => format!(
                "none yet: {s} has not committed an epoch since the workload moved to {}",
                r.primary
            ),
            (Some(s), None) => format!("none yet: {s} has not committed an epoch"),
            (None, _) => "none: no shadow".into(),
        },
    }
}

/// The recovery point column of `workload list`: `epoch 17, 3s old`.
pub fn recovery_point_short(r: &WorkloadRecord, now_ms: u64) -> String {
    match &r.last_epoch {
        Some(e) => format!(
            "epoch {}, {} old",
            e.epoch,
            short_duration(Duration::from_millis(
                now_ms.saturating_sub(e.committed_unix_ms)
            ))
        ),
        None => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::workload::{EpochReport, RestartPolicy, WorkloadSpec};

    fn view(state: WorkloadState, protection: Option<&str>) -> WorkloadView {
        WorkloadView {
            record: WorkloadRecord {
                spec: WorkloadSpec {
                    name: "w".into(),
                    command: vec!["/bin/true".into()],
                    env: Vec::new(),
                    workdir: None,
                    interval_ms: 1000,
                    probe: None,
                    data_dirs: Vec::new(),
                    restart: RestartPolicy::default(),
                    ..Default::default()
                },
                primary: "a".into(),
                shadow: Some("b".into()),
                generation: 1,
                state,
                unprotected: None,
                last_epoch: None,
                epochs: 0,
                created_unix_ms: 0,
                last_migration: None,
                restarts: 0,
                last_exit: None,
                last_correction: None,
                more_shadows: Default::default(),
            },
            protection: protection.map(Into::into),
        }
    }

    #[test]
    fn the_list_shows_a_short_state_and_show_the_reason() {
        let criu = "unprotected: criu dump failed (-52): Message reply from daemon is trimmed (12/0); Error (criu/cr-dump.c:1234): Can't get proc fd; a very long line of CRIU output follows here";
        let w = view(WorkloadState::Running, Some(criu));
        assert_eq!(short_state(&w), "running, unprotected");
        assert_eq!(protection_text(&w), criu);
        let w = view(
            WorkloadState::Running,
            Some("shadow unreachable: b is disconnected"),
        );
        assert_eq!(short_state(&w), "running, shadow unreachable");
        let w = view(WorkloadState::Failed("x".repeat(300)), None);
        assert_eq!(short_state(&w), "failed");
        assert!(long_state(&w.record).len() > 300);
        assert_eq!(
            protection_text(&view(WorkloadState::Running, None)),
            "protected"
        );
    }

    #[test]
    fn commands_keep_their_quoting() {
        let argv: Vec<String> = ["sh", "-c", "a; b", ""]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(quoted(&argv), "sh -c 'a; b' ''");
        assert_eq!(probe_text(&Probe::Tcp { port: 6379 }), "tcp port 6379");
    }

    #[test]
    fn the_recovery_point_names_its_host_and_age_and_says_when_there_is_none() {
        let mut w = view(WorkloadState::Running, None).record;
        assert_eq!(
            recovery_point(&w, 0),
            "none yet: b has not committed an epoch"
        );
        w.last_epoch = Some(EpochReport {
            epoch: 17,
            shadow: "b".into(),
            committed_unix_ms: 1_000,
            ..Default::default()
        });
        assert_eq!(recovery_point(&w, 4_000), "epoch 17 on b, committed 3s ago");
        assert_eq!(recovery_point_short(&w, 4_000), "epoch 17, 3s old");
    }

    #[test]
    fn the_interval_says_which_budget_lengthened_it() {
        use understudy_common::workload::Cadence;
        let mut w = view(WorkloadState::Running, None).record;
        assert_eq!(interval_text(&w), "1s");
        let paced = |limit| {
            Some(EpochReport {
                cadence: Some(Cadence {
                    interval_ms: 6_240,
                    limit,
                }),
                ..Default::default()
            })
        };
        w.last_epoch = paced(CadenceLimit::Spec);
        assert_eq!(interval_text(&w), "1s");
        w.last_epoch = paced(CadenceLimit::FreezeBudget);
        assert_eq!(interval_text(&w), "6.2s (the freeze budget binds; spec 1s)");
        w.last_epoch = paced(CadenceLimit::CpuBudget);
        assert_eq!(interval_text(&w), "6.2s (the CPU budget binds; spec 1s)");
    }
}
