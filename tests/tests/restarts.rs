//! End to end: a workload whose process tree exits on its own is restarted by its restart
//! policy on the host it runs on, stays protected afterwards, and is left exited once the
//! policy's attempts are spent; the restarts are counted where an operator looks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

#[test]
fn a_crashed_workload_is_restarted_and_its_new_tree_is_checkpointed() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&["host-a", "host-b"]);
    let marker = tempfile::tempdir().unwrap();
    let flag = marker.path().join("crashed-once");
    // The first run crashes after printing; every later run keeps printing.
    let script = format!(
        "echo run; if [ -e {f} ]; then while true; do echo tick; sleep 0.1; done; fi; touch {f}; sleep 0.5; exit 3",
        f = flag.display()
    );
    c.create_workload(&[
        "flaky",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--restart-attempts",
        "2",
        "--restart-delay",
        "200ms",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    let w = eventually("the restart is recorded", Duration::from_secs(20), || {
        let w = c.workload("flaky")?;
        if w.restarts == 1 {
            Ok(w)
        } else {
            Err(format!("{} restarts, state {:?}", w.restarts, w.state))
        }
    });
    assert_eq!(w.state, WorkloadState::Running);
    let (status, _) = w.last_exit.clone().expect("the exit is recorded");
    assert!(status.contains("exited with status 3"), "{status}");
    let log = c.output_log("host-a", "flaky");
    assert_eq!(log.matches("run").count(), 2, "started twice: {log}");
    // The restarted tree is the one being protected: epochs keep committing after it.
    let at_restart = w.epochs;
    c.wait_for_epochs("flaky", at_restart + 2);
    let shown = c.cli(&["workload", "show", "flaky"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("restarts:       1 (policy: up to 2 per 30m, 200ms apart)"),
        "{text}"
    );
    assert!(
        text.contains("last exit:      exited with status 3"),
        "{text}"
    );
    let n = eventually("the agent counts it", Duration::from_secs(5), || {
        c.agent_metric(
            "host-a",
            "understudy_workload_restarts_total{workload=\"flaky\"}",
        )
    });
    assert_eq!(n, 1.0);
}

#[test]
fn a_workload_that_keeps_crashing_is_left_exited_once_its_attempts_are_spent() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let refused = c.cli(&[
        "workload",
        "create",
        "crashy",
        "--host",
        "host-a",
        "--restart-attempts",
        "1000",
        "--",
        "/bin/true",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(65), "{err}");
    assert!(
        err.contains("restart.attempts") && err.contains("1000"),
        "{err}"
    );
    assert!(c.workload("crashy").is_err(), "nothing was created");
    c.create_workload(&[
        "crashy",
        "--host",
        "host-a",
        "--restart-attempts",
        "2",
        "--restart-delay",
        "100ms",
        "--",
        "/bin/sh",
        "-c",
        "echo run; sleep 0.3; exit 7",
    ]);
    let w = eventually("the workload gives up", Duration::from_secs(20), || {
        let w = c.workload("crashy")?;
        match &w.state {
            WorkloadState::Exited(_) => Ok(w),
            other => Err(format!("{} restarts, state {other:?}", w.restarts)),
        }
    });
    assert_eq!(w.restarts, 2);
    let WorkloadState::Exited(status) = &w.state else {
        unreachable!()
    };
    assert!(
        status.contains("exited with status 7")
            && status.contains("not restarted: 2 restarts within 30m already"),
        "{status}"
    );
    // Given up for good: no further run starts.
    std::thread::sleep(Duration::from_millis(800));
    let log = c.output_log("host-a", "crashy");
    assert_eq!(log.matches("run").count(), 3, "1 start + 2 restarts: {log}");
}
