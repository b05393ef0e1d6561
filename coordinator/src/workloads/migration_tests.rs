use super::*;
use understudy_common::inventory::{CopyState, Held, LocalCopy};
use understudy_common::workload::{EpochReport, PassedOver, RestartPolicy};

fn peer(n: &str) -> Peer {
    Peer {
        name: n.into(),
        addr: "10.0.0.2:7442".parse().unwrap(),
    }
}

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        name: "w".into(),
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

fn epoch(n: u64) -> Delivery {
    Delivery::Reply(OrderReply::Epoch(EpochReport {
        epoch: n,
        ..Default::default()
    }))
}

fn failed(e: &str) -> Delivery {
    Delivery::Reply(OrderReply::Failed(e.into()))
}

fn done() -> Delivery {
    Delivery::Reply(OrderReply::Done)
}

fn restored() -> Delivery {
    restored_from(11, Vec::new())
}

/// The target restored `epoch` (after passing over `passed_over`).
fn restored_from(epoch: u64, passed_over: Vec<PassedOver>) -> Delivery {
    Delivery::Reply(OrderReply::Restored {
        epoch,
        pid: 1,
        restore_ms: 5,
        check_ms: 20,
        passed_over,
        memory_ms: 0,
    })
}

fn held(generation: u64, state: CopyState) -> Delivery {
    held_busy(generation, state, false)
}

fn held_busy(generation: u64, state: CopyState, busy: bool) -> Delivery {
    Delivery::Reply(OrderReply::Held(Some(Box::new(Held {
        workload: "w".into(),
        copy: Some(LocalCopy {
            spec: spec(),
            generation,
            shadows: Vec::new(),
            pid: 42,
            state,
        }),
        shadow: None,
        busy,
    }))))
}

/// (host, order kind, generation) of a step.
fn what(step: &Step) -> (String, &'static str, u64) {
    match step {
        Step::Send { host, order, .. } => (host.clone(), order.kind(), order.target().1),
        Step::Finished(_) => ("-".into(), "finished", 0),
    }
}

fn start() -> Migration {
    Migration::start(spec(), "a", peer("b"), 4, Some(peer("a")), 1_000).0
}

/// A migration whose restore order has been sent.
fn at_restore() -> Migration {
    let mut m = start();
    m.on_delivery(epoch(10), 1_000);
    let s = m.on_delivery(epoch(11), 1_050);
    assert_eq!(what(&s), ("b".into(), "restore", 4));
    m
}

#[test]
fn happy_path_orders_and_measures_freeze() {
    let (mut m, s) = Migration::start(spec(), "a", peer("b"), 4, Some(peer("a")), 1_000);
    assert_eq!(what(&s), ("a".into(), "checkpoint", 4));
    let s = m.on_delivery(epoch(10), 1_000);
    assert_eq!(what(&s), ("a".into(), "final-checkpoint", 4));
    let s = m.on_delivery(epoch(11), 1_050);
    if let Step::Send {
        order:
            Order::Restore {
                epoch,
                shadows,
                fall_back,
                ..
            },
        ..
    } = &s
    {
        assert_eq!(*epoch, 11);
        // A switchover's original can resume: its restore never falls back.
        assert!(!fall_back);
        assert_eq!(
            shadows.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    } else {
        panic!("{s:?}");
    }
    let s = m.on_delivery(restored(), 1_250);
    assert_eq!(what(&s), ("a".into(), "release", 4));
    assert_eq!(m.freeze_ms, Some(230));
    assert_eq!(
        m.on_delivery(done(), 1_300),
        Step::Finished(Outcome::Succeeded)
    );
    assert_eq!(m.phase, Phase::Finished);
}

fn epoch_changed(n: u64, mib: u64) -> Delivery {
    Delivery::Reply(OrderReply::Epoch(EpochReport {
        epoch: n,
        bytes_changed: mib << 20,
        ..Default::default()
    }))
}

#[test]
fn running_epochs_repeat_while_they_carry_much_and_no_more_than_the_rounds() {
    // Shrinking: 660, 200 MiB are repeated; 20 MiB is small: the final epoch follows.
    let mut m = start();
    let s = m.on_delivery(epoch_changed(10, 660), 1_000);
    assert_eq!(what(&s), ("a".into(), "checkpoint", 4));
    let s = m.on_delivery(epoch_changed(11, 200), 1_000);
    assert_eq!(what(&s), ("a".into(), "checkpoint", 4));
    assert_eq!(m.phase, Phase::Sync);
    let s = m.on_delivery(epoch_changed(12, 20), 1_000);
    assert_eq!(what(&s), ("a".into(), "final-checkpoint", 4));
    assert_eq!(m.freeze_started_unix_ms, Some(1_000));

    // Never small: the final epoch comes after SYNC_ROUNDS running ones.
    let mut m = start();
    let mut running = 0;
    loop {
        running += 1;
        let s = m.on_delivery(epoch_changed(10 + running, 500), 1_000);
        if what(&s).1 == "final-checkpoint" {
            break;
        }
        assert!(running < 10, "{s:?}");
    }
    assert_eq!(running, SYNC_ROUNDS as u64);
}

#[test]
fn failure_before_freeze_resumes_where_it_runs() {
    let mut m = start();
    let s = m.on_delivery(failed("shadow unreachable"), 1_000);
    assert_eq!(what(&s), ("a".into(), "resume", 4));
    match m.on_delivery(done(), 1_000) {
        Step::Finished(Outcome::RolledBack(e)) => assert!(e.contains("shadow unreachable")),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.freeze_ms, None);
}

#[test]
fn failed_final_epoch_resumes_on_the_old_primary_under_the_same_generation() {
    let mut m = start();
    m.on_delivery(epoch(1), 0);
    let s = m.on_delivery(failed("transfer cut"), 0);
    assert_eq!(what(&s), ("a".into(), "resume", 4));
    assert_eq!(
        m.current_generation(),
        4,
        "no restore was sent: no new fence"
    );
    match m.on_delivery(done(), 0) {
        Step::Finished(Outcome::RolledBack(e)) => assert!(e.contains("transfer cut")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_restore_fences_the_target_before_the_old_primary_resumes() {
    let mut m = at_restore();
    let s = m.on_delivery(failed("criu restore failed"), 0);
    assert_eq!(
        what(&s),
        ("b".into(), "demote", 5),
        "the target is made a shadow again under a newer generation first"
    );
    assert_eq!(m.current_generation(), 5);
    let s = m.on_delivery(done(), 0);
    assert_eq!(what(&s), ("a".into(), "resume", 5));
    match m.on_delivery(done(), 0) {
        Step::Finished(Outcome::RolledBack(e)) => assert!(e.contains("criu restore failed")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_restore_answer_is_never_taken_for_a_failure() {
    // The target restored it: go forward.
    let mut m = at_restore();
    let s = m.on_delivery(Delivery::Unknown("connection lost".into()), 0);
    assert_eq!(what(&s), ("b".into(), "query", 4));
    assert_eq!(m.phase, Phase::Confirm);
    // An unreachable target is asked again, and the old primary is left alone meanwhile.
    for _ in 0..3 {
        let s = m.on_delivery(Delivery::NotSent("b is not connected".into()), 0);
        assert_eq!(what(&s), ("b".into(), "query", 4));
        assert!(m.waiting_for().unwrap().contains("asking b"));
    }
    let s = m.on_delivery(held(4, CopyState::Running { epochs: true }), 0);
    assert_eq!(what(&s), ("a".into(), "release", 4));
    assert_eq!(m.on_delivery(done(), 0), Step::Finished(Outcome::Succeeded));

    // The target does not run it: fence it, then resume on the old primary.
    let mut m = at_restore();
    m.on_delivery(Delivery::Unknown("timed out".into()), 0);
    let s = m.on_delivery(Delivery::Reply(OrderReply::Held(None)), 0);
    assert_eq!(what(&s), ("b".into(), "demote", 5));
    assert_eq!(what(&m.on_delivery(done(), 0)), ("a".into(), "resume", 5));

    // A busy copy is asked about again rather than judged.
    let mut m = at_restore();
    m.on_delivery(Delivery::Unknown("timed out".into()), 0);
    let s = m.on_delivery(held_busy(4, CopyState::Running { epochs: true }, true), 0);
    assert_eq!(what(&s), ("b".into(), "query", 4));
}

#[test]
fn the_old_primary_never_resumes_before_the_target_confirms_it_runs_nothing() {
    let mut m = at_restore();
    m.on_delivery(failed("liveness check failed"), 0);
    for d in [
        Delivery::NotSent("b is not connected".into()),
        Delivery::Unknown("timed out".into()),
        failed("disk full"),
    ] {
        let s = m.on_delivery(d, 0);
        assert_eq!(what(&s), ("b".into(), "demote", 5), "{s:?}");
        if let Step::Send { after, .. } = s {
            assert_eq!(after, RETRY_PAUSE);
        }
    }
    assert!(m.waiting_for().unwrap().contains("confirm it runs no copy"));
}

#[test]
fn a_restore_that_never_left_rolls_back_without_a_new_fence() {
    let mut m = at_restore();
    let s = m.on_delivery(Delivery::NotSent("b is not connected".into()), 0);
    assert_eq!(what(&s), ("a".into(), "resume", 4));
}

#[test]
fn failed_resume_is_reported_as_failure_with_both_errors() {
    let mut m = start();
    m.on_delivery(epoch(1), 0);
    m.on_delivery(failed("transfer cut"), 0);
    match m.on_delivery(failed("criu restore failed"), 0) {
        Step::Finished(Outcome::Failed(e)) => {
            assert!(e.contains("transfer cut") && e.contains("criu restore failed"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_a_restart_each_phase_continues_as_after_a_lost_answer() {
    // sync and freeze: roll back on the old primary (nothing was restored anywhere).
    let mut m = start();
    assert_eq!(what(&m.after_restart(0)), ("a".into(), "resume", 4));
    let mut m = start();
    m.on_delivery(epoch(1), 0);
    assert_eq!(what(&m.after_restart(0)), ("a".into(), "resume", 4));
    // restore: ask the target.
    let mut m = at_restore();
    assert_eq!(what(&m.after_restart(0)), ("b".into(), "query", 4));
    // confirm: ask again.
    assert_eq!(what(&m.after_restart(0)), ("b".into(), "query", 4));
    // release: release again, then done.
    let mut m = at_restore();
    m.on_delivery(restored(), 0);
    assert_eq!(what(&m.after_restart(0)), ("a".into(), "release", 4));
    assert_eq!(m.on_delivery(done(), 0), Step::Finished(Outcome::Succeeded));
    // rollback: the same pending step.
    let mut m = at_restore();
    m.on_delivery(failed("boom"), 0);
    assert_eq!(what(&m.after_restart(0)), ("b".into(), "demote", 5));
    m.on_delivery(done(), 0);
    assert_eq!(what(&m.after_restart(0)), ("a".into(), "resume", 5));
}

#[test]
fn the_machine_survives_the_store_encoding_in_every_phase() {
    let mut machines = vec![start()];
    let mut m = start();
    m.on_delivery(epoch(1), 7);
    machines.push(m.clone());
    machines.push(at_restore());
    let mut m = at_restore();
    m.on_delivery(Delivery::Unknown("lost".into()), 0);
    machines.push(m);
    let mut m = at_restore();
    m.on_delivery(restored(), 0);
    machines.push(m.clone());
    m.on_delivery(done(), 0);
    machines.push(m);
    let mut m = at_restore();
    m.on_delivery(failed("x"), 0);
    machines.push(m.clone());
    m.on_delivery(done(), 0);
    m.on_delivery(failed("y"), 0);
    machines.push(m);
    for m in machines {
        let bytes = understudy_common::codec::encode(&m).unwrap();
        let back: Migration = understudy_common::codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!(back, m, "phase {:?}", m.phase);
    }
}

fn failover() -> Migration {
    let (m, s) = Migration::failover(spec(), "a", peer("b"), 5, Some(peer("c")), 9, 1_000);
    if let Step::Send {
        host,
        order:
            Order::Restore {
                epoch,
                shadows,
                generation,
                fall_back,
                ..
            },
        ..
    } = &s
    {
        assert_eq!((host.as_str(), *epoch, *generation), ("b", 9, 5));
        // Nothing newer exists anywhere: an older epoch beats none.
        assert!(fall_back);
        assert_eq!(
            shadows.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
    } else {
        panic!("{s:?}");
    }
    m
}

#[test]
fn a_failover_restores_on_the_shadow_and_never_touches_the_lost_primary() {
    let mut m = failover();
    let done = m.on_delivery(restored_from(10, Vec::new()), 1_500);
    assert_eq!(done, Step::Finished(Outcome::Succeeded));
    assert_eq!((m.final_epoch, m.freeze_ms), (Some(10), Some(480)));
    assert_eq!(m.error, None);
    // Restored from an older epoch than the newest: the machine keeps why, to show.
    let mut m = failover();
    let done = m.on_delivery(
        restored_from(
            8,
            vec![PassedOver {
                epoch: 9,
                reason: "CRIU restore failed: a file is missing".into(),
            }],
        ),
        1_500,
    );
    assert_eq!(done, Step::Finished(Outcome::Succeeded));
    assert_eq!(m.final_epoch, Some(8));
    assert_eq!(
        m.error.as_deref(),
        Some("epoch 9 did not restore (CRIU restore failed: a file is missing)")
    );
    // A failed restore leaves it lost: there is no old primary to resume.
    let mut m = failover();
    match m.on_delivery(failed("no committed epoch"), 0) {
        Step::Finished(Outcome::Failed(e)) => assert!(e.contains("no committed epoch")),
        other => panic!("{other:?}"),
    }
    // A lost answer: the shadow is asked, and asked again while unreachable.
    let mut m = failover();
    let s = m.on_delivery(Delivery::Unknown("connection lost".into()), 0);
    assert_eq!(what(&s), ("b".into(), "query", 5));
    let s = m.on_delivery(Delivery::NotSent("b is not connected".into()), 0);
    assert_eq!(what(&s), ("b".into(), "query", 5));
    assert_eq!(
        m.on_delivery(held(5, CopyState::Running { epochs: true }), 0),
        Step::Finished(Outcome::Succeeded)
    );
    // After a coordinator restart mid-failover: ask the shadow.
    let mut m = failover();
    assert_eq!(what(&m.after_restart(0)), ("b".into(), "query", 5));
    match m.on_delivery(Delivery::Reply(OrderReply::Held(None)), 0) {
        Step::Finished(Outcome::Failed(e)) => assert!(e.contains("does not run it")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_post_copy_move_asks_for_a_post_copy_final_epoch_and_restore_and_does_not_count_the_copy_as_freeze(
) {
    let (mut m, s) = Migration::start_post_copy(spec(), "a", peer("b"), 4, Some(peer("a")), 1_000);
    // The epoch while running is an ordinary one.
    assert!(matches!(
        &s,
        Step::Send {
            order: Order::Checkpoint {
                post_copy: false,
                final_epoch: false,
                ..
            },
            ..
        }
    ));
    let s = m.on_delivery(epoch(10), 1_000);
    assert!(
        matches!(
            &s,
            Step::Send {
                order: Order::Checkpoint {
                    post_copy: true,
                    final_epoch: true,
                    ..
                },
                ..
            }
        ),
        "{s:?}"
    );
    let s = m.on_delivery(epoch(11), 1_050);
    assert!(
        matches!(
            &s,
            Step::Send {
                order: Order::Restore {
                    post_copy: true,
                    fall_back: false,
                    ..
                },
                ..
            }
        ),
        "{s:?}"
    );
    // Frozen from the final dump's order at 1 000; answered at 4 200, of which the check
    // took 20 ms and the memory 3 s while the workload ran: frozen 180 ms.
    let s = m.on_delivery(
        Delivery::Reply(OrderReply::Restored {
            epoch: 11,
            pid: 1,
            restore_ms: 40,
            check_ms: 20,
            passed_over: Vec::new(),
            memory_ms: 3_000,
        }),
        4_200,
    );
    assert_eq!(what(&s), ("a".into(), "release", 4));
    assert_eq!(m.freeze_ms, Some(180));
    // A switchover's orders never ask for post-copy.
    let (mut m, _) = Migration::start(spec(), "a", peer("b"), 4, None, 0);
    let s = m.on_delivery(epoch(10), 0);
    assert!(matches!(
        &s,
        Step::Send {
            order: Order::Checkpoint {
                post_copy: false,
                ..
            },
            ..
        }
    ));
}

#[test]
fn an_old_primary_lost_while_a_rollback_waits_to_resume_it_leaves_the_workload_lost() {
    // Not while the target may still run a copy: it must answer first.
    let mut m = at_restore();
    m.on_delivery(failed("post-copy from a: the transfer broke"), 0);
    assert_eq!(
        m.old_primary_lost(),
        None,
        "the target has not confirmed it runs nothing"
    );
    let s = m.on_delivery(done(), 0);
    assert_eq!(what(&s), ("a".into(), "resume", 5));
    // The resume cannot reach the lost old primary: lost, for a failover to take over.
    m.on_delivery(Delivery::NotSent("a is not connected".into()), 0);
    match m.old_primary_lost() {
        Some(Step::Finished(Outcome::Lost(e))) => {
            assert!(
                e.contains("the transfer broke") && e.contains("a was lost"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.phase, Phase::Finished);
    // Nothing changes in any other phase.
    let mut m = at_restore();
    assert_eq!(m.old_primary_lost(), None);
    assert_eq!(failover().old_primary_lost(), None);
}

#[test]
fn a_target_lost_while_its_restore_is_unconfirmed_rolls_back_under_leases_only() {
    // Confirming: the answer to the restore was lost and the target went silent.
    let mut m = at_restore();
    m.on_delivery(Delivery::Unknown("connection lost".into()), 0);
    m.on_delivery(Delivery::NotSent("b is not connected".into()), 0);
    assert_eq!(m.phase, Phase::Confirm);
    // Without leases nothing fences a copy b may run: it goes on asking.
    assert_eq!(m.clone().target_lost(false), None);
    // Under leases: the old primary resumes under a newer generation, without b's word.
    let s = m.target_lost(true).expect("a rollback");
    assert_eq!(what(&s), ("a".into(), "resume", 5));
    assert_eq!(m.phase, Phase::Rollback);
    match m.on_delivery(done(), 0) {
        Step::Finished(Outcome::RolledBack(e)) => {
            assert!(e.contains("b was lost") && e.contains("lease"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_target_lost_while_a_rollback_waits_for_its_demotion_lets_the_old_primary_resume() {
    let mut m = at_restore();
    m.on_delivery(failed("liveness check failed"), 0);
    let s = m.on_delivery(Delivery::NotSent("b is not connected".into()), 0);
    assert_eq!(what(&s), ("b".into(), "demote", 5));
    let s = m.target_lost(true).expect("the resume");
    assert_eq!(what(&s), ("a".into(), "resume", 5));
    assert!(m
        .error
        .as_deref()
        .unwrap()
        .contains("liveness check failed; then b was lost"));
    // Then the old primary's resume is all that is left: a lost target changes nothing.
    assert_eq!(m.target_lost(true), None);
}

#[test]
fn a_lost_target_changes_nothing_in_other_phases_or_in_a_failover() {
    let mut m = start();
    assert_eq!(m.target_lost(true), None, "sync");
    m.on_delivery(epoch(10), 0);
    assert_eq!(m.target_lost(true), None, "freeze");
    let mut m = at_restore();
    assert_eq!(m.target_lost(true), None, "restore: its answer decides");
    let s = m.on_delivery(restored(), 0);
    assert_eq!(what(&s), ("a".into(), "release", 4));
    assert_eq!(m.target_lost(true), None, "release: the move succeeded");
    let mut f = failover();
    assert_eq!(
        f.target_lost(true),
        None,
        "a failover's restore: its answer decides"
    );
}

#[test]
fn a_failover_whose_target_is_lost_before_it_confirms_fails_to_be_tried_again() {
    let mut f = failover();
    f.on_delivery(Delivery::Unknown("connection lost".into()), 0);
    assert_eq!(f.phase, Phase::Confirm);
    assert_eq!(
        f.clone().target_lost(false),
        None,
        "without leases: asks on"
    );
    match f.target_lost(true) {
        Some(Step::Finished(Outcome::Failed(e))) => assert!(e.contains("b was lost"), "{e}"),
        other => panic!("{other:?}"),
    }
}

fn host(connected: bool, silent_secs: u64) -> HostNow {
    HostNow {
        connected,
        silent_for: Duration::from_secs(silent_secs),
    }
}

#[test]
fn an_order_for_a_reconnecting_host_is_held_within_the_grace() {
    let failover_after = Duration::from_secs(30);
    // Not connected, heard from a second ago: held, until the grace is spent.
    assert!(hold_for_reconnect(
        host(false, 1),
        Duration::ZERO,
        failover_after
    ));
    assert!(hold_for_reconnect(
        host(false, 5),
        RECONNECT_GRACE - Duration::from_millis(1),
        failover_after
    ));
    assert!(!hold_for_reconnect(
        host(false, 11),
        RECONNECT_GRACE,
        failover_after
    ));
    // Back: sent at once.
    assert!(!hold_for_reconnect(
        host(true, 0),
        Duration::from_secs(2),
        failover_after
    ));
}

#[test]
fn an_order_for_a_lost_host_is_not_held() {
    // Silent for the failover delay: the machine is told it is lost instead of waiting.
    let failover_after = Duration::from_secs(10);
    assert!(!hold_for_reconnect(
        host(false, 10),
        Duration::ZERO,
        failover_after
    ));
    assert!(hold_for_reconnect(
        host(false, 9),
        Duration::ZERO,
        failover_after
    ));
}
