//! The primary workload's state machine, driven event by event.

use understudy_common::workload::{EpochReport, OrderReply, Peer, Report, RestartPolicy};

use super::machine::{Command, Event, Failure, Machine, Tree, FROZEN};

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
    Machine::new("kv", policy(0), 3, Some(peer("b")), 100, 1)
}

fn report(epoch: u64) -> EpochReport {
    EpochReport {
        workload: "kv".into(),
        generation: 3,
        epoch,
        shadow: "b".into(),
        ..Default::default()
    }
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
        result: Ok(report(epoch)),
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
            result: Err(f),
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
        result: Err(Failure::BaseLost("gone".into())),
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
        result: Err(Failure::Frozen),
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
    });
    assert_eq!(started(&cmds), Some((3, true, Some(2))));
    let cmds = m.handle(Event::EpochDone {
        epoch: 3,
        dumped: true,
        result: Err(Failure::Failed("shadow gone".into())),
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
    });
    m.handle(Event::EpochDone {
        epoch: 1,
        dumped: false,
        result: Err(Failure::Failed("criu failed".into())),
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
    let cmds = m.handle(Event::SetShadow {
        generation: 4,
        shadow: peer("c"),
    });
    assert!(matches!(replies(&cmds)[..], [Ok(OrderReply::Done)]));
    commit(&mut m, 1);
    let cmds = m.handle(Event::Tick);
    assert_eq!(started(&cmds), Some((2, false, None)));
    assert!(
        matches!(&cmds[0], Command::TakeEpoch { shadow, generation: 4, .. } if shadow.name == "c")
    );
}

#[test]
fn a_lease_is_passed_on_only_for_the_generation_it_runs_under() {
    let mut m = machine();
    let lease = |generation| Event::Lease {
        generation,
        valid_ms: Some(3000),
    };
    assert!(m.handle(lease(2)).is_empty(), "an older generation's lease");
    assert_eq!(m.handle(lease(3)), vec![Command::PassLease(Some(3000))]);
    m.handle(Event::SetShadow {
        generation: 4,
        shadow: peer("c"),
    });
    assert!(m.handle(lease(3)).is_empty(), "superseded by generation 4");
    assert_eq!(m.handle(lease(4)).len(), 1);
}

#[test]
fn exits_restart_as_the_policy_allows_then_are_reported() {
    let mut m = Machine::new("kv", policy(1), 3, Some(peer("b")), 100, 1);
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
    let mut m = Machine::new("kv", policy(1), 3, Some(peer("b")), 100, 1);
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
    let mut m = Machine::new("kv", policy(3), 3, Some(peer("b")), 100, 1);
    m.handle(Event::Checkpoint {
        generation: 4,
        final_epoch: false,
        post_copy: false,
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
    let mut m = Machine::new("kv", policy(0), 1, None, 100, 1);
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
