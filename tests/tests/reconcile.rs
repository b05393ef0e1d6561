//! The coordinator's records follow what the hosts really run: a record that drifted is
//! corrected from the primary's report, a primary whose workload died with its agent is
//! shown failed with the cause, a copy an earlier run of an agent left running
//! is still stopped by a delete, and a shadow whose agent stopped is shown unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::{Cluster, HEARTBEAT_TIMEOUT};
use understudy_tests::copies::{advancing, create_counter, marker, the_one_copy};
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

const HOSTS: [&str; 2] = ["host-a", "host-b"];

#[test]
fn a_record_that_drifted_from_the_hosts_is_corrected_and_protection_resumes() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&HOSTS);
    create_counter(&c, "drift", "host-a", "host-b", "500ms");
    let before = c.wait_for_epochs("drift", 2);
    c.stop("coord");
    // The record comes back failed, under a generation neither host has seen: what a
    // failed switchover used to leave behind.
    c.start_coordinator_env(&[("UNDERSTUDY_FAULTS", "drift:drift")]);
    c.wait_connected(2);
    let w = eventually("the record is corrected", Duration::from_secs(30), || {
        let w = c.workload("drift")?;
        if w.state == WorkloadState::Running && w.last_correction.is_some() {
            Ok(w)
        } else {
            Err(format!("{:?}", w.state))
        }
    });
    assert_eq!(w.generation, before.generation + 1);
    let (why, _) = w.last_correction.clone().unwrap();
    assert!(why.contains("host-a reports it running"), "{why}");
    // Host-a is brought up to the record's generation, and its shadow accepts it.
    eventually(
        "epochs commit under the record's generation",
        Duration::from_secs(30),
        || {
            let now = c.workload("drift")?;
            match &now.last_epoch {
                Some(e) if e.generation == w.generation && now.epochs > before.epochs => Ok(()),
                other => Err(format!("{other:?} {:?}", now.unprotected)),
            }
        },
    );
    let show = c.cli(&["workload", "show", "drift"]);
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("corrected:"),
        "{}",
        String::from_utf8_lossy(&show.stdout)
    );
    assert_eq!(the_one_copy(&c, &HOSTS, "drift"), "host-a");
}

#[test]
fn a_primary_whose_workload_died_with_its_agent_is_shown_failed_with_the_cause() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&HOSTS);
    create_counter(&c, "printer", "host-a", "host-b", "500ms");
    c.wait_for_epochs("printer", 1);
    // The agent and the workload die together (an OOM kill, a crash).
    c.kill("host-a");
    c.kill_processes("host-a", &marker("printer"));
    eventually("the tree is gone", Duration::from_secs(10), || {
        if c.running_on(&HOSTS, &marker("printer")).is_empty() {
            Ok(())
        } else {
            Err("still running".into())
        }
    });
    c.start_agent("host-a");
    let w = eventually(
        "the record says it is lost",
        Duration::from_secs(30),
        || {
            let w = c.workload("printer")?;
            match &w.state {
                WorkloadState::Failed(why) => Ok(why.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert!(
        w.contains("not running on host-a") && w.contains("epoch"),
        "the cause and the recovery point are named: {w}"
    );
}

#[test]
fn a_restarted_agent_takes_its_workload_back_and_a_delete_still_stops_it() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&HOSTS);
    // It outlives its agent: its supervisor, not the agent, holds it and its output.
    c.create_workload(&[
        "quiet",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        "import time\nwhile True:\n    time.sleep(0.1)\n",
        &marker("quiet"),
    ]);
    c.wait_for_epochs("quiet", 1);
    // Stopped cleanly, then killed: each restarted agent takes back the tree it left, and
    // its epochs go on under the same generation.
    for signal in ["TERM", "KILL"] {
        let before = c.workload("quiet").unwrap();
        c.restart_agent("host-a", signal == "KILL");
        let w = eventually("its epochs resume", Duration::from_secs(30), || {
            let w = c.workload("quiet")?;
            let fresh = w.last_epoch.as_ref().is_some_and(|e| {
                Some(e.epoch) > before.last_epoch.as_ref().map(|b| b.epoch)
                    && e.generation == before.generation
            });
            if fresh && w.epochs >= before.epochs + 2 && w.unprotected.is_none() {
                Ok(w)
            } else {
                Err(format!("{:?} {} {:?}", w.state, w.epochs, w.unprotected))
            }
        });
        assert_eq!(w.state, WorkloadState::Running, "after SIG{signal}");
        assert_eq!(
            w.generation, before.generation,
            "no move, no new generation"
        );
        assert_eq!(the_one_copy(&c, &HOSTS, "quiet"), "host-a");
    }
    let out = c.cli(&["workload", "delete", "quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.running_on(&HOSTS, &marker("quiet")).is_empty(),
        "delete said done, but a copy runs"
    );
    // The name is free again, under a newer generation than the agents have seen.
    create_counter(&c, "quiet", "host-a", "host-b", "500ms");
    assert!(c.workload("quiet").unwrap().generation >= 3);
    advancing(&c, "host-a", "quiet");
}

#[test]
fn a_shadow_whose_agent_stopped_is_shown_unreachable_within_the_heartbeat_timeout() {
    require_e2e!();
    let c = Cluster::started(&HOSTS);
    c.create_workload(&[
        "watched",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "1h",
        "--",
        "/bin/sleep",
        "3600",
    ]);
    let list = c.cli(&["workload", "list"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("unreachable"));
    c.stop("host-b");
    let stopped = std::time::Instant::now();
    eventually("the list says so", Duration::from_secs(15), || {
        let out = c.cli(&["workload", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("running, shadow unreachable") {
            Ok(())
        } else {
            Err(text)
        }
    });
    assert!(
        stopped.elapsed() <= HEARTBEAT_TIMEOUT + Duration::from_secs(2),
        "shown after {:?}",
        stopped.elapsed()
    );
    let show = c.cli(&["workload", "show", "watched"]);
    assert!(String::from_utf8_lossy(&show.stdout)
        .contains("protection:     shadow unreachable: host-b is disconnected"));
}
