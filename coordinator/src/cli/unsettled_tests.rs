use std::time::Duration;

use understudy_common::exit;
use understudy_common::workload::WorkloadSpec;

use super::super::test_http::serve;
use super::*;
use crate::workloads::{MigrationSummary, MoreShadows};

/// A record of `hop` on `primary` in `state` under `generation`, whose last switchover (if
/// any) ran under `last.0` and ended `last.1`.
fn record(
    primary: &str,
    state: WorkloadState,
    generation: u64,
    last: Option<(u64, &str)>,
) -> WorkloadRecord {
    WorkloadRecord {
        spec: WorkloadSpec {
            name: "hop".into(),
            ..WorkloadSpec::default()
        },
        primary: primary.into(),
        shadow: Some(
            if primary == "host-a" {
                "host-b"
            } else {
                "host-a"
            }
            .into(),
        ),
        generation,
        state,
        unprotected: None,
        last_epoch: None,
        epochs: 3,
        created_unix_ms: 1,
        last_migration: last.map(|(generation, outcome)| MigrationSummary {
            from: "host-a".into(),
            to: "host-b".into(),
            generation,
            outcome: outcome.into(),
            error: (outcome != "succeeded").then(|| "the restore failed".into()),
            freeze_ms: Some(150),
            total_ms: 1200,
            finished_unix_ms: 2,
            recovery_epoch: None,
            recovery_age_ms: None,
        }),
        restarts: 0,
        last_exit: None,
        last_correction: None,
        more_shadows: MoreShadows::default(),
    }
}

fn view_json(r: WorkloadRecord) -> String {
    serde_json::to_string(&WorkloadView {
        record: r,
        protection: None,
    })
    .unwrap()
}

#[test]
fn a_move_still_under_way_is_not_settled() {
    let r = record("host-a", WorkloadState::Migrating, 4, None);
    let why = move_settled("hop", 3, Some(&r)).unwrap_err();
    assert!(why.contains("migrating under generation 4"), "{why}");
}

#[test]
fn a_move_that_succeeded_is_reported_moved() {
    let r = record("host-b", WorkloadState::Running, 4, Some((4, "succeeded")));
    let s = move_settled("hop", 3, Some(&r)).unwrap();
    assert_eq!(s.code, 0);
    assert!(s.says.contains("from host-a to host-b"), "{}", s.says);
    assert!(s.says.contains("frozen for 150 ms"), "{}", s.says);
}

#[test]
fn a_move_rolled_back_leaves_it_where_it_was_and_says_ask_again() {
    let r = record(
        "host-a",
        WorkloadState::Running,
        4,
        Some((4, "rolled back")),
    );
    let s = move_settled("hop", 3, Some(&r)).unwrap();
    assert_eq!(s.code, exit::TEMP_FAIL);
    assert!(
        s.says.contains("rolled back: the restore failed"),
        "{}",
        s.says
    );
    assert!(s.says.contains("runs on host-a"), "{}", s.says);
}

#[test]
fn a_request_that_never_took_effect_is_not_taken_for_an_older_move() {
    // The last switchover on record ran before this request (generation 2 < 3).
    let r = record("host-b", WorkloadState::Running, 3, Some((2, "succeeded")));
    let s = move_settled("hop", 3, Some(&r)).unwrap();
    assert_eq!(s.code, exit::TEMP_FAIL);
    assert!(s.says.contains("was not moved"), "{}", s.says);
    assert!(s.says.contains("still runs on host-b"), "{}", s.says);
}

#[test]
fn a_workload_that_failed_or_vanished_meanwhile_is_an_error() {
    let failed = record(
        "host-b",
        WorkloadState::Failed("no copy reported".into()),
        4,
        Some((4, "failed")),
    );
    let s = move_settled("hop", 3, Some(&failed)).unwrap();
    assert_eq!(s.code, exit::SOFTWARE);
    assert!(s.says.contains("(failed)"), "{}", s.says);
    let s = move_settled("hop", 3, None).unwrap();
    assert_eq!(s.code, exit::SOFTWARE);
    assert!(s.says.contains("no record"), "{}", s.says);
}

#[test]
fn a_lost_move_is_followed_through_the_new_leaders_record_to_its_end() {
    let base = serve(vec![
        (
            200,
            view_json(record("host-a", WorkloadState::Migrating, 4, None)),
        ),
        (
            200,
            view_json(record(
                "host-b",
                WorkloadState::Running,
                4,
                Some((4, "succeeded")),
            )),
        ),
    ]);
    let code = move_outcome_within(
        &base,
        "hop",
        3,
        Output::Table,
        "member 1 stopped leading",
        Duration::from_secs(10),
    );
    assert_eq!(code, 0);
}

#[test]
fn a_move_not_settled_within_the_wait_is_reported_unsettled_not_guessed() {
    // The record says migrating, then the group cannot be reached any more.
    let base = serve(vec![(
        200,
        view_json(record("host-a", WorkloadState::Migrating, 4, None)),
    )]);
    let code = move_outcome_within(
        &base,
        "hop",
        3,
        Output::Table,
        "member 1 stopped leading",
        Duration::from_millis(1500),
    );
    assert_eq!(code, exit::SOFTWARE);
}

#[test]
fn a_delete_asked_again_finds_the_workload_gone_or_removes_it() {
    let gone = serve(vec![(404, r#"{"error":"no workload named \"hop\""}"#)]);
    let r = delete_again(
        &gone,
        "/v1/workloads/hop",
        "hop",
        "member 1 stopped leading",
    );
    assert!(matches!(r, Ok(None)), "{r:?}");
    let rec = record("host-a", WorkloadState::Running, 5, None);
    let body = serde_json::to_string(&rec).unwrap();
    let there = serve(vec![(200, body)]);
    let r = delete_again(&there, "/v1/workloads/hop", "hop", "no answer");
    assert_eq!(r.unwrap(), Some(rec));
    let refused = serve(vec![(
        409,
        r#"{"error":"primary host-a did not confirm that it stopped \"hop\""}"#,
    )]);
    let r = delete_again(&refused, "/v1/workloads/hop", "hop", "no answer");
    assert!(matches!(r, Err(ApiFailure::Refused(409, _))), "{r:?}");
}
