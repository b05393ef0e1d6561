use super::*;
use understudy_common::workload::{EpochReport, WorkloadSpec};

const SETTINGS: Settings = Settings {
    mode: FailoverMode::Auto,
    fence_after: Duration::from_secs(15),
    failover_after: Duration::from_secs(30),
    replace_shadow_after: Duration::from_secs(300),
};

fn record(
    name: &str,
    primary: &str,
    shadow: Option<&str>,
    epoch_on: Option<&str>,
) -> WorkloadRecord {
    WorkloadRecord {
        spec: WorkloadSpec {
            name: name.into(),
            command: vec!["/bin/true".into()],
            ..WorkloadSpec::default()
        },
        primary: primary.into(),
        shadow: shadow.map(Into::into),
        generation: 3,
        state: WorkloadState::Running,
        unprotected: None,
        last_epoch: epoch_on.map(|s| EpochReport {
            epoch: 7,
            shadow: s.into(),
            ..Default::default()
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

/// Hosts: `up` connected, the others silent for `silent` seconds.
fn hosts(up: &'static [&'static str], silent: u64) -> impl Fn(&str) -> HostNow {
    move |h| HostNow {
        connected: up.contains(&h),
        silent_for: if up.contains(&h) {
            Duration::ZERO
        } else {
            Duration::from_secs(silent)
        },
    }
}

fn all_idle(records: &[WorkloadRecord]) -> BTreeSet<String> {
    records.iter().map(|r| r.spec.name.clone()).collect()
}

#[test]
fn a_host_silent_for_failover_after_fails_over_to_a_shadow_holding_the_recovery_point() {
    let recs = vec![record("w", "a", Some("b"), Some("b"))];
    let idle = all_idle(&recs);
    assert!(
        decide(&recs, hosts(&["b"], 29), &idle, &SETTINGS).is_empty(),
        "not yet"
    );
    assert_eq!(
        decide(&recs, hosts(&["b"], 30), &idle, &SETTINGS),
        vec![Decision::FailOver {
            workload: "w".into(),
            from: "a".into(),
            to: "b".into()
        }]
    );
    assert!(
        decide(&recs, hosts(&["a", "b"], 300), &idle, &SETTINGS).is_empty(),
        "a connected primary never fails over"
    );
    assert!(
        decide(&recs, hosts(&["b"], 300), &BTreeSet::new(), &SETTINGS).is_empty(),
        "a workload an operation holds is left to it"
    );
}

#[test]
fn without_a_reachable_shadow_holding_the_recovery_point_the_workload_is_lost_once() {
    for (rec, says) in [
        (
            record("w", "a", Some("b"), Some("b")),
            "shadow b, which holds the recovery point (epoch 7), unreachable too",
        ),
        (
            record("w", "a", Some("b"), None),
            "holds no committed epoch",
        ),
        (record("w", "a", None, None), "has no shadow"),
    ] {
        let recs = vec![rec];
        let d = decide(&recs, hosts(&[], 31), &all_idle(&recs), &SETTINGS);
        match &d[..] {
            [Decision::Lose { why, .. }] => assert!(why.contains(says), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut lost = recs[0].clone();
        lost.state = WorkloadState::Lost("x".into());
        assert!(decide(&[lost], hosts(&[], 40), &all_idle(&recs), &SETTINGS).is_empty());
    }
    // A recovery point recorded on another host (an old shadow) is never restored.
    let recs = vec![record("w", "a", Some("c"), Some("b"))];
    let d = decide(&recs, hosts(&["b", "c"], 31), &all_idle(&recs), &SETTINGS);
    assert!(matches!(&d[..], [Decision::Lose { .. }]), "{d:?}");
    // A lost workload fails over as soon as its shadow is back.
    let mut lost = record("w", "a", Some("b"), Some("b"));
    lost.state = WorkloadState::Lost("shadow gone".into());
    let d = decide(
        &[lost.clone()],
        hosts(&["b"], 60),
        &all_idle(&[lost]),
        &SETTINGS,
    );
    assert!(matches!(&d[..], [Decision::FailOver { .. }]), "{d:?}");
}

#[test]
fn manual_failover_and_stopped_workloads_are_left_alone_and_leases_follow_the_mode() {
    let mut manual = record("m", "a", Some("b"), Some("b"));
    manual.spec.failover = FailoverMode::Manual;
    let mut exited = record("e", "a", Some("b"), Some("b"));
    exited.state = WorkloadState::Exited("status 0".into());
    let auto = record("w", "a", Some("b"), Some("b"));
    let recs = vec![manual, exited, auto];
    let idle = all_idle(&recs);
    let d = decide(&recs, hosts(&["b"], 300), &idle, &SETTINGS);
    assert_eq!(d.len(), 1, "{d:?}");
    let l = leases("a", &recs, &SETTINGS);
    let by: Vec<(&str, Option<u64>)> = l
        .iter()
        .map(|l| (l.workload.as_str(), l.valid_ms))
        .collect();
    assert_eq!(by, [("m", None), ("w", Some(15_000))]);
    assert!(leases("b", &recs, &SETTINGS).is_empty());
    let off = Settings {
        mode: FailoverMode::Manual,
        ..SETTINGS
    };
    assert!(decide(&recs, hosts(&["b"], 300), &idle, &off).is_empty());
    assert!(leases("a", &recs, &off)
        .iter()
        .all(|l| l.valid_ms.is_none()));
}

#[test]
fn a_failover_that_keeps_failing_is_tried_less_often_up_to_a_minute() {
    let secs: Vec<u64> = (1..=8).map(|n| retry_after(n).as_secs()).collect();
    assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(retry_after(u32::MAX), Duration::from_secs(60));
}

/// `w` on `a`, shadowed on `b` and `c`, which committed epochs `on_b` and `on_c`.
fn two_shadows(on_b: Option<u64>, on_c: Option<u64>) -> WorkloadRecord {
    let mut r = record("w", "a", Some("b"), None);
    r.more_shadows.wanted = 2;
    r.more_shadows.hosts = vec!["c".into()];
    for (host, epoch) in [("b", on_b), ("c", on_c)] {
        if let Some(epoch) = epoch {
            r.epoch_committed(EpochReport {
                generation: 3,
                epoch,
                shadow: host.into(),
                ..Default::default()
            });
        }
    }
    r
}

#[test]
fn with_two_shadows_the_connected_one_holding_the_newest_epoch_takes_over() {
    let to = |r: &WorkloadRecord, up: &'static [&'static str]| {
        let recs = vec![r.clone()];
        match &decide(&recs, hosts(up, 60), &all_idle(&recs), &SETTINGS)[..] {
            [Decision::FailOver { to, .. }] => Some(to.clone()),
            _ => None,
        }
    };
    let r = two_shadows(Some(7), Some(9));
    assert_eq!(r.last_epoch.as_ref().map(|e| e.epoch), Some(9));
    assert_eq!((r.epoch_on("b"), r.epoch_on("c")), (Some(7), Some(9)));
    assert_eq!(to(&r, &["b", "c"]).as_deref(), Some("c"), "the newest");
    // Its holder unreachable: the other one, which holds an older epoch, rather than none.
    assert_eq!(to(&r, &["b"]).as_deref(), Some("b"));
    // A shadow that committed nothing is no candidate.
    let r = two_shadows(None, Some(4));
    assert_eq!(to(&r, &["b", "c"]).as_deref(), Some("c"));
    assert_eq!(to(&r, &["b"]), None);
}

#[test]
fn a_shadow_whose_host_is_silent_for_long_enough_is_replaced_and_no_sooner() {
    let recs = vec![record("w", "a", Some("b"), Some("b"))];
    let idle = all_idle(&recs);
    // Silent for less than replace_shadow_after (a restart, a blip): kept.
    assert!(stranded_shadows(&recs, hosts(&["a"], 299), &idle, &SETTINGS).is_empty());
    assert_eq!(
        stranded_shadows(&recs, hosts(&["a"], 300), &idle, &SETTINGS),
        [StrandedShadow {
            workload: "w".into(),
            host: "b".into(),
            silent_for: Duration::from_secs(300),
        }]
    );
    // Its host connected: nothing to replace.
    assert!(stranded_shadows(&recs, hosts(&["a", "b"], 900), &idle, &SETTINGS).is_empty());
    // Zero turns it off.
    let never = Settings {
        replace_shadow_after: Duration::ZERO,
        ..SETTINGS
    };
    assert!(stranded_shadows(&recs, hosts(&["a"], 900), &idle, &never).is_empty());
}

#[test]
fn a_shadow_is_not_replaced_while_its_primary_is_away_busy_or_not_running() {
    // The primary away too: the shadow is what a failover restores from.
    let recs = vec![record("w", "a", Some("b"), Some("b"))];
    assert!(stranded_shadows(&recs, hosts(&[], 900), &all_idle(&recs), &SETTINGS).is_empty());
    // A move or another operation holds it.
    assert!(stranded_shadows(&recs, hosts(&["a"], 900), &BTreeSet::new(), &SETTINGS).is_empty());
    // Not running.
    let mut lost = recs[0].clone();
    lost.state = WorkloadState::Lost("gone".into());
    let recs = vec![lost];
    assert!(stranded_shadows(&recs, hosts(&["a"], 900), &all_idle(&recs), &SETTINGS).is_empty());
}

#[test]
fn with_two_shadows_only_the_silent_one_is_replaced() {
    let recs = vec![two_shadows(Some(7), Some(9))];
    let found = stranded_shadows(&recs, hosts(&["a", "b"], 600), &all_idle(&recs), &SETTINGS);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].host, "c");
    // Both silent: one at a time, the first.
    let found = stranded_shadows(&recs, hosts(&["a"], 600), &all_idle(&recs), &SETTINGS);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].host, "b");
}
