//! The coordinator deciding and operators draining: real binaries on namespace hosts, real
//! CRIU. A drain empties a host one workload at a time and re-homes the shadows it held; a
//! maintenance window empties its host before it opens and keeps new placements away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use understudy_coordinator::admin::HostAdmin;
use understudy_coordinator::events::Event;
use understudy_coordinator::workloads::WorkloadRecord;
use understudy_tests::cluster::{Cluster, HTTP_PORT};
use understudy_tests::copies::{advancing, create_counter, marker, one_copy_soon, COUNTER};
use understudy_tests::pressure::{MemoryCgroup, GROWER};
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

fn get(c: &Cluster, path: &str) -> String {
    c.api_get("coord", path).unwrap()
}

fn events(c: &Cluster, query: &str) -> Vec<Event> {
    serde_json::from_str(&get(c, &format!("/v1/events?limit=1000&{query}"))).unwrap()
}

fn admin(c: &Cluster, host: &str) -> HostAdmin {
    serde_json::from_str(&get(c, &format!("/v1/hosts/{host}/admin"))).unwrap()
}

/// Three hosts with the coordinator's `[decisions]` as `body`. The hosts share this
/// machine, whose load (CRIU dumps of every test's workloads) the health model sees: the
/// operator tests take any connected host as a target, so that they test the drain and the
/// window, not this machine's health.
fn cluster(body: &str) -> Cluster {
    let c = Cluster::new(&HOSTS);
    c.set_decisions(&format!("triggers = []\ntarget_health_min = 0\n{body}"));
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(HOSTS.len());
    c
}

/// Three hosts with `[decisions]` as `body`, each agent taking its health score from a file
/// of its own (a test-only source: the health model reads machine-wide metrics, which the
/// namespace hosts share; the score reaches the coordinator through the real heartbeats).
/// Every score starts at 95; the second value gives the file of a host.
fn cluster_with_scores(body: &str) -> (Cluster, impl Fn(&str) -> std::path::PathBuf) {
    let c = Cluster::new(&HOSTS);
    c.set_decisions(body);
    c.start_coordinator();
    let dir = c.host_dir("host-a").parent().unwrap().to_owned();
    let score_file = move |h: &str| dir.join(h).join("health");
    for h in HOSTS {
        std::fs::write(score_file(h), "95").unwrap();
        c.start_agent_env(
            h,
            &[("UNDERSTUDY_TEST_HEALTH", score_file(h).to_str().unwrap())],
        );
    }
    c.wait_connected(3);
    (c, score_file)
}

/// When a workload's last move started and ended, ms since the Unix epoch.
fn move_span(w: &WorkloadRecord) -> (u64, u64) {
    let m = w.last_migration.as_ref().expect("it moved");
    (m.finished_unix_ms - m.total_ms, m.finished_unix_ms)
}

#[test]
fn a_drain_moves_every_workload_off_one_at_a_time_and_leaves_the_host_empty_and_cordoned() {
    require_e2e!();
    require_criu!();
    let c = cluster("mode = \"off\"");
    create_counter(&c, "d1", "host-a", "host-b", "500ms");
    create_counter(&c, "d2", "host-a", "host-c", "500ms");
    create_counter(&c, "d3", "host-a", "host-b", "500ms");
    // A workload whose shadow lives on the drained host.
    create_counter(&c, "s1", "host-b", "host-a", "500ms");
    for n in ["d1", "d2", "d3", "s1"] {
        c.wait_for_epochs(n, 1);
    }
    let out = c.cli(&["host", "drain", "host-a", "--parallel", "1"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("draining host-a: 3 workloads, 1 shadows"),
        "{text}"
    );
    for n in ["d1", "d2", "d3"] {
        assert!(
            text.contains(&format!("  {n}: ")),
            "progress of {n}: {text}"
        );
    }
    assert!(text.contains("host-a drained"), "{text}");

    let records: Vec<WorkloadRecord> = ["d1", "d2", "d3"]
        .iter()
        .map(|n| c.workload(n).unwrap())
        .collect();
    for w in &records {
        let name = &w.spec.name;
        assert_ne!(w.primary, "host-a", "{name}");
        assert_ne!(w.shadow.as_deref(), Some("host-a"), "{name}'s new shadow");
        assert_eq!(one_copy_soon(&c, &HOSTS, name), w.primary);
        advancing(&c, &w.primary, name);
    }
    // One at a time: no two moves overlapped.
    let mut spans: Vec<(u64, u64)> = records.iter().map(move_span).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "moves overlapped: {spans:?}");
    }
    // The shadow it held went elsewhere, and epochs reach it.
    eventually(
        "s1's epochs reach its new shadow",
        Duration::from_secs(30),
        || {
            let w = c.workload("s1")?;
            match (&w.shadow, &w.last_epoch) {
                (Some(s), Some(e)) if s != "host-a" && &e.shadow == s => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let a = admin(&c, "host-a");
    assert!(a.cordoned && a.drain.is_none(), "{a:?}");
    // The event log says what happened and why.
    let log = events(&c, "host=host-a");
    let said = |needle: &str| log.iter().any(|e| e.message.contains(needle));
    assert!(said("draining host-a: 3 workloads"), "{log:?}");
    assert!(said("moving d1 from host-a"), "{log:?}");
    assert!(said("host-a drained"), "{log:?}");
    assert!(
        log.iter()
            .filter(|e| e.kind == "move")
            .all(|e| e.inputs.iter().any(|(k, v)| k == "trigger" && v == "drain")),
        "{log:?}"
    );
    let shown = c.cli(&["events", "--host", "host-a"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("host-a drained"));
    // Nothing new is placed on a cordoned host.
    c.create_workload(&["late", "--host", "host-b", "--", "/bin/sleep", "3600"]);
    assert_eq!(
        c.workload("late").unwrap().shadow.as_deref(),
        Some("host-c")
    );
    // Uncordoned, it takes workloads again.
    assert!(c.cli(&["host", "uncordon", "host-a"]).status.success());
    assert!(!admin(&c, "host-a").cordoned);
}

#[test]
fn a_maintenance_window_empties_its_host_before_it_opens_and_keeps_placements_away() {
    require_e2e!();
    require_criu!();
    let c = cluster("mode = \"off\"\nmaintenance_lead = \"20s\"");
    create_counter(&c, "m1", "host-a", "host-b", "500ms");
    c.wait_for_epochs("m1", 1);
    let out = c.cli(&[
        "maintenance",
        "add",
        "host-a",
        "--start",
        "+40s",
        "--duration",
        "1h",
        "--reason",
        "firmware",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let windows: Vec<understudy_coordinator::server::admin::WindowView> =
        serde_json::from_str(&get(&c, "/v1/maintenance")).unwrap();
    let opens = windows[0].window.start_ms;
    // Not yet: the window opens in 40 s and workloads leave 20 s before.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.workload("m1").unwrap().primary, "host-a");
    let plan = c.cli(&["plan"]);
    assert!(String::from_utf8_lossy(&plan.stdout).contains("firmware"));
    let w = eventually("m1 leaves host-a", Duration::from_secs(60), || {
        let w = c.workload("m1")?;
        match &w.last_migration {
            Some(m) if m.outcome == "succeeded" && w.primary != "host-a" => Ok(w),
            other => Err(format!("{other:?}")),
        }
    });
    let (_, finished) = move_span(&w);
    assert!(
        finished < opens,
        "moved {} ms after the window opened",
        finished - opens
    );
    advancing(&c, &w.primary, "m1");
    assert_ne!(
        w.shadow.as_deref(),
        Some("host-a"),
        "no shadow placed there"
    );
    let log = events(&c, "workload=m1");
    assert!(
        log.iter()
            .any(|e| e.kind == "move" && e.message.contains("firmware")),
        "{log:?}"
    );
}

#[test]
fn a_burst_of_memory_errors_on_the_primary_moves_its_workload_naming_the_trigger() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&HOSTS);
    c.set_decisions(
        "mode = \"act\"\ntriggers = [\"errors\"]\nerrors_per_hour = 5\npersist = \"2s\"\ntarget_health_min = 0",
    );
    c.start_coordinator();
    // Each host's agent reads its own kernel log (a test-only file in /dev/kmsg's place).
    let kmsg = c.kernel_log("host-a");
    c.start_agent("host-a");
    c.start_agent("host-b");
    c.start_agent("host-c");
    c.wait_connected(3);
    create_counter(&c, "e1", "host-a", "host-b", "500ms");
    c.wait_for_epochs("e1", 2);
    assert_eq!(c.workload("e1").unwrap().primary, "host-a");
    understudy_tests::pressure::edac_errors(&kmsg, 1000, 6);
    let w = eventually("e1 leaves host-a", Duration::from_secs(60), || {
        let w = c.workload("e1")?;
        match &w.last_migration {
            Some(m) if m.outcome == "succeeded" && w.primary != "host-a" => Ok(w),
            other => Err(format!("{} on {}: {other:?}", w.state.name(), w.primary)),
        }
    });
    advancing(&c, &w.primary, "e1");
    assert_eq!(one_copy_soon(&c, &HOSTS, "e1"), w.primary);
    let log = events(&c, "workload=e1");
    let moved = log
        .iter()
        .find(|e| e.kind == "move")
        .unwrap_or_else(|| panic!("no move event: {log:?}"));
    assert!(
        moved
            .message
            .contains("6 kernel errors in the last hour (edac 6)"),
        "{moved:?}"
    );
    assert!(
        moved
            .inputs
            .iter()
            .any(|(k, v)| k == "trigger" && v == "errors"),
        "{moved:?}"
    );
    // host-a is still in trouble (its errors are within the hour): the workload stays
    // where it went, and nothing is placed on host-a.
    std::thread::sleep(Duration::from_secs(3));
    let now = c.workload("e1").unwrap();
    assert_eq!(now.primary, w.primary);
    assert_ne!(now.shadow.as_deref(), Some("host-a"));
}

#[test]
fn health_that_stays_low_moves_the_workload_and_a_dip_shorter_than_the_hysteresis_does_not() {
    require_e2e!();
    require_criu!();
    // 8 heartbeats of 500 ms: a host must stay below 70 for 4 s.
    let (c, score_file) = cluster_with_scores(
        "mode = \"act\"\ntriggers = [\"health\"]\nhealth_below = 70\nhealth_heartbeats = 8\ntarget_health_min = 75",
    );
    create_counter(&c, "h1", "host-a", "host-b", "500ms");
    c.wait_for_epochs("h1", 2);
    // A dip of a second: shorter than the hysteresis, no move.
    std::fs::write(score_file("host-a"), "40").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(score_file("host-a"), "95").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let w = c.workload("h1").unwrap();
    assert_eq!(w.primary, "host-a");
    assert!(w.last_migration.is_none(), "{:?}", w.last_migration);
    // A fall that lasts: it moves.
    std::fs::write(score_file("host-a"), "40").unwrap();
    let w = eventually("h1 leaves host-a", Duration::from_secs(60), || {
        let w = c.workload("h1")?;
        match &w.last_migration {
            Some(m) if m.outcome == "succeeded" && w.primary != "host-a" => Ok(w),
            other => Err(format!("{} on {}: {other:?}", w.state.name(), w.primary)),
        }
    });
    advancing(&c, &w.primary, "h1");
    let log = events(&c, "workload=h1");
    let moved = log.iter().find(|e| e.kind == "move").unwrap();
    assert!(
        moved.message.contains("health 40 below 70 for"),
        "{moved:?}"
    );
    // host-a recovers at once and the new host falls: within its cool-down the workload
    // does not move (back) again, and the event says why.
    std::fs::write(score_file("host-a"), "95").unwrap();
    std::fs::write(score_file(&w.primary), "40").unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let now = c.workload("h1").unwrap();
    assert_eq!(now.primary, w.primary, "no flapping");
    let log = events(&c, "workload=h1");
    assert_eq!(
        log.iter().filter(|e| e.kind == "move").count(),
        1,
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|e| e.kind == "decision" && e.message.contains("cool-down")),
        "{log:?}"
    );
}

#[test]
fn with_most_hosts_in_trouble_at_once_it_only_advises_and_moves_once_that_passes() {
    require_e2e!();
    require_criu!();
    // 6 heartbeats (3 s): the two agents below read their new scores up to a heartbeat
    // apart, and neither host may count as in trouble alone meanwhile.
    let (c, score_file) = cluster_with_scores(
        "mode = \"act\"\ntriggers = [\"health\"]\nhealth_heartbeats = 6\ntarget_health_min = 75",
    );
    create_counter(&c, "s1", "host-a", "host-b", "500ms");
    c.wait_for_epochs("s1", 1);
    // Two of the three hosts fall at once: more than half, a cause they share is likelier.
    std::fs::write(score_file("host-a"), "30").unwrap();
    std::fs::write(score_file("host-b"), "30").unwrap();
    let reason = "2 of 3 connected hosts in trouble at once (host-a, host-b; more than 0.5)";
    eventually("the advice is recorded", Duration::from_secs(30), || {
        let log = events(&c, "workload=s1");
        match log.iter().find(|e| e.kind == "decision") {
            Some(e) if e.message.contains(reason) => Ok(()),
            _ => Err(format!("{log:?}")),
        }
    });
    let plan = String::from_utf8_lossy(&c.cli(&["plan"]).stdout).into_owned();
    assert!(
        plan.contains(&format!(
            "s1 on host-a: should move to host-c, but: {reason}"
        )),
        "{plan}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let w = c.workload("s1").unwrap();
    assert_eq!(w.primary, "host-a");
    assert!(w.last_migration.is_none(), "{:?}", w.last_migration);
    // Nor does its shadow leave host-b (moving shadows among the troubled hosts escapes
    // nothing either).
    assert_eq!(w.shadow.as_deref(), Some("host-b"));
    assert!(
        !events(&c, "workload=s1")
            .iter()
            .any(|e| e.kind == "reshadow"),
        "{:?}",
        events(&c, "workload=s1")
    );
    // host-b recovers: host-a alone is in trouble, and its workload leaves.
    std::fs::write(score_file("host-b"), "95").unwrap();
    let w = eventually("s1 leaves host-a", Duration::from_secs(60), || {
        let w = c.workload("s1")?;
        match &w.last_migration {
            Some(m) if m.outcome == "succeeded" && w.primary != "host-a" => Ok(w),
            other => Err(format!("{} on {}: {other:?}", w.state.name(), w.primary)),
        }
    });
    advancing(&c, &w.primary, "s1");
}

#[test]
fn advise_mode_records_the_decision_and_moves_nothing_and_with_no_fit_target_says_why() {
    require_e2e!();
    require_criu!();
    let (c, score_file) = cluster_with_scores(
        "mode = \"advise\"\ntriggers = [\"health\"]\nhealth_heartbeats = 2\ntarget_health_min = 75",
    );
    // A critical workload: its benefit weighs four times the trouble's probability.
    let m = marker("a1");
    c.create_workload(&[
        "a1",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--priority",
        "critical",
        "--",
        "/usr/bin/python3",
        "-c",
        understudy_tests::copies::COUNTER,
        &m,
    ]);
    let shown = String::from_utf8_lossy(&c.cli(&["workload", "show", "a1"]).stdout).into_owned();
    assert!(
        shown.contains("priority:       critical (weight 4)"),
        "{shown}"
    );
    c.wait_for_epochs("a1", 1);
    std::fs::write(score_file("host-a"), "30").unwrap();
    let said = |needle: &'static str| {
        let c = &c;
        move || {
            let log = events(c, "workload=a1");
            if log
                .iter()
                .any(|e| e.kind == "decision" && e.message.contains(needle))
            {
                Ok(())
            } else {
                Err(format!("{log:?}"))
            }
        }
    };
    eventually(
        "the advice is recorded",
        Duration::from_secs(20),
        said("not moved: decisions mode is advise"),
    );
    let advice = events(&c, "workload=a1")
        .into_iter()
        .find(|e| e.kind == "decision")
        .unwrap();
    let input = |k: &str| {
        advice
            .inputs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        (input("probability"), input("benefit")),
        ("0.70".to_string(), "2.80".to_string()),
        "{advice:?}"
    );
    let plan = String::from_utf8_lossy(&c.cli(&["plan"]).stdout).into_owned();
    assert!(
        plan.contains("a1 on host-a: should move to host-b, but: decisions mode is advise"),
        "{plan}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let w = c.workload("a1").unwrap();
    assert_eq!(w.primary, "host-a");
    assert!(w.last_migration.is_none());
    // No host fit to take it: the reason for each is an event.
    std::fs::write(score_file("host-b"), "30").unwrap();
    std::fs::write(score_file("host-c"), "72").unwrap();
    eventually(
        "the missing target is an event",
        Duration::from_secs(20),
        said("no target"),
    );
    let log = events(&c, "workload=a1");
    let last = log.iter().rev().find(|e| e.kind == "decision").unwrap();
    // host-b is unfit by its health at once, and in trouble itself a heartbeat later.
    assert!(
        (last.message.contains("host-b health 30 below 75")
            || last.message.contains("host-b itself at risk (health:"))
            && last.message.contains("host-c health 72 below 75"),
        "{last:?}"
    );
    assert_eq!(c.workload("a1").unwrap().primary, "host-a");
}

#[test]
fn a_drain_survives_a_coordinator_restart_and_completes() {
    require_e2e!();
    require_criu!();
    let c = cluster("mode = \"off\"");
    create_counter(&c, "r1", "host-a", "host-b", "500ms");
    create_counter(&c, "r2", "host-a", "host-c", "500ms");
    for n in ["r1", "r2"] {
        c.wait_for_epochs(n, 1);
    }
    let out = c.cli(&["host", "drain", "host-a", "--detach"]);
    assert!(out.status.success());
    eventually("the first move starts", Duration::from_secs(20), || {
        let log = events(&c, "host=host-a");
        if log.iter().any(|e| e.kind == "move") {
            Ok(())
        } else {
            Err(format!("{log:?}"))
        }
    });
    c.kill("coord");
    c.start_coordinator();
    c.wait_connected(3);
    let out = c.cli(&["host", "drain", "host-a", "--monitor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("host-a drained"), "{text}");
    for n in ["r1", "r2"] {
        let w = c.workload(n).unwrap();
        assert_ne!(w.primary, "host-a", "{n}");
        assert_eq!(one_copy_soon(&c, &HOSTS, n), w.primary);
        advancing(&c, &w.primary, n);
    }
    assert!(admin(&c, "host-a").cordoned);
}

#[test]
fn a_drain_whose_target_is_cut_mid_move_rolls_that_one_back_and_goes_on() {
    require_e2e!();
    require_criu!();
    let c = cluster("mode = \"off\"");
    // t1 holds 150 MiB, so that its move's first phase (a last epoch to the target while it
    // runs) lasts long enough to cut the target in it.
    c.create_workload(&[
        "t1", "--host", "host-a", "--shadow", "host-b", "--interval", "2s", "--",
        "/usr/bin/python3", "-c",
        "import os, time\nblob = os.urandom(150 * 1024 * 1024)\nwhile True:\n    time.sleep(0.05)\n",
        &marker("t1"),
    ]);
    create_counter(&c, "t2", "host-a", "host-c", "500ms");
    for n in ["t1", "t2"] {
        c.wait_for_epochs(n, 1);
    }
    let drain = {
        let mut cmd = c.cli_command();
        std::thread::spawn(move || {
            cmd.args([
                "host",
                "drain",
                "host-a",
                "--parallel",
                "1",
                "--deadline",
                "120s",
            ])
            .output()
            .unwrap()
        })
    };
    // t2 goes first (t1's move costs more: a bigger freeze), then t1 to its shadow
    // host-b: cut host-b while t1's move takes its last epochs there (cut in its sync or
    // freeze phase, a move rolls back; the drain's deadline keeps the test from hanging if
    // the cut came later, when the coordinator waits for the target's answer).
    eventually(
        "t1's move is in its sync phase",
        Duration::from_secs(60),
        || match c.api_get("coord", "/v1/workloads/t1/migration") {
            Ok(body)
                if (body.contains("\"phase\":\"sync\"")
                    || body.contains("\"phase\":\"freeze\""))
                    && !body.contains("\"outcome\":\"") =>
            {
                Ok(())
            }
            Ok(body) => Err(body),
            Err(e) => Err(e),
        },
    );
    c.set_link("host-b", false);
    let out = drain.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The failed move rolled back and was shown; both ended on host-c, the one host left.
    assert!(
        text.contains("t1: on host-a (rolled back"),
        "the failure is shown: {text}"
    );
    for n in ["t1", "t2"] {
        let w = c.workload(n).unwrap();
        assert_eq!(w.primary, "host-c", "{n}");
        assert_eq!(one_copy_soon(&c, &["host-a", "host-c"], n), "host-c");
    }
    advancing(&c, "host-c", "t2");
    let log = events(&c, "workload=t1");
    assert!(
        log.iter().filter(|e| e.kind == "move").count() >= 2,
        "tried again after the rollback: {log:?}"
    );
}

#[test]
fn memory_growing_toward_the_hosts_limit_moves_the_workload_before_it_is_reached() {
    require_e2e!();
    require_criu!();
    const MIB: u64 = 1 << 20;
    let (limit, per_s) = (512 * MIB, 2 * MIB);
    // host-a's memory is a memory cgroup's (`[agent] memory_cgroup`): the namespace hosts
    // share this machine's memory, so a host with memory of its own needs its own cgroup.
    let cg = match MemoryCgroup::new(limit) {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("SKIPPED: cannot make a memory cgroup for host-a: {why}");
            return;
        }
    };
    let c = Cluster::new(&HOSTS);
    c.set_decisions(
        "mode = \"act\"\ntriggers = [\"exhaustion\", \"risk\"]\npersist = \"5s\"\ntarget_health_min = 0",
    );
    c.agent_setting(
        "host-a",
        &format!("memory_cgroup = \"{}\"", cg.dir().display()),
    );
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(3);
    create_counter(&c, "m1", "host-a", "host-b", "500ms");
    c.wait_for_epochs("m1", 2);
    // A process outside the workload, on host-a, grows toward the host's limit.
    let mut grower = std::process::Command::new("python3")
        .args(["-c", GROWER, &per_s.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cg.add(grower.id());
    let onset = std::time::Instant::now();
    let limit_in = Duration::from_secs(limit / per_s);
    // The forecast needs its 120-sample window, then 5 s of persisting trigger.
    let w = eventually("m1 leaves host-a", Duration::from_secs(240), || {
        let w = c.workload("m1")?;
        match &w.last_migration {
            Some(m) if m.outcome == "succeeded" && w.primary != "host-a" => Ok(w),
            other => Err(format!("{} on {}: {other:?}", w.state.name(), w.primary)),
        }
    });
    let moved_after = onset.elapsed();
    assert!(
        matches!(grower.try_wait(), Ok(None)),
        "the memory grower was killed (it reached host-a's limit) before the move"
    );
    eprintln!(
        "moved {:.0} s after the growth began, {:.0} s before it would reach host-a's limit",
        moved_after.as_secs_f64(),
        limit_in.saturating_sub(moved_after).as_secs_f64()
    );
    assert!(moved_after < limit_in, "moved only after the limit");
    let _ = grower.kill();
    let _ = grower.wait();
    advancing(&c, &w.primary, "m1");
    assert_eq!(one_copy_soon(&c, &HOSTS, "m1"), w.primary);
    let log = events(&c, "workload=m1");
    let moved = log
        .iter()
        .find(|e| e.kind == "move")
        .unwrap_or_else(|| panic!("no move event: {log:?}"));
    let trigger = moved.inputs.iter().find(|(k, _)| k == "trigger");
    assert!(
        matches!(trigger, Some((_, t)) if t == "exhaustion" || t == "risk"),
        "{moved:?}"
    );
    assert!(
        moved.message.contains("mem_u") || moved.message.contains("memory"),
        "the move does not say memory was the trouble: {moved:?}"
    );
}

#[test]
fn a_blocking_events_query_answers_when_the_next_event_comes_and_hosts_show_their_zone() {
    require_e2e!();
    let c = Cluster::new(&HOSTS);
    c.set_decisions("mode = \"off\"");
    c.agent_setting("host-b", "zone = \"rack-2\"");
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(3);
    let shown = String::from_utf8_lossy(&c.cli(&["host", "show", "host-b"]).stdout).into_owned();
    assert!(shown.contains("zone:         rack-2"), "{shown}");
    let last = events(&c, "").last().map_or(0, |e| e.seq);
    let addr = SocketAddr::from((c.host("coord").addr, HTTP_PORT));
    let client = c.api_client(Some(understudy_common::tls::Role::Viewer));
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let body = client
            .get(addr, &format!("/v1/events?after={last}&wait=20s"))
            .unwrap();
        (started.elapsed(), body)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!waiting.is_finished(), "it answered with nothing new");
    c.cli(&["host", "cordon", "host-b"]);
    let (took, body) = waiting.join().unwrap();
    let got: Vec<Event> = serde_json::from_str(&body).unwrap();
    assert!(
        got.iter()
            .any(|e| e.host.as_deref() == Some("host-b") && e.message.contains("cordon")),
        "{got:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered only after {took:?}"
    );
    // With nothing to come, it answers empty once the wait is over (after the cordon's
    // own audit event, written as its answer went out).
    let last = events(&c, "").last().unwrap().seq;
    let body = c
        .api_client(Some(understudy_common::tls::Role::Viewer))
        .get(addr, &format!("/v1/events?after={last}&wait=1s"))
        .unwrap();
    assert_eq!(body.trim(), "[]");
}

#[test]
fn a_workload_placed_when_no_host_could_shadow_it_gets_a_shadow_once_one_connects() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&["host-a", "host-b"]);
    // Not a move: advise mode gives it a shadow too.
    c.set_decisions("mode = \"advise\"\ntriggers = []");
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);
    let m = marker("alone");
    c.create_workload(&[
        "alone",
        "--host",
        "host-a",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        COUNTER,
        &m,
    ]);
    let w = c.workload("alone").unwrap();
    assert_eq!(w.shadow, None, "no other host to shadow it yet");
    assert!(w.unprotected.is_some(), "{w:?}");
    c.start_agent("host-b");
    c.wait_connected(2);
    let w = eventually(
        "alone gets host-b as its shadow and commits epochs there",
        Duration::from_secs(60),
        || {
            let w = c.workload("alone")?;
            let there = w.last_epoch.as_ref().is_some_and(|e| e.shadow == "host-b");
            if w.shadow.as_deref() == Some("host-b") && there {
                Ok(w)
            } else {
                Err(format!(
                    "shadow {:?}, unprotected {:?}",
                    w.shadow, w.unprotected
                ))
            }
        },
    );
    assert_eq!(w.unprotected, None);
    let said = events(&c, "workload=alone");
    assert!(
        said.iter()
            .any(|e| e.message == "alone had no shadow; host-b is its shadow now"),
        "{said:?}"
    );
    // The shadow is real: the workload moves there and counts on.
    let before = advancing(&c, "host-a", "alone");
    let out = c.cli(&["migrate", "alone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(one_copy_soon(&c, &["host-a", "host-b"], "alone"), "host-b");
    assert!(advancing(&c, "host-b", "alone") > before);
}
