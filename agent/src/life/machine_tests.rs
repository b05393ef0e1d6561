//! The primary workload's state machine, driven event by event.

use understudy_common::workload::{EpochReport, OrderReply, Peer, Report, RestartPolicy};

use super::machine::{
    Command, Delivery, Event, Failure, Machine, Tree, FROZEN, PROBE_EVERY, REST_AFTER,
};

fn peer(name: &str) -> Peer {
    Peer {
        name: name.into(),
        addr: "10.0.0.2:7442".parse().unwrap(),
    }
}

fn policy(attempts: u32) -> RestartPolicy {
    RestartPolicy {
        attempts,
        delay_ms: 500,
        window_ms: 60_000,
    }
}

fn machine() -> Machine {
    Machine::new("kv", policy(0), 3, vec![peer("b")], 100, 1)
}

fn report_on(shadow: &str, epoch: u64) -> EpochReport {
    EpochReport {
        workload: "kv".into(),
        generation: 3,
        epoch,
        shadow: shadow.into(),
        ..Default::default()
    }
}

fn report(epoch: u64) -> EpochReport {
    report_on("b", epoch)
}

/// What the only shadow, b, made of an epoch.
fn on_b(result: Result<EpochReport, Failure>) -> Vec<Delivery> {
    vec![Delivery {
        shadow: "b".into(),
        result,
    }]
}

/// The shadows the epoch the commands start goes to.
fn targets(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .find_map(|c| match c {
            Command::TakeEpoch { to, .. } => Some(to.iter().map(|p| p.name.clone()).collect()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The epoch the commands start, if any: (number, final, base).
fn started(cmds: &[Command]) -> Option<(u64, bool, Option<u64>)> {
    cmds.iter().find_map(|c| match c {
        Command::TakeEpoch {
            epoch,
            final_epoch,
            base,
            ..
        } => Some((*epoch, *final_epoch, *base)),
        _ => None,
    })
}

fn replies(cmds: &[Command]) -> Vec<&Result<OrderReply, String>> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn reports(cmds: &[Command]) -> Vec<&Report> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Report(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn commit(m: &mut Machine, epoch: u64) -> Vec<Command> {
    m.handle(Event::EpochDone {
        epoch,
        dumped: false,
        results: on_b(Ok(report(epoch))),
    })
}

#[test]
fn ticks_take_one_epoch_at_a_time_and_deltas_follow_the_last_acknowledged_one() {
    let mut m = machine();
    assert_eq!(started(&m.handle(Event::Tick)), Some((1, false, None)));
    assert!(
        m.handle(Event::Tick).is_empty(),
        "one epoch in flight at a time"
    );
    let cmds = commit(&mut m, 1);
    assert!(cmds.contains(&Command::Record));
    assert!(matches!(reports(&cmds)[..], [Report::EpochCommitted(r)] if r.epoch == 1));
    assert_eq!(started(&m.handle(Event::Tick)), Some((2, false, Some(1))));
}

#[test]
fn a_failure_is_reported_once_while_it_lasts_and_a_lost_base_means_a_whole_epoch() {
    let mut m = machine();
    m.handle(Event::Tick);
    commit(&mut m, 1);
    let fail = |m: &mut Machine, epoch, f: Failure| {
        m.handle(Event::Tick);
        m.handle(Event::EpochDone {
            epoch,
            dumped: false,
            results: on_b(Err(f)),
        })
    };
    let first = fail(&mut m, 2, Failure::Failed("shadow lagging".into()));
    assert!(
        matches!(reports(&first)[..], [Report::Unprotected { reason, .. }] if reason == "shadow lagging")
    );
    assert!(reports(&fail(&mut m, 3, Failure::Failed("shadow lagging".into()))).is_empty());
    assert_eq!(
        started(&m.handle(Event::Tick)),
        Some((4, false, Some(1))),
        "a failed transfer keeps the base"
    );
    m.handle(Event::EpochDone {
        epoch: 4,
        dumped: false,
        results: on_b(Err(Failure::BaseLost("gone".into()))),
    });
    assert_eq!(started(&m.handle(Event::Tick)), Some((5, false, None)));
}

#[test]
fn a_frozen_copy_uses_no_epoch_number_and_is_not_reported() {
    let mut m = machine();
    m.handle(Event::Tick);
    let cmds = m.handle(Event::EpochDone {
        epoch: 1,
        dumped: false,
        results: on_b(Err(Failure::Frozen)),
    });
    assert!(reports(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(started(&m.handle(Event::Tick)), Some((1, false, None)));
    let _ = FROZEN;
}

#[test]
fn a_switchover_epoch_waits_for_the_periodic_one_and_pauses_the_rest() {
    let mut m = machine();
    m.handle(Event::Tick);
    let cmds = m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: false,
        post_copy: false,
        to: None,
    });
    assert!(cmds.is_empty(), "waits for epoch 1: {cmds:?}");
    let cmds = commit(&mut m, 1);
    assert!(
        matches!(reports(&cmds)[..], [Report::EpochCommitted(_)]),
        "{cmds:?}"
    );
    assert_eq!(started(&cmds), Some((2, false, Some(1))));
    let cmds = commit(&mut m, 2);
    assert!(matches!(replies(&cmds)[..], [Ok(OrderReply::Epoch(r))] if r.epoch == 2));
    assert!(m.handle(Event::Tick).is_empty(), "periodic epochs pause");
    let cmds = m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: true,
        post_copy: false,
        to: None,
    });
    assert_eq!(started(&cmds), Some((3, true, Some(2))));
    let cmds = m.handle(Event::EpochDone {
        epoch: 3,
        dumped: true,
        results: on_b(Err(Failure::Failed("shadow gone".into()))),
    });
    assert!(matches!(replies(&cmds)[..], [Err(e)] if e == "shadow gone"));
    assert_eq!(m.tree(), &Tree::Stopped(true), "the final dump stopped it");
    // The switchover rolls back: the tree comes back from its final dump.
    assert_eq!(
        m.handle(Event::Resume { generation: 5 }),
        vec![Command::ResumeFromFinalDump]
    );
    let cmds = m.handle(Event::Resumed {
        result: Ok((200, 3)),
    });
    assert!(matches!(replies(&cmds)[..], [Ok(OrderReply::Done)]));
    assert_eq!((m.pid(), m.generation()), (200, 5));
    assert_eq!(started(&m.handle(Event::Tick)).map(|e| e.0), Some(4));
}

#[test]
fn resume_without_a_final_dump_is_refused_by_reason() {
    let mut m = machine();
    m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: true,
        post_copy: false,
        to: None,
    });
    m.handle(Event::EpochDone {
        epoch: 1,
        dumped: false,
        results: on_b(Err(Failure::Failed("criu failed".into()))),
    });
    assert_eq!(
        m.tree(),
        &Tree::Running(100),
        "a failed dump leaves it running"
    );
    m.handle(Event::Exited {
        pid: 100,
        status: "killed by signal 9".into(),
        now_ms: 0,
    });
    let cmds = m.handle(Event::Resume { generation: 5 });
    assert!(matches!(replies(&cmds)[..], [Err(e)] if e.contains("no final dump")));
}

#[test]
fn an_acknowledgement_from_a_replaced_shadow_is_no_base() {
    let mut m = machine();
    m.handle(Event::Tick);
    let cmds = m.handle(Event::SetShadows {
        generation: 4,
        shadows: vec![peer("c")],
    });
    assert!(matches!(replies(&cmds)[..], [Ok(OrderReply::Done)]));
    commit(&mut m, 1);
    let cmds = m.handle(Event::Tick);
    assert_eq!(started(&cmds), Some((2, false, None)));
    assert_eq!(targets(&cmds), ["c"]);
    assert!(matches!(&cmds[0], Command::TakeEpoch { generation: 4, .. }));
}

#[test]
fn a_lease_is_passed_on_only_for_the_generation_it_runs_under() {
    let mut m = machine();
    let lease = |generation| Event::Lease {
        generation,
        valid_ms: Some(3000),
        at_ms: 7,
    };
    assert!(m.handle(lease(2)).is_empty(), "an older generation's lease");
    assert_eq!(
        m.handle(lease(3)),
        vec![Command::PassLease {
            valid_ms: Some(3000),
            at_ms: 7
        }]
    );
    m.handle(Event::SetShadows {
        generation: 4,
        shadows: vec![peer("c")],
    });
    assert!(m.handle(lease(3)).is_empty(), "superseded by generation 4");
    assert_eq!(m.handle(lease(4)).len(), 1);
}

/// The coordinator moves its record to a switchover's generation before its first order
/// reaches the old primary: a renewal in between is for a generation this copy does not
/// run yet. It is held, and passed on (with its grant time, so only what is left of it
/// counts) once an order moves the copy to that generation, and only then.
#[test]
fn a_lease_that_beats_the_order_moving_the_copy_to_its_generation_is_passed_on_with_it() {
    let lease = |generation, at_ms| Event::Lease {
        generation,
        valid_ms: Some(5000),
        at_ms,
    };
    let passed = |at_ms| Command::PassLease {
        valid_ms: Some(5000),
        at_ms,
    };
    for order in [
        Event::SetShadows {
            generation: 4,
            shadows: vec![peer("b")],
        },
        Event::Checkpoint {
            generation: 4,
            final_epoch: false,
            post_copy: false,
            to: Some("b".into()),
        },
        Event::Resume { generation: 4 },
    ] {
        let mut m = machine();
        assert!(
            m.handle(lease(4, 11)).is_empty(),
            "not yet: the copy runs generation 3"
        );
        let cmds = m.handle(order.clone());
        assert_eq!(cmds.first(), Some(&passed(11)), "{order:?}: {cmds:?}");
        assert!(
            m.handle(lease(3, 12)).is_empty(),
            "generation 3's lease no longer applies"
        );
    }
    // Held only for the generation it names: an order for another passes nothing on, and
    // a copy that is not running gets nothing.
    let mut m = machine();
    m.handle(lease(5, 11));
    let cmds = m.handle(Event::SetShadows {
        generation: 4,
        shadows: vec![peer("b")],
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::PassLease { .. })),
        "{cmds:?}"
    );
    let cmds = m.handle(Event::Resume { generation: 5 });
    assert_eq!(cmds.first(), Some(&passed(11)), "{cmds:?}");
    let mut m = machine();
    m.handle(lease(4, 11));
    m.handle(Event::Release { graceful: true });
    let cmds = m.handle(Event::SetShadows {
        generation: 4,
        shadows: vec![peer("b")],
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::PassLease { .. })),
        "{cmds:?}"
    );
}

#[test]
fn exits_restart_as_the_policy_allows_then_are_reported() {
    let mut m = Machine::new("kv", policy(1), 3, vec![peer("b")], 100, 1);
    let cmds = m.handle(Event::Exited {
        pid: 100,
        status: "exit status 3".into(),
        now_ms: 1_000,
    });
    assert_eq!(cmds, vec![Command::RestartAfter(500)]);
    assert!(m.busy());
    assert!(m.handle(Event::Tick).is_empty(), "no epochs of a dead tree");
    assert_eq!(m.handle(Event::RestartDue), vec![Command::StartAfresh]);
    let cmds = m.handle(Event::Restarted {
        result: Ok(101),
        now_ms: 1_500,
    });
    assert!(
        matches!(reports(&cmds)[..], [Report::Restarted { restarts: 1, status, .. }] if status == "exit status 3")
    );
    assert_eq!((m.pid(), m.restarts()), (101, 1));
    // An exit of the old tree arriving late changes nothing.
    assert!(m
        .handle(Event::Exited {
            pid: 100,
            status: "late".into(),
            now_ms: 1_600
        })
        .is_empty());
    let cmds = m.handle(Event::Exited {
        pid: 101,
        status: "exit status 3".into(),
        now_ms: 2_000,
    });
    assert!(
        matches!(reports(&cmds)[..], [Report::Exited { status, .. }] if status.contains("not restarted: 1 restarts within 1m"))
    );
    assert_eq!(m.tree(), &Tree::Exited);
}

#[test]
fn a_release_while_the_tree_is_started_afresh_stops_the_new_tree() {
    let mut m = Machine::new("kv", policy(1), 3, vec![peer("b")], 100, 1);
    m.handle(Event::Exited {
        pid: 100,
        status: "exit status 3".into(),
        now_ms: 0,
    });
    assert_eq!(m.handle(Event::RestartDue), vec![Command::StartAfresh]);
    assert!(m.handle(Event::Release { graceful: true }).is_empty());
    let cmds = m.handle(Event::Restarted {
        result: Ok(101),
        now_ms: 600,
    });
    assert_eq!(cmds, vec![Command::Stop { graceful: true }]);
    assert!(reports(&cmds).is_empty(), "no restart is reported");
    assert_eq!(
        m.handle(Event::Stopped { result: Ok(()) }),
        vec![Command::Reply(Ok(OrderReply::Done)), Command::End]
    );
}

#[test]
fn an_exit_during_a_switchover_is_reported_not_restarted() {
    let mut m = Machine::new("kv", policy(3), 3, vec![peer("b")], 100, 1);
    m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: false,
        post_copy: false,
        to: None,
    });
    let cmds = m.handle(Event::Exited {
        pid: 100,
        status: "exit status 1".into(),
        now_ms: 0,
    });
    assert!(matches!(
        reports(&cmds)[..],
        [Report::Exited { generation: 4, .. }]
    ));
}

#[test]
fn a_release_stops_the_tree_and_a_stop_that_fails_leaves_it_this_hosts_copy() {
    let mut m = machine();
    m.handle(Event::Tick);
    assert_eq!(
        m.handle(Event::Release { graceful: true }),
        vec![Command::Stop { graceful: true }]
    );
    assert!(
        commit(&mut m, 1).is_empty(),
        "an epoch ending after the release"
    );
    let cmds = m.handle(Event::Stopped {
        result: Err("did not stop".into()),
    });
    assert!(matches!(replies(&cmds)[..], [Err(_)]));
    assert_eq!(m.tree(), &Tree::Running(100));
    assert!(
        m.handle(Event::Tick).is_empty(),
        "epochs wait for the coordinator"
    );
    m.handle(Event::Release { graceful: false });
    let cmds = m.handle(Event::Stopped { result: Ok(()) });
    assert_eq!(
        cmds,
        vec![Command::Reply(Ok(OrderReply::Done)), Command::End]
    );
}

#[test]
fn without_a_shadow_the_epoch_is_reported_unprotected() {
    let mut m = Machine::new("kv", policy(0), 1, Vec::new(), 100, 1);
    let cmds = m.handle(Event::Tick);
    assert!(
        matches!(reports(&cmds)[..], [Report::Unprotected { reason, .. }] if reason == "no shadow host")
    );
    assert!(m.handle(Event::Tick).is_empty(), "said once");
}

#[test]
fn resuming_a_running_tree_lets_a_fenced_one_go_on() {
    // An agent restarted after a broken post-copy move took the fenced tree back as
    // running; the rollback's resume must let it run again.
    let mut m = machine();
    let cmds = m.handle(Event::Resume { generation: 5 });
    assert!(cmds.contains(&Command::Unfence(100)), "{cmds:?}");
    assert!(matches!(replies(&cmds)[..], [Ok(OrderReply::Done)]));
    assert_eq!(m.generation(), 5);
}

fn two_shadows() -> Machine {
    Machine::new("kv", policy(0), 3, vec![peer("b"), peer("c")], 100, 1)
}

fn delivered(results: &[(&str, Result<u64, Failure>)]) -> Vec<Delivery> {
    results
        .iter()
        .map(|(shadow, r)| Delivery {
            shadow: (*shadow).into(),
            result: r.clone().map(|epoch| report_on(shadow, epoch)),
        })
        .collect()
}

fn done(m: &mut Machine, epoch: u64, results: &[(&str, Result<u64, Failure>)]) -> Vec<Command> {
    m.handle(Event::EpochDone {
        epoch,
        dumped: false,
        results: delivered(results),
    })
}

fn lagging() -> Failure {
    Failure::Failed("shadow lagging".into())
}

#[test]
fn with_two_shadows_each_epoch_goes_to_both_and_each_commit_is_reported() {
    let mut m = two_shadows();
    let cmds = m.handle(Event::Tick);
    assert_eq!(targets(&cmds), ["b", "c"]);
    assert_eq!(started(&cmds), Some((1, false, None)));
    let cmds = done(&mut m, 1, &[("b", Ok(1)), ("c", Ok(1))]);
    let committed: Vec<&str> = reports(&cmds)
        .iter()
        .filter_map(|r| match r {
            Report::EpochCommitted(e) => Some(e.shadow.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(committed, ["b", "c"]);
    // Both hold epoch 1: the next is a delta against it, to both.
    let cmds = m.handle(Event::Tick);
    assert_eq!(started(&cmds), Some((2, false, Some(1))));
    assert_eq!(targets(&cmds), ["b", "c"]);
}

#[test]
fn one_shadow_failing_leaves_the_workload_protected_by_the_other_and_then_rests() {
    let mut m = two_shadows();
    m.handle(Event::Tick);
    done(&mut m, 1, &[("b", Ok(1)), ("c", Ok(1))]);
    m.handle(Event::Tick);
    let cmds = done(&mut m, 2, &[("b", Ok(2)), ("c", Err(lagging()))]);
    assert!(
        matches!(reports(&cmds)[..], [Report::EpochCommitted(e)] if e.shadow == "b"),
        "b committed; no unprotected report while one shadow holds it: {cmds:?}"
    );
    // b holds 2, c holds 1: no base both hold, so epoch 3 goes whole to both.
    let cmds = m.handle(Event::Tick);
    assert_eq!(started(&cmds), Some((3, false, None)));
    assert_eq!(targets(&cmds), ["b", "c"]);
    done(&mut m, 3, &[("b", Ok(3)), ("c", Err(lagging()))]);
    let rests_from = u64::from(REST_AFTER) + 2;
    for epoch in 4..rests_from {
        assert_eq!(targets(&m.handle(Event::Tick)), ["b", "c"]);
        done(&mut m, epoch, &[("b", Ok(epoch)), ("c", Err(lagging()))]);
    }
    // c has failed REST_AFTER epochs in a row: it rests, epochs go to b alone, as deltas.
    for epoch in rests_from..PROBE_EVERY {
        let cmds = m.handle(Event::Tick);
        assert_eq!(targets(&cmds), ["b"], "epoch {epoch}");
        assert_eq!(started(&cmds), Some((epoch, false, Some(epoch - 1))));
        done(&mut m, epoch, &[("b", Ok(epoch))]);
    }
    // Every PROBE_EVERY-th epoch tries it again, whole; it is back.
    let cmds = m.handle(Event::Tick);
    assert_eq!(targets(&cmds), ["b", "c"]);
    assert_eq!(started(&cmds), Some((PROBE_EVERY, false, None)));
    done(
        &mut m,
        PROBE_EVERY,
        &[("b", Ok(PROBE_EVERY)), ("c", Ok(PROBE_EVERY))],
    );
    let cmds = m.handle(Event::Tick);
    assert_eq!(targets(&cmds), ["b", "c"]);
    assert_eq!(
        started(&cmds),
        Some((PROBE_EVERY + 1, false, Some(PROBE_EVERY)))
    );
}

#[test]
fn with_every_shadow_failing_the_workload_is_unprotected_and_every_epoch_tries_them_all() {
    let mut m = two_shadows();
    for epoch in 1..=REST_AFTER as u64 + 2 {
        let cmds = m.handle(Event::Tick);
        assert_eq!(targets(&cmds), ["b", "c"], "epoch {epoch}");
        let cmds = done(
            &mut m,
            epoch,
            &[("b", Err(lagging())), ("c", Err(lagging()))],
        );
        if epoch == 1 {
            assert!(
                matches!(reports(&cmds)[..], [Report::Unprotected { reason, .. }] if reason == "shadow lagging"),
                "{cmds:?}"
            );
        }
    }
}

#[test]
fn a_switchovers_epochs_go_to_its_target_only() {
    let mut m = two_shadows();
    m.handle(Event::Tick);
    done(&mut m, 1, &[("b", Ok(1)), ("c", Ok(1))]);
    let cmds = m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: false,
        post_copy: false,
        to: Some("c".into()),
    });
    assert_eq!(targets(&cmds), ["c"]);
    assert_eq!(started(&cmds), Some((2, false, Some(1))));
    let cmds = done(&mut m, 2, &[("c", Ok(2))]);
    assert!(matches!(replies(&cmds)[..], [Ok(OrderReply::Epoch(r))] if r.shadow == "c"));
    let cmds = m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: true,
        post_copy: true,
        to: Some("c".into()),
    });
    assert_eq!(targets(&cmds), ["c"]);
    assert!(matches!(
        &cmds[..],
        [Command::TakeEpoch {
            final_epoch: true,
            post_copy: true,
            base: Some(2),
            ..
        }]
    ));
    // A target that is not a shadow is refused, naming it.
    let mut m = two_shadows();
    let cmds = m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: true,
        post_copy: false,
        to: Some("d".into()),
    });
    assert!(matches!(replies(&cmds)[..], [Err(e)] if e == "d is not a shadow of kv"));
}

#[test]
fn a_shadow_kept_by_a_new_set_keeps_its_base_and_a_new_one_makes_the_next_epoch_whole() {
    let mut m = two_shadows();
    m.handle(Event::Tick);
    done(&mut m, 1, &[("b", Ok(1)), ("c", Ok(1))]);
    m.handle(Event::SetShadows {
        generation: 3,
        shadows: vec![peer("c")],
    });
    let cmds = m.handle(Event::Tick);
    assert_eq!(targets(&cmds), ["c"]);
    assert_eq!(started(&cmds), Some((2, false, Some(1))), "c kept its base");
    done(&mut m, 2, &[("c", Ok(2))]);
    m.handle(Event::SetShadows {
        generation: 3,
        shadows: vec![peer("c"), peer("d")],
    });
    let cmds = m.handle(Event::Tick);
    assert_eq!(targets(&cmds), ["c", "d"]);
    assert_eq!(started(&cmds), Some((3, false, None)), "d holds nothing");
    // A late result from a shadow no longer in the set changes nothing.
    let cmds = done(
        &mut m,
        3,
        &[("c", Ok(3)), ("d", Ok(3)), ("b", Err(lagging()))],
    );
    assert_eq!(reports(&cmds).len(), 2);
    assert_eq!(started(&m.handle(Event::Tick)), Some((4, false, Some(3))));
}

/// An ordered epoch is marked so: its dump waits a moment for a lease the order passes on
/// (a copy frozen while its agent was away), where the timer's epoch does not wait.
#[test]
fn an_ordered_epoch_is_told_apart_from_the_timers() {
    let ordered = |cmds: &[Command]| {
        cmds.iter().find_map(|c| match c {
            Command::TakeEpoch { ordered, .. } => Some(*ordered),
            _ => None,
        })
    };
    let mut m = machine();
    assert_eq!(ordered(&m.handle(Event::Tick)), Some(false));
    commit(&mut m, 1);
    let cmds = m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: false,
        post_copy: false,
        to: Some("b".into()),
    });
    assert_eq!(ordered(&cmds), Some(true));
}
