//! Never two copies: a restore whose answer is lost because the target dropped off the
//! network for a while is not taken for a failure (the old primary does not resume while
//! the target may run it), and two migrate requests for one workload never both proceed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::{Cluster, FAILOVER_AFTER, HEARTBEAT_TIMEOUT};
use understudy_tests::copies::{
    advancing, create_counter, marker, one_copy_soon, silent, the_one_copy,
};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

const HOSTS: [&str; 2] = ["host-a", "host-b"];

#[test]
fn a_restore_whose_answer_is_lost_with_the_targets_link_never_leaves_two_copies() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&HOSTS);
    c.start_coordinator();
    c.start_agent("host-a");
    // host-b restores, then holds its answer back long enough for its link to be cut.
    c.start_agent_env(
        "host-b",
        &[("UNDERSTUDY_FAULTS", "delay-reply:restore:3000")],
    );
    c.wait_connected(2);
    create_counter(&c, "split", "host-a", "host-b", "500ms");
    c.wait_for_epochs("split", 2);
    let mut cmd = c.cli_command();
    let migrate = std::thread::spawn(move || cmd.args(["migrate", "split"]).output().unwrap());
    eventually(
        "host-b runs the restored copy",
        Duration::from_secs(30),
        || {
            let n = numbers(&c.output_log("host-b", "split"));
            if n.len() > 5 {
                Ok(())
            } else {
                Err(format!("{} lines on host-b", n.len()))
            }
        },
    );
    c.note("host-b", "link cut");
    c.set_link("host-b", false);
    let cut = Instant::now();
    // The coordinator loses host-b with the answer: while host-b may run the restored copy
    // it must not resume host-a's, but wait for host-b — for up to failover_after, after
    // which host-b's copy has frozen under its lease (tests/tests/failover.rs covers that).
    eventually(
        "the coordinator has lost host-b",
        HEARTBEAT_TIMEOUT + Duration::from_secs(5),
        || match c.hosts()?.iter().find(|h| h.name == "host-b") {
            Some(h) if !h.connected => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let w = c.workload("split").unwrap();
    assert_eq!(w.state, WorkloadState::Migrating, "{w:?}");
    // host-b's restored copy may be frozen by now (its lease, unconfirmed, runs out);
    // host-a's must not have come back in any case.
    let on = c.running_on(&HOSTS, &marker("split"));
    assert!(
        !on.contains(&"host-a".to_string()),
        "host-a resumed while host-b was unreachable: {on:?}"
    );
    silent(&c, "host-a", "split", Duration::from_millis(500));
    assert!(
        cut.elapsed() + Duration::from_secs(2) < FAILOVER_AFTER,
        "host-b was away {:?}, too long to be waited for",
        cut.elapsed()
    );
    c.note("host-b", "link restored");
    c.set_link("host-b", true);
    let out = migrate.join().unwrap();
    eprintln!(
        "migrate said: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let w = eventually("the switchover ends", Duration::from_secs(60), || {
        let w = c.workload("split")?;
        match (&w.state, &w.last_migration) {
            (WorkloadState::Running, Some(_)) => Ok(w),
            other => Err(format!("{other:?}")),
        }
    });
    let m = w.last_migration.clone().unwrap();
    assert_eq!(
        (m.outcome.as_str(), w.primary.as_str()),
        ("succeeded", "host-b"),
        "{m:?}"
    );
    assert_eq!(one_copy_soon(&c, &HOSTS, "split"), "host-b");
    advancing(&c, "host-b", "split");
    silent(&c, "host-a", "split", Duration::from_millis(500));
    // Counts on host-b carry on from host-a's: the move kept the memory.
    let a = numbers(&c.output_log("host-a", "split"));
    let b = numbers(&c.output_log("host-b", "split"));
    assert!(
        b[0] >= *a.last().unwrap(),
        "b starts at {} after a's {:?}",
        b[0],
        a.last()
    );
}

#[test]
fn of_two_migrate_requests_at_once_exactly_one_proceeds() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&HOSTS);
    create_counter(&c, "race", "host-a", "host-b", "500ms");
    c.wait_for_epochs("race", 1);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (mut cmd, barrier) = (c.cli_command(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cmd.args(["migrate", "race"]).output().unwrap()
            })
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let refused: Vec<String> = outs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(ok, 1, "exactly one migrate succeeds: {refused:?}");
    assert!(
        refused[0].contains("busy") || refused[0].contains("already migrating"),
        "{refused:?}"
    );
    let w = c.workload("race").unwrap();
    assert_eq!(w.generation, 2, "one switchover, one new generation");
    assert_eq!(the_one_copy(&c, &HOSTS, "race"), "host-b");
}
