//! End to end with real CRIU: a workload shadowed on another namespace host moves there
//! with `understudy migrate` and keeps the state it had in memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_tests::cluster::{Cluster, FENCE_AFTER};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

/// Counts in memory and prints every value, every 10 ms.
const COUNTER: &str =
    "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n";

fn started_cluster() -> Cluster {
    Cluster::started(&["host-a", "host-b"])
}

/// The counter on host-a, shadowed on host-b, with 500 ms epochs.
fn create_counter(c: &Cluster) {
    c.create_workload(&[
        "counter",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        COUNTER,
    ]);
}

/// Waits until `name`'s output log on `host` has grown by more than 20 counts.
fn keeps_counting(c: &Cluster, host: &str, name: &str) {
    let n1 = numbers(&c.output_log(host, name)).len();
    eventually(
        &format!("{host} keeps counting"),
        Duration::from_secs(5),
        || {
            let n2 = numbers(&c.output_log(host, name)).len();
            if n2 > n1 + 20 {
                Ok(())
            } else {
                Err(format!("{n1} -> {n2}"))
            }
        },
    );
}

/// Checks that the counter moved from host-a to host-b under the next generation with its
/// count: host-b continues from at least the last value host-a logged, consecutively, and
/// keeps counting while host-a's copy is gone. Returns (last on host-a, first on host-b).
fn moved_with_its_count(c: &Cluster, generation_before: u64) -> (u64, u64) {
    let last_on_a = *numbers(&c.output_log("host-a", "counter"))
        .last()
        .expect("A logged counts");
    let after = c.workload("counter").unwrap();
    assert_eq!(after.primary, "host-b");
    assert_eq!(after.generation, generation_before + 1);
    let b_counts = understudy_tests::copies::counts_on(c, "host-b", "counter");
    // It did not restart from zero: it continues from at least the last value host-a logged.
    assert!(
        b_counts[0] > last_on_a.saturating_sub(1),
        "host-b started at {} but host-a had logged {last_on_a}",
        b_counts[0]
    );
    assert!(
        b_counts.windows(2).all(|w| w[1] == w[0] + 1),
        "counts on B are not consecutive"
    );
    // And it keeps counting there, with A's copy gone.
    keeps_counting(c, "host-b", "counter");
    let a_len = numbers(&c.output_log("host-a", "counter")).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        numbers(&c.output_log("host-a", "counter")).len(),
        a_len,
        "A still runs a copy"
    );
    (last_on_a, b_counts[0])
}

#[test]
fn counter_continues_on_the_new_host_after_migrate() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    create_counter(&c);
    let before = c.wait_for_epochs("counter", 2);
    assert_eq!(before.primary, "host-a");
    let e = before.last_epoch.clone().unwrap();
    assert!(e.bytes_total > 0 && e.bytes_sent > 0);

    let out = c.cli(&["migrate", "counter"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("frozen for"), "{stdout}");
    let (last_on_a, first_on_b) = moved_with_its_count(&c, before.generation);
    let after = c.workload("counter").unwrap();
    eprintln!(
        "counter: A logged up to {last_on_a}, B continued from {first_on_b}; freeze {:?} ms",
        after.last_migration.as_ref().and_then(|m| m.freeze_ms)
    );
}

#[test]
fn a_migration_ordered_while_the_source_agent_reconnects_waits_for_it_and_succeeds() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    create_counter(&c);
    let before = c.wait_for_epochs("counter", 2);
    // host-a's agent goes (its workload runs on) and is shown disconnected, as an agent that
    // missed its heartbeat deadline on a loaded host is, for a moment; here for long enough
    // that the copy's lease runs out and its supervisor freezes it.
    let killed = std::time::Instant::now();
    c.kill("host-a");
    eventually(
        "host-a shown disconnected",
        Duration::from_secs(15),
        || match c.hosts()?.iter().find(|h| h.name == "host-a") {
            Some(h) if !h.connected => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let migrate = c
        .cli_command()
        .args(["migrate", "counter"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep((FENCE_AFTER + Duration::from_secs(1)).saturating_sub(killed.elapsed()));
    let frozen = numbers(&c.output_log("host-a", "counter")).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        numbers(&c.output_log("host-a", "counter")).len(),
        frozen,
        "host-a's copy froze when its lease ran out"
    );
    // Back before the failover delay: the migration goes on from its first order.
    c.start_agent("host-a");
    let out = migrate.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the migration should wait for host-a, not roll back: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("host-a is not connected: waiting up to"),
        "the wait is shown: {stdout}"
    );
    moved_with_its_count(&c, before.generation);
}

#[test]
fn a_final_dump_that_cannot_be_finished_leaves_the_workload_running_where_it_was() {
    require_e2e!();
    require_criu!();
    // Host-a's next three final dumps fail while CRIU holds the tree (as a memory-tracking
    // dump that cannot be made whole does): the first move's dump and its retry, then the
    // second move's first attempt.
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent_env("host-a", &[("UNDERSTUDY_FAULTS", "fail-final-images:3")]);
    c.start_agent("host-b");
    c.wait_connected(2);
    create_counter(&c);
    c.wait_for_epochs("counter", 2);

    let out = c.cli(&["migrate", "counter"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the move should have failed: {err}");
    assert!(err.contains("final dump not finished"), "{err}");
    // CRIU let the tree go on: it still runs on host-a, keeps counting, and has no copy on B.
    let w = c.workload("counter").unwrap();
    assert_eq!(w.primary, "host-a");
    assert_eq!(
        w.state,
        understudy_coordinator::workloads::WorkloadState::Running
    );
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(out.status.code(), Some(75), "{err}");
    keeps_counting(&c, "host-a", "counter");
    let a_counts = numbers(&c.output_log("host-a", "counter"));
    assert!(
        a_counts.windows(2).all(|w| w[1] == w[0] + 1),
        "the counter on A lost or repeated counts"
    );
    assert!(
        numbers(&c.output_log("host-b", "counter")).is_empty(),
        "B ran a copy"
    );

    // The next move's first attempt fails the same way; its retry is a whole dump, finished
    // while the tree is frozen, and the move goes through with the count intact.
    let out = c.cli(&["migrate", "counter"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last_on_a = *numbers(&c.output_log("host-a", "counter")).last().unwrap();
    assert_eq!(c.workload("counter").unwrap().primary, "host-b");
    let b_counts = understudy_tests::copies::counts_on(&c, "host-b", "counter");
    assert!(
        b_counts[0] > last_on_a.saturating_sub(1),
        "host-b started at {} but host-a had logged {last_on_a}",
        b_counts[0]
    );
}

/// A line-based key-value server that keeps everything in memory.
const KV_SERVER: &str = r#"
import socket
store = {}
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(16)
while True:
    c, _ = s.accept()
    f = c.makefile("rwb")
    for line in f:
        p = line.decode().split()
        if len(p) == 3 and p[0] == "SET":
            store[p[1]] = p[2]
            f.write(b"OK\n")
        elif len(p) == 2 and p[0] == "GET":
            f.write((store.get(p[1], "NONE") + "\n").encode())
        else:
            f.write(b"ERR\n")
        f.flush()
    c.close()
"#;

fn kv(addr: std::net::SocketAddr, lines: &[String]) -> Result<Vec<String>, String> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    for l in lines {
        writeln!(w, "{l}").map_err(|e| e.to_string())?;
        let mut answer = String::new();
        r.read_line(&mut answer).map_err(|e| e.to_string())?;
        out.push(answer.trim().to_owned());
    }
    Ok(out)
}

#[test]
fn key_value_server_answers_from_the_new_host_with_its_in_memory_data() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    c.create_workload(&[
        "kv",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "1s",
        "--probe-tcp",
        "7000",
        "--",
        "/usr/bin/python3",
        "-c",
        KV_SERVER,
    ]);
    let a = std::net::SocketAddr::from((c.host("host-a").addr, 7000));
    let b = std::net::SocketAddr::from((c.host("host-b").addr, 7000));
    eventually("kv answers on host-a", Duration::from_secs(10), || {
        kv(a, &["GET x".into()])
    });
    c.wait_for_epochs("kv", 1);
    // Written after the last periodic epoch too: only the final epoch carries these.
    let sets: Vec<String> = (0..50).map(|i| format!("SET key{i} value-{i}")).collect();
    assert!(kv(a, &sets).unwrap().iter().all(|r| r == "OK"));

    let out = c.cli(&["migrate", "kv"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let gets: Vec<String> = (0..50).map(|i| format!("GET key{i}")).collect();
    let answers = kv(b, &gets).expect("kv answers on host-b");
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &format!("value-{i}"), "key{i} lost in the move");
    }
    assert!(
        kv(a, &["GET key1".into()]).is_err(),
        "host-a still serves a copy"
    );
    assert_eq!(c.workload("kv").unwrap().primary, "host-b");
}

#[test]
fn shadow_killed_during_migration_rolls_back_and_a_later_migration_succeeds() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    // ~200 MiB of incompressible memory makes each whole transfer long enough to cut.
    let big = "import os, time\nblob = os.urandom(200 * 1024 * 1024)\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n";
    c.create_workload(&[
        "big",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "1s",
        "--",
        "/usr/bin/python3",
        "-c",
        big,
    ]);
    c.wait_for_epochs("big", 1);

    // Kill host-b as soon as the migration is under way.
    let migrate = {
        c.cli_command()
            .args(["migrate", "big"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    eventually("migration under way", Duration::from_secs(10), || {
        let w = c.workload("big")?;
        if w.state == understudy_coordinator::workloads::WorkloadState::Migrating {
            Ok(())
        } else {
            Err(format!("{:?}", w.state))
        }
    });
    c.note("coord", "killing host-b mid-migration");
    c.kill_host("host-b");
    let out = migrate.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(75),
        "migration should roll back: {err}"
    );
    assert!(err.contains("rolled back"), "{err}");

    // The workload still runs on host-a and keeps counting.
    let w = c.workload("big").unwrap();
    assert_eq!(w.primary, "host-a");
    assert_eq!(
        w.state,
        understudy_coordinator::workloads::WorkloadState::Running
    );
    keeps_counting(&c, "host-a", "big");

    // host-b comes back; shadowing resumes and a later migration succeeds.
    c.set_link("host-b", true);
    c.start_agent("host-b");
    let before = c.workload("big").unwrap().epochs;
    c.wait_for_epochs("big", before + 1);
    let out = c.cli(&["migrate", "big"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.workload("big").unwrap().primary, "host-b");
    eventually("counting on host-b", Duration::from_secs(10), || {
        let n = numbers(&c.output_log("host-b", "big"));
        if n.len() > 10 {
            Ok(())
        } else {
            Err(format!("{}", n.len()))
        }
    });
}

#[test]
fn migrate_to_a_host_that_is_not_the_shadow_reshadows_first() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&["host-a", "host-b", "host-c"]);
    c.start_coordinator();
    for h in ["host-a", "host-b", "host-c"] {
        c.start_agent(h);
    }
    c.wait_connected(3);
    create_counter(&c);
    c.wait_for_epochs("counter", 1);
    let out = c.cli(&["migrate", "counter", "--to", "host-c"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last_on_a = *numbers(&c.output_log("host-a", "counter")).last().unwrap();
    let w = c.workload("counter").unwrap();
    assert_eq!(w.primary, "host-c");
    assert_ne!(w.shadow.as_deref(), Some("host-c"));
    let on_c = eventually("counting on host-c", Duration::from_secs(10), || {
        let n = numbers(&c.output_log("host-c", "counter"));
        if n.len() > 10 {
            Ok(n)
        } else {
            Err(format!("{}", n.len()))
        }
    });
    assert!(
        on_c[0] >= last_on_a,
        "host-c started at {} after host-a's {last_on_a}",
        on_c[0]
    );
}

#[test]
fn deleted_workload_stops_and_leaves_no_copies() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    create_counter(&c);
    c.wait_for_epochs("counter", 1);
    let out = c.cli(&["workload", "delete", "counter"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = numbers(&c.output_log("host-a", "counter")).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        numbers(&c.output_log("host-a", "counter")).len(),
        n,
        "still counting"
    );
    let shadow_dir = c.host_dir("host-b").join("data/workloads/counter/shadow");
    eventually("shadow copies dropped", Duration::from_secs(5), || {
        if shadow_dir.exists() {
            Err("still there".to_string())
        } else {
            Ok(())
        }
    });
    let out = c.cli(&["workload", "show", "counter"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no workload named"));
}
