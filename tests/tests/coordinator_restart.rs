//! The coordinator restarted — cleanly (SIGTERM) and not (SIGKILL, or an abort in the
//! middle of a switchover) — with workloads in every state: it comes back with every
//! record, and a switchover it was driving ends with exactly one running copy, its
//! periodic epochs resumed, and a record that says how the move ended.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::{WorkloadRecord, WorkloadState};
use understudy_tests::cluster::Cluster;
use understudy_tests::command::said;
use understudy_tests::copies::{
    advancing, create_counter, marker, one_copy_soon, settled_create, spawn_create_counter,
    the_one_copy, told,
};
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

fn state_of(c: &Cluster, name: &str) -> Result<WorkloadRecord, String> {
    c.workload(name)
}

/// Waits until `name` is running (no switchover in flight) and returns its record.
fn settled_running(c: &Cluster, name: &str) -> WorkloadRecord {
    eventually(
        &format!("{name} running again"),
        Duration::from_secs(60),
        || {
            let w = state_of(c, name)?;
            if w.state == WorkloadState::Running {
                Ok(w)
            } else {
                Err(format!("{:?}", w.state))
            }
        },
    )
}

/// Waits for two more epochs of `name` under its current generation.
fn epochs_resume(c: &Cluster, name: &str) {
    let w = c.workload(name).unwrap();
    eventually(
        &format!("{name}'s epochs resume"),
        Duration::from_secs(60),
        || {
            let now = c.workload(name)?;
            let current = now
                .last_epoch
                .as_ref()
                .is_some_and(|e| e.generation == now.generation);
            if now.epochs >= w.epochs + 2 && current {
                Ok(())
            } else {
                Err(format!(
                    "{} epochs (was {}), last {:?}, unprotected {:?}",
                    now.epochs, w.epochs, now.last_epoch, now.unprotected
                ))
            }
        },
    );
}

/// The list as an operator reads it: every workload's row by name.
fn list_rows(c: &Cluster) -> String {
    let out = c.cli(&["workload", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn row<'a>(list: &'a str, name: &str) -> &'a str {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{list}"))
}

#[test]
fn a_coordinator_restarted_with_workloads_in_every_state_keeps_every_record() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&HOSTS);
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);
    // Unprotected: created while no other host could shadow it.
    c.create_workload(&[
        "lonely",
        "--host",
        "host-a",
        "--interval",
        "1s",
        "--",
        "/bin/sleep",
        "3600",
    ]);
    c.start_agent("host-b");
    c.start_agent("host-c");
    c.wait_connected(3);
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    // Lagging: its shadow's agent is stopped below.
    c.create_workload(&[
        "lagging",
        "--host",
        "host-a",
        "--shadow",
        "host-c",
        "--interval",
        "500ms",
        "--",
        "/bin/sleep",
        "3600",
    ]);
    c.create_workload(&[
        "quitter",
        "--host",
        "host-b",
        "--shadow",
        "host-a",
        "--",
        "/bin/sh",
        "-c",
        "echo bye; sleep 0.5; exit 3",
    ]);
    // Failed: it dies with its agent below, whose restart finds no copy.
    create_counter(&c, "doomed", "host-b", "host-a", "500ms");
    // Migrating when each restart comes: 150 MiB of memory makes each dump last.
    c.create_workload(&[
        "mover", "--host", "host-a", "--shadow", "host-b", "--interval", "2s", "--",
        "/usr/bin/python3", "-c",
        "import os, time\nblob = os.urandom(150 * 1024 * 1024)\nwhile True:\n    time.sleep(0.05)\n",
        &marker("mover"),
    ]);
    for name in ["steady", "lagging", "doomed", "mover"] {
        c.wait_for_epochs(name, 1);
    }
    c.stop("host-c");
    c.kill("host-b");
    c.kill_processes("host-b", &marker("doomed"));
    // Gone before the agent comes back: one killed while a dump cut off by the agent's
    // SIGKILL still held it must not be found alive by the restarted agent.
    eventually(
        "doomed's processes are gone",
        Duration::from_secs(20),
        || {
            let left = c.processes("host-b", &marker("doomed"));
            if left.is_empty() {
                Ok(())
            } else {
                c.kill_processes("host-b", &marker("doomed"));
                Err(format!("left: {:?}", c.process_states(&left)))
            }
        },
    );
    c.start_agent("host-b");
    eventually("the states settle", Duration::from_secs(40), || {
        let quit = state_of(&c, "quitter")?;
        let doomed = state_of(&c, "doomed")?;
        let lag = state_of(&c, "lagging")?;
        match (&quit.state, &doomed.state, &lag.unprotected) {
            (WorkloadState::Exited(_), WorkloadState::Failed(_), Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let WorkloadState::Failed(why) = state_of(&c, "doomed").unwrap().state else {
        unreachable!()
    };
    assert!(
        why.contains("not running on host-b") && why.contains("holds no copy"),
        "{why}"
    );
    let before: Vec<WorkloadRecord> = ["lonely", "steady", "lagging", "quitter", "doomed"]
        .iter()
        .map(|n| c.workload(n).unwrap())
        .collect();

    for signal in ["TERM", "KILL"] {
        c.note(
            "coord",
            &format!("restart with SIG{signal} while mover migrates"),
        );
        let out = c.cli(&["migrate", "mover", "--dry-run"]);
        assert!(out.status.success());
        let migrate = {
            let mut cmd = c.cli_command();
            std::thread::spawn(move || cmd.args(["migrate", "mover"]).output())
        };
        eventually(
            "mover is migrating",
            Duration::from_secs(20),
            || match state_of(&c, "mover")?.state {
                WorkloadState::Migrating => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        if signal == "TERM" {
            assert_eq!(c.stop("coord"), Some(0), "a clean stop exits 0");
        } else {
            c.kill("coord");
        }
        c.start_coordinator();
        c.wait_connected(2);
        // The operator's migrate followed the move through the restart to its end.
        let out = migrate.join().unwrap().unwrap();
        let said = said(&out);
        // Every record is back as it was.
        for old in &before {
            let now = c.workload(&old.spec.name).unwrap();
            assert_eq!(now.spec, old.spec);
            assert_eq!(now.primary, old.primary, "{}", old.spec.name);
            assert_eq!(now.state.name(), old.state.name(), "{}", old.spec.name);
        }
        // The interrupted switchover ended, one way or the other, with one copy.
        let mover = settled_running(&c, "mover");
        let m = mover
            .last_migration
            .clone()
            .expect("the move's outcome is recorded");
        assert!(
            m.outcome == "succeeded" || m.outcome == "rolled back",
            "{m:?}"
        );
        let code = if m.outcome == "succeeded" { 0 } else { 75 };
        assert_eq!(out.status.code(), Some(code), "{m:?}: {said}");
        assert!(said.contains(&told(&m)), "the outcome is told: {said}");
        // A copy frozen while no coordinator renewed its lease thaws at the next renewal.
        assert_eq!(
            one_copy_soon(&c, &HOSTS, "mover"),
            mover.primary,
            "the copy runs where the record says"
        );
        epochs_resume(&c, "mover");
        epochs_resume(&c, "steady");
        advancing(&c, "host-a", "steady");
        assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
    }

    // As the operator sees it: short states in the list, reasons in show.
    let list = list_rows(&c);
    assert!(
        row(&list, "lonely").contains("running, unprotected"),
        "{list}"
    );
    assert!(
        row(&list, "lagging").contains("running, shadow unreachable"),
        "{list}"
    );
    assert!(row(&list, "quitter").contains("exited"), "{list}");
    assert!(row(&list, "doomed").contains("failed"), "{list}");
    assert!(
        list.lines().all(|l| l.len() < 160),
        "no reason text in the list:\n{list}"
    );
    let show = c.cli(&["workload", "show", "quitter"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("command:        /bin/sh -c 'echo bye; sleep 0.5; exit 3'"),
        "{text}"
    );
    assert!(text.contains("exited with status 3"), "{text}");
}

/// One switchover of `hop`, with the coordinator started with `faults`; returns the
/// record once it has settled after a restart without them.
fn interrupted_switchover(c: &Cluster, faults: &str, aborts: bool) -> WorkloadRecord {
    c.note("coord", &format!("switchover with {faults}"));
    c.stop("coord");
    c.start_coordinator_env(&[("UNDERSTUDY_FAULTS", faults)]);
    c.wait_connected(2);
    let w = c.workload("hop").unwrap();
    c.wait_for_epochs("hop", w.epochs + 1);
    let migrate = {
        let mut cmd = c.cli_command();
        std::thread::spawn(move || cmd.args(["migrate", "hop"]).output())
    };
    if aborts {
        c.wait_exit("coord", Duration::from_secs(60));
        c.start_coordinator();
        c.wait_connected(2);
    }
    // The operator's migrate waits out the restart and tells how the move ended.
    let out = migrate.join().unwrap().unwrap();
    let after = eventually("the switchover ended", Duration::from_secs(60), || {
        let now = c.workload("hop")?;
        match (&now.state, &now.last_migration) {
            (WorkloadState::Running, Some(m)) if m.generation > w.generation => Ok(now),
            other => Err(format!("{other:?}")),
        }
    });
    let m = after.last_migration.as_ref().unwrap();
    let said = said(&out);
    let code = if m.outcome == "succeeded" { 0 } else { 75 };
    assert_eq!(out.status.code(), Some(code), "{faults}: {said}");
    assert!(said.contains(&told(m)), "{faults}: {said}");
    let host = one_copy_soon(c, &["host-a", "host-b"], "hop");
    assert_eq!(
        host, after.primary,
        "{faults}: the copy runs where the record says"
    );
    advancing(c, &host, "hop");
    epochs_resume(c, "hop");
    // The recovery point is on the shadow, never the host that now runs it.
    let now = c.workload("hop").unwrap();
    let e = now.last_epoch.clone().unwrap();
    assert_eq!(Some(&e.shadow), now.shadow.as_ref(), "{faults}");
    assert_ne!(e.shadow, now.primary, "{faults}");
    after
}

#[test]
fn a_switchover_interrupted_at_each_phase_ends_with_exactly_one_copy() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&["host-a", "host-b"]);
    create_counter(&c, "hop", "host-a", "host-b", "500ms");
    for (faults, aborts, outcome) in [
        // Killed after ordering the last epoch while running: nothing stopped, it resumes.
        ("crash-after:checkpoint", true, "rolled back"),
        // Killed after ordering the final epoch: the old primary resumes from its dump.
        ("crash-after:final-checkpoint", true, "rolled back"),
        // Killed after ordering the restore: the target is asked, and runs it.
        ("crash-after:restore", true, "succeeded"),
        // Killed after ordering the release: the move had succeeded.
        ("crash-after:release", true, "succeeded"),
        // The restore's answer lost on the way: the target is asked, and runs it.
        ("lose-reply:restore", false, "succeeded"),
    ] {
        let from = c.workload("hop").unwrap().primary;
        let after = interrupted_switchover(&c, faults, aborts);
        let m = after.last_migration.clone().unwrap();
        assert_eq!(m.outcome, outcome, "{faults}: {m:?}");
        let expected = if outcome == "succeeded" {
            m.to.clone()
        } else {
            from.clone()
        };
        assert_eq!(after.primary, expected, "{faults}");
    }
}

#[test]
fn a_create_whose_start_answer_is_lost_or_whose_coordinator_dies_is_settled_from_the_host() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    for (faults, aborts, name) in [
        // host-a's answer to the start order is lost on the way.
        ("lose-reply:start", false, "answerless"),
        // The coordinator dies 300 ms after sending the start order (and is started again).
        ("crash-after:start", true, "orphaned"),
    ] {
        c.stop("coord");
        c.start_coordinator_env(&[("UNDERSTUDY_FAULTS", faults)]);
        c.wait_connected(hosts.len());
        let create = spawn_create_counter(&c, name, "host-a", "host-b");
        if aborts {
            c.wait_exit("coord", Duration::from_secs(60));
            c.start_coordinator();
        }
        // Not "failed" (what the record said before): the CLI waits until host-a's report
        // settles it, running.
        settled_create(create, faults);
        let w = c.workload(name).unwrap();
        assert_eq!(w.state, WorkloadState::Running, "{faults}: {w:?}");
        assert_eq!(w.primary, "host-a", "{faults}");
        assert_eq!(the_one_copy(&c, &hosts, name), "host-a", "{faults}");
        advancing(&c, "host-a", name);
        epochs_resume(&c, name);
    }
}

#[test]
fn an_unreadable_store_is_refused_by_name_and_salvage_loses_no_running_workload() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&["host-a", "host-b"]);
    create_counter(&c, "kept", "host-a", "host-b", "500ms");
    create_counter(&c, "lost", "host-a", "host-b", "500ms");
    c.wait_for_epochs("lost", 1);
    c.stop("coord");
    let cfg = c.host_dir("coord").join("coordinator.toml");
    let store = c.host_dir("coord").join("data/coordinator.redb");
    {
        // What an older build wrote: a record this build cannot decode.
        let db = redb::Database::create(&store).unwrap();
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("workloads");
        let tx = db.begin_write().unwrap();
        tx.open_table(table)
            .unwrap()
            .insert("lost", [2u8, 0xde, 0xad].as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    c.start_coordinator();
    assert_eq!(c.wait_exit("coord", Duration::from_secs(20)), Some(70));
    let log = c.log("coord");
    assert!(
        log.contains("workload record \"lost\"") && log.contains("store salvage"),
        "{log}"
    );
    let cfg = cfg.to_str().unwrap();
    let check = c.cli(&["store", "check", "--config", cfg]);
    assert_eq!(check.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&check.stderr).contains("workload record \"lost\""));
    let salvage = c.cli(&["store", "salvage", "--config", cfg]);
    let said = String::from_utf8_lossy(&salvage.stdout).into_owned();
    assert!(salvage.status.success(), "{said}");
    assert!(
        said.contains("1 dropped") && said.contains("\"lost\""),
        "{said}"
    );
    c.start_coordinator();
    c.wait_connected(2);
    // The dropped record is rebuilt from host-a's report; nothing was lost track of.
    let lost = eventually("lost is adopted", Duration::from_secs(30), || {
        c.workload("lost")
    });
    assert_eq!(
        (lost.primary.as_str(), lost.shadow.as_deref()),
        ("host-a", Some("host-b"))
    );
    assert!(
        lost.last_correction
            .as_ref()
            .is_some_and(|(why, _)| why.contains("rebuilt from host-a's report")),
        "{lost:?}"
    );
    epochs_resume(&c, "lost");
    assert_eq!(c.workload("kept").unwrap().state, WorkloadState::Running);
    assert_eq!(the_one_copy(&c, &HOSTS[..2], "lost"), "host-a");
    // It can be moved like any other.
    let out = c.cli(&["migrate", "lost"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(the_one_copy(&c, &HOSTS[..2], "lost"), "host-b");
}
