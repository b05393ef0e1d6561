//! End to end: when CRIU is missing or cannot dump a workload, the workload still runs
//! but is shown unprotected with CRIU's own reason; bad migrate requests change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

#[test]
fn missing_criu_leaves_the_workload_running_but_unprotected_with_the_reason() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent_env("host-a", &[("CRIU_BIN", "/nonexistent/criu")]);
    c.start_agent("host-b");
    c.wait_connected(2);
    c.create_workload(&[
        "w",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--",
        "/bin/sleep",
        "600",
    ]);
    let w = eventually("reported unprotected", Duration::from_secs(10), || {
        let w = c.workload("w")?;
        w.unprotected
            .clone()
            .map(|_| w.clone())
            .ok_or_else(|| "still protected".to_string())
    });
    assert_eq!(w.state, WorkloadState::Running);
    let why = w.unprotected.unwrap();
    assert!(
        why.starts_with("unprotected:") && why.contains("/nonexistent/criu"),
        "{why}"
    );
    let out = c.cli(&["workload", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unprotected"));
}

#[test]
fn a_tree_criu_cannot_dump_shows_criu_s_reason() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&["host-a", "host-b"]);
    // A unix socket connected to a listener outside the workload's tree: CRIU refuses
    // such external sockets unless told how to treat them.
    let sock = c.host_dir("host-a").join("outside.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    c.wait_connected(2);
    let script = format!(
        "import socket, time\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\nwhile True:\n    time.sleep(1)\n",
        sock.to_str().unwrap()
    );
    c.create_workload(&[
        "w",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        &script,
    ]);
    let why = eventually("reported unprotected", Duration::from_secs(20), || {
        c.workload("w")?
            .unprotected
            .ok_or_else(|| "still protected".to_string())
    });
    assert!(
        why.contains("criu dump failed") && why.contains("Error"),
        "{why}"
    );
    assert!(
        why.to_lowercase().contains("socket") || why.contains("sk-unix"),
        "{why}"
    );
    assert_eq!(c.workload("w").unwrap().state, WorkloadState::Running);
}

#[test]
fn bad_migrate_requests_are_refused_and_change_nothing() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent_env("host-a", &[("CRIU_BIN", "/nonexistent/criu")]);
    c.start_agent("host-b");
    c.wait_connected(2);
    c.create_workload(&["w", "--host", "host-a", "--", "/bin/sleep", "600"]);
    let before = c.workload("w").unwrap();
    // Placement chose the only other host.
    assert_eq!(before.shadow.as_deref(), Some("host-b"));

    let cases: [(&[&str], &str); 4] = [
        (&["migrate", "w", "--to", "nowhere"], "not known"),
        (&["migrate", "w", "--to", "host-a"], "already runs"),
        (&["migrate", "w"], "no committed epoch"),
        (&["migrate", "nothing"], "no workload named"),
    ];
    for (args, expect) in cases {
        let out = c.cli(args);
        assert_eq!(out.status.code(), Some(65), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let out = c.cli(&["migrate", "w", "--dry-run"]);
    assert!(
        !out.status.success(),
        "a dry run of an impossible move must fail too"
    );
    assert_eq!(c.workload("w").unwrap().generation, before.generation);
    assert_eq!(c.workload("w").unwrap().primary, "host-a");

    // Creating with a bad name or a disconnected host is refused with the field named.
    let out = c.cli(&[
        "workload",
        "create",
        "Bad/Name",
        "--host",
        "host-a",
        "--",
        "/bin/true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("name"));
    let out = c.cli(&[
        "workload",
        "create",
        "x",
        "--host",
        "ghost",
        "--",
        "/bin/true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("host: host \"ghost\""));
}
