use super::*;
use understudy_common::inventory::ShadowCopy;
use understudy_common::workload::{RestartPolicy, WorkloadSpec};

fn spec(name: &str) -> WorkloadSpec {
    WorkloadSpec {
        name: name.into(),
        command: vec!["/bin/true".into()],
        env: Vec::new(),
        workdir: None,
        interval_ms: 1000,
        probe: None,
        data_dirs: Vec::new(),
        restart: RestartPolicy::default(),
        ..Default::default()
    }
}

fn record(name: &str, primary: &str, shadow: Option<&str>, generation: u64) -> WorkloadRecord {
    WorkloadRecord {
        spec: spec(name),
        primary: primary.into(),
        shadow: shadow.map(Into::into),
        generation,
        state: WorkloadState::Running,
        unprotected: None,
        last_epoch: None,
        epochs: 0,
        created_unix_ms: 0,
        last_migration: None,
        restarts: 0,
        last_exit: None,
        last_correction: None,
        more_shadows: Default::default(),
    }
}

fn copy(name: &str, generation: u64, shadow: Option<&str>, state: CopyState) -> Held {
    Held {
        workload: name.into(),
        copy: Some(LocalCopy {
            spec: spec(name),
            generation,
            shadows: shadow.into_iter().map(Into::into).collect(),
            pid: 4242,
            state,
        }),
        shadow: None,
        busy: false,
    }
}

fn shadow_only(name: &str, primary: Option<&str>) -> Held {
    Held {
        workload: name.into(),
        copy: None,
        shadow: Some(ShadowCopy {
            primary: primary.map(Into::into),
            newest_epoch: Some(3),
        }),
        busy: false,
    }
}

const RUNNING: CopyState = CopyState::Running { epochs: true };

/// Runs reconciliation of `host`'s `held` against `records` with every workload idle.
fn run(
    host: &str,
    held: Vec<Held>,
    records: Vec<WorkloadRecord>,
    tombstones: Vec<Tombstone>,
    absent_before: &BTreeSet<String>,
) -> (Vec<Fix>, BTreeSet<String>) {
    let records: BTreeMap<_, _> = records
        .into_iter()
        .map(|r| (r.spec.name.clone(), r))
        .collect();
    let tombstones: BTreeMap<_, _> = tombstones
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let idle = records.keys().cloned().collect();
    let inv = Inventory {
        agent_started_unix_ms: 10_000,
        workloads: held,
        fence: Vec::new(),
    };
    reconcile(
        host,
        &inv,
        &Known {
            records: &records,
            tombstones: &tombstones,
            idle: &idle,
        },
        absent_before,
        70_000,
    )
}

fn orders(fixes: &[Fix]) -> Vec<(String, &'static str, u64)> {
    fixes
        .iter()
        .filter_map(|f| match f {
            Fix::Order { host, order, .. } => Some((host.clone(), order.kind(), order.target().1)),
            _ => None,
        })
        .collect()
}

fn corrected(fixes: &[Fix]) -> Vec<&WorkloadRecord> {
    fixes
        .iter()
        .filter_map(|f| match f {
            Fix::Correct(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn agreement_changes_nothing() {
    let (fixes, absent) = run(
        "a",
        vec![copy("w", 2, Some("b"), RUNNING)],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert!(fixes.is_empty(), "{fixes:?}");
    assert!(absent.is_empty());
    let (fixes, _) = run(
        "b",
        vec![shadow_only("w", Some("a"))],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert!(fixes.is_empty(), "{fixes:?}");
}

#[test]
fn a_record_that_says_failed_follows_a_primary_that_runs_it_and_the_primary_catches_up() {
    // What a failed switchover used to leave: the record failed at generation 2, the
    // primary running under 1 and refused by its shadow.
    let mut rec = record("w", "a", Some("b"), 2);
    rec.state = WorkloadState::Failed("resuming on a failed".into());
    let (fixes, _) = run(
        "a",
        vec![copy("w", 1, Some("b"), RUNNING)],
        vec![rec],
        vec![],
        &BTreeSet::new(),
    );
    let fixed = corrected(&fixes);
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].state, WorkloadState::Running);
    let why = &fixed[0].last_correction.as_ref().unwrap().0;
    assert!(
        why.contains("reports it running (pid 4242), not failed"),
        "{why}"
    );
    assert_eq!(orders(&fixes), [("a".into(), "resume", 2)]);
}

#[test]
fn paused_epochs_with_no_switchover_are_resumed() {
    let (fixes, _) = run(
        "a",
        vec![copy(
            "w",
            2,
            Some("b"),
            CopyState::Running { epochs: false },
        )],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("a".into(), "resume", 2)]);
}

#[test]
fn a_primary_that_holds_nothing_twice_in_a_row_makes_the_record_failed() {
    let recs = || vec![record("w", "a", Some("b"), 2)];
    let (fixes, absent) = run("a", vec![], recs(), vec![], &BTreeSet::new());
    assert!(fixes.is_empty(), "one inventory is not enough: {fixes:?}");
    assert!(absent.contains("w"));
    let (fixes, _) = run("a", vec![], recs(), vec![], &absent);
    let fixed = corrected(&fixes);
    assert_eq!(fixed.len(), 1, "{fixes:?}");
    match &fixed[0].state {
        WorkloadState::Failed(why) => {
            assert!(
                why.contains("not running on a") && why.contains("started 60 s ago"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stale_copy_on_another_host_is_stopped_even_under_the_same_generation() {
    // The shadow restored it although the switchover was rolled back: it is demoted.
    let (fixes, _) = run(
        "b",
        vec![copy("w", 2, Some("a"), RUNNING)],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("b".into(), "demote", 2)]);
    // A host that is neither primary nor shadow is released.
    let (fixes, _) = run(
        "c",
        vec![copy("w", 1, None, CopyState::Stopped { final_dump: true })],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("c".into(), "release", 2)]);
}

#[test]
fn a_copy_under_a_newer_generation_than_the_record_wins() {
    let (fixes, _) = run(
        "b",
        vec![copy("w", 3, Some("a"), RUNNING)],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    let fixed = corrected(&fixes);
    assert_eq!(fixed.len(), 1);
    assert_eq!(
        (
            fixed[0].primary.as_str(),
            fixed[0].shadow.as_deref(),
            fixed[0].generation
        ),
        ("b", Some("a"), 3)
    );
    assert!(orders(&fixes).is_empty());
}

#[test]
fn a_shadow_that_forgot_is_rearmed_and_a_former_shadow_drops_its_epochs() {
    let (fixes, _) = run(
        "b",
        vec![shadow_only("w", None)],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("b".into(), "expect-shadow", 2)]);
    let (fixes, _) = run(
        "b",
        vec![],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("b".into(), "expect-shadow", 2)]);
    let (fixes, _) = run(
        "c",
        vec![shadow_only("w", Some("a"))],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("c".into(), "remove", 2)]);
}

#[test]
fn a_deleted_workload_is_stopped_wherever_it_shows_up() {
    let tomb = Tombstone {
        name: "w".into(),
        generation: 5,
        deleted_unix_ms: 1,
    };
    let (fixes, _) = run(
        "a",
        vec![copy("w", 4, Some("b"), CopyState::Orphaned)],
        vec![],
        vec![tomb.clone()],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("a".into(), "remove", 5)]);
    let (fixes, _) = run(
        "b",
        vec![shadow_only("w", Some("a"))],
        vec![],
        vec![tomb],
        &BTreeSet::new(),
    );
    assert_eq!(orders(&fixes), [("b".into(), "remove", 5)]);
}

#[test]
fn a_running_copy_with_no_record_is_adopted_and_its_shadow_rearmed() {
    let (fixes, _) = run(
        "a",
        vec![copy("w", 2, Some("b"), CopyState::Orphaned)],
        vec![],
        vec![],
        &BTreeSet::new(),
    );
    let adopted: Vec<&WorkloadRecord> = fixes
        .iter()
        .filter_map(|f| match f {
            Fix::Adopt(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(adopted.len(), 1, "{fixes:?}");
    let r = adopted[0];
    assert_eq!(
        (r.primary.as_str(), r.shadow.as_deref(), r.generation),
        ("a", Some("b"), 2)
    );
    assert!(r
        .unprotected
        .as_ref()
        .unwrap()
        .contains("no longer supervises"));
    assert!(r
        .last_correction
        .as_ref()
        .unwrap()
        .0
        .contains("rebuilt from a's report"));
    assert_eq!(orders(&fixes), [("b".into(), "expect-shadow", 2)]);
}

#[test]
fn busy_workloads_and_busy_copies_are_left_alone() {
    let records: BTreeMap<_, _> = [("w".to_string(), record("w", "a", Some("b"), 2))].into();
    let inv = Inventory {
        agent_started_unix_ms: 0,
        workloads: vec![copy("w", 1, Some("b"), RUNNING)],
        fence: Vec::new(),
    };
    let (fixes, absent) = reconcile(
        "a",
        &inv,
        &Known {
            records: &records,
            tombstones: &BTreeMap::new(),
            idle: &BTreeSet::new(),
        },
        &BTreeSet::new(),
        0,
    );
    assert!(fixes.is_empty() && absent.is_empty());
    let mut busy = copy("w", 1, Some("b"), RUNNING);
    busy.busy = true;
    let (fixes, _) = run(
        "a",
        vec![busy],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert!(fixes.is_empty(), "{fixes:?}");
}

#[test]
fn a_primary_pointed_at_another_shadow_is_told_the_recorded_one() {
    let (fixes, _) = run(
        "a",
        vec![copy("w", 2, Some("c"), RUNNING)],
        vec![record("w", "a", Some("b"), 2)],
        vec![],
        &BTreeSet::new(),
    );
    assert_eq!(
        fixes,
        vec![Fix::SetShadow {
            host: "a".into(),
            workload: "w".into(),
            generation: 2,
            shadows: vec!["b".into()]
        }]
    );
}
