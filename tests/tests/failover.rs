//! Failover with fencing: a lost host's workloads come back on their shadows from the last
//! committed epoch, by themselves, and never run twice — the lost primary's copy is frozen
//! by its own supervisor once its lease runs out, before the shadow restores, and destroyed
//! when its host comes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::{Cluster, FAILOVER_AFTER, FENCE_AFTER};
use understudy_tests::command::said;
use understudy_tests::copies::{
    advancing, create_counter, failed_over, last_count, marker, one_copy_soon, silent,
    the_one_copy, COUNTER,
};
use understudy_tests::greeter::{self, GREETER};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

/// Waits until host-a's copy of `name` is frozen by its own supervisor (its lease ran
/// out) and the workload has failed over to host-b and counts there; returns the count
/// host-a's copy stopped at.
fn frozen_then_failed_over(c: &Cluster, name: &str) -> u64 {
    eventually(
        "frozen by its own supervisor",
        Duration::from_secs(20),
        || {
            if c.output_log("host-a", name).contains("lease expired") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    silent(c, "host-a", name, Duration::from_millis(500));
    let frozen_at = last_count(c, "host-a", name);
    failed_over(c, name, "host-b", FAILOVER_AFTER + Duration::from_secs(30));
    advancing(c, "host-b", name);
    frozen_at
}

#[test]
fn a_lost_host_s_workload_comes_back_on_its_shadow_from_the_last_epoch() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b", "host-c"];
    let c = Cluster::started(&hosts);
    create_counter(&c, "survivor", "host-a", "host-b", "500ms");
    // The count host-a had logged when an epoch was committed: the epoch after it was
    // dumped later, so the failover resumes from at least this.
    let w = c.wait_for_epochs("survivor", 2);
    let floor = last_count(&c, "host-a", "survivor");
    let recorded = c.wait_for_epochs("survivor", w.epochs + 1);
    let point = recorded.last_epoch.clone().unwrap();
    let lost_at = Instant::now();
    c.kill_host("host-a");
    let w = failed_over(
        &c,
        "survivor",
        "host-b",
        FAILOVER_AFTER + Duration::from_secs(30),
    );
    let took = lost_at.elapsed();
    let m = w.last_migration.clone().unwrap();
    assert!(
        m.recovery_epoch.unwrap() >= point.epoch,
        "{m:?} vs {point:?}"
    );
    assert_eq!(w.generation, recorded.generation + 1);
    let counts = eventually("it counts on host-b", Duration::from_secs(10), || {
        let n = numbers(&c.output_log("host-b", "survivor"));
        if n.len() > 10 {
            Ok(n)
        } else {
            Err(format!("{} lines", n.len()))
        }
    });
    assert!(
        counts[0] >= floor,
        "host-b went on from {}, below the {floor} host-a had reached before the recovery point",
        counts[0]
    );
    assert_eq!(the_one_copy(&c, &hosts, "survivor"), "host-b");
    let shown = c.cli(&["workload", "show", "survivor"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("failed over")
            && text.contains(&format!(
                "recovery point epoch {}",
                m.recovery_epoch.unwrap()
            )),
        "{text}"
    );
    // A new shadow receives its epochs at once.
    assert_eq!(w.shadow.as_deref(), Some("host-c"));
    eventually(
        "epochs reach the new shadow",
        Duration::from_secs(30),
        || {
            let w = c.workload("survivor")?;
            match &w.last_epoch {
                Some(e) if e.shadow == "host-c" && e.generation == w.generation => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    // The old host comes back: it learns it is no longer the primary and runs nothing.
    c.set_link("host-a", true);
    c.start_agent("host-a");
    c.wait_connected(3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(the_one_copy(&c, &hosts, "survivor"), "host-b");
    assert!(
        !c.host_dir("host-a")
            .join("data/workloads/survivor/shadow")
            .exists(),
        "no stale epochs on the old host"
    );
    advancing(&c, "host-b", "survivor");
    eprintln!("survivor: failed over in {took:?} (failover_after {FAILOVER_AFTER:?})");
}

/// Asks the greeter at `addr` once; true if it answered within 50 ms.
fn answers(addr: SocketAddr) -> bool {
    greeter::answers(addr, Duration::from_millis(50))
}

#[test]
fn a_primary_cut_off_from_the_coordinator_freezes_before_its_shadow_takes_over() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    let m = marker("kv");
    c.create_workload(&[
        "kv",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        GREETER,
        "0",
        "7000",
        &m,
    ]);
    let (a, b) = (
        SocketAddr::from((c.host("host-a").addr, 7000)),
        SocketAddr::from((c.host("host-b").addr, 7000)),
    );
    eventually("kv answers on host-a", Duration::from_secs(10), || {
        if answers(a) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    c.wait_for_epochs("kv", 2);
    // A client that asks both addresses, as fast as it can, and notes who answered when.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, bool, bool)>>> = Arc::default();
    let prober = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let (from_a, from_b) = (answers(a), answers(b));
                seen.lock().unwrap().push((t, from_a, from_b));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // host-a loses the coordinator, but not its clients or its shadow.
    let cut_at = Instant::now();
    c.isolate(&["coord", "host-a"], true);
    failed_over(&c, "kv", "host-b", FAILOVER_AFTER + Duration::from_secs(30));
    eventually("kv answers on host-b", Duration::from_secs(10), || {
        if answers(b) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    c.isolate(&["coord", "host-a"], false);
    // Healed: host-a learns of the newer generation and destroys its frozen copy.
    eventually(
        "host-a's copy is destroyed",
        Duration::from_secs(30),
        || {
            if c.processes("host-a", &m).is_empty() {
                Ok(())
            } else {
                Err("still there".into())
            }
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    let seen = seen.lock().unwrap();
    let both: Vec<_> = seen.iter().filter(|(_, x, y)| *x && *y).collect();
    assert!(
        both.is_empty(),
        "both answered in the same probe: {:?}",
        both.first()
    );
    let last_a = seen.iter().filter(|s| s.1).map(|s| s.0).max().unwrap();
    let first_b = seen.iter().filter(|s| s.2).map(|s| s.0).min().unwrap();
    assert!(
        last_a < first_b,
        "host-a answered after host-b had begun to"
    );
    let frozen_after = last_a.duration_since(cut_at);
    assert!(
        frozen_after < FENCE_AFTER + Duration::from_secs(2),
        "host-a answered {frozen_after:?} after it was cut off (its lease is {FENCE_AFTER:?})"
    );
    assert_eq!(the_one_copy(&c, &hosts, "kv"), "host-b");
    eprintln!(
        "kv: host-a silent {frozen_after:?} after the cut, host-b answered {:?} after it",
        first_b.duration_since(cut_at)
    );
}

#[test]
fn an_agent_killed_for_good_freezes_its_workload_before_the_shadow_restores_it() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    create_counter(&c, "orphan", "host-a", "host-b", "500ms");
    c.wait_for_epochs("orphan", 2);
    c.kill("host-a");
    // Its supervisor keeps it running, until the lease is out.
    advancing(&c, "host-a", "orphan");
    let frozen_at = frozen_then_failed_over(&c, "orphan");
    assert_eq!(
        last_count(&c, "host-a", "orphan"),
        frozen_at,
        "host-a's copy never counted again"
    );
    assert_eq!(the_one_copy(&c, &hosts, "orphan"), "host-b");
}

#[test]
fn a_hung_agent_s_workload_freezes_fails_over_and_is_destroyed_when_the_agent_wakes() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    create_counter(&c, "hung", "host-a", "host-b", "500ms");
    c.wait_for_epochs("hung", 2);
    // The agent hangs (SIGSTOP): it neither renews nor answers, but its process is there
    // and its connection is not closed. The supervisor alone fences the workload.
    let agent = c.pid("host-a").expect("host-a's agent runs");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &agent.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {agent}");
    };
    signal("-STOP");
    let frozen_at = frozen_then_failed_over(&c, "hung");
    // The agent wakes: it learns of the newer generation and destroys its stale copy; it
    // never thaws it.
    signal("-CONT");
    eventually(
        "host-a's stale copy destroyed",
        Duration::from_secs(30),
        || {
            let left = c.processes("host-a", &marker("hung"));
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    assert_eq!(
        last_count(&c, "host-a", "hung"),
        frozen_at,
        "host-a's copy never counted again"
    );
    assert_eq!(the_one_copy(&c, &hosts, "hung"), "host-b");
    advancing(&c, "host-b", "hung");
}

#[test]
fn with_its_shadow_lost_too_a_workload_is_lost_until_the_shadow_returns() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    create_counter(&c, "doubly", "host-a", "host-b", "500ms");
    let w = c.wait_for_epochs("doubly", 2);
    let point = w.last_epoch.clone().unwrap();
    c.kill_host("host-b");
    c.kill_host("host-a");
    let why = eventually(
        "shown lost",
        FAILOVER_AFTER + Duration::from_secs(20),
        || match c.workload("doubly")?.state {
            WorkloadState::Lost(why) => Ok(why),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        why.contains("host-a unreachable")
            && why.contains("host-b")
            && why.contains("unreachable too"),
        "{why}"
    );
    let list = String::from_utf8_lossy(&c.cli(&["workload", "list"]).stdout).into_owned();
    assert!(list.contains(" lost "), "{list}");
    // The shadow returns with the recovery point: the workload comes back from it, never
    // from anything older.
    c.set_link("host-b", true);
    c.start_agent("host-b");
    let w = failed_over(&c, "doubly", "host-b", Duration::from_secs(60));
    assert!(w.last_migration.unwrap().recovery_epoch.unwrap() >= point.epoch);
    advancing(&c, "host-b", "doubly");
}

/// A small tmpfs mounted at a path, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_generation_that_cannot_be_recorded_is_refused_and_the_move_rolls_back() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::new(&hosts);
    let data = c.host_dir("host-b").join("data");
    std::fs::create_dir_all(&data).unwrap();
    assert!(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap()
        .success());
    let _disk = SmallDisk(data.clone());
    c.start_coordinator();
    for h in hosts {
        c.start_agent(h);
    }
    c.wait_connected(2);
    create_counter(&c, "fenced", "host-a", "host-b", "500ms");
    c.wait_for_epochs("fenced", 1);
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", data.join("filler").display()))
        .output()
        .unwrap();
    let out = c.cli(&["migrate", "fenced", "--to", "host-b"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(75), "rolled back: {err}");
    assert!(
        err.contains("could not be recorded durably") && err.contains("No space left"),
        "{err}"
    );
    let w = c.workload("fenced").unwrap();
    assert_eq!((w.primary.as_str(), w.state.name()), ("host-a", "running"));
    advancing(&c, "host-a", "fenced");
    std::fs::remove_file(data.join("filler")).unwrap();
}

/// A counter `name` on host-a shadowed on host-b whose liveness check takes 3 s: a copy
/// restored on host-b runs that long before host-b answers the restore.
fn slow_check_counter(c: &Cluster, name: &str) {
    let spec = c.host_dir("coord").join(format!("{name}.toml"));
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\ncommand = [\"/usr/bin/python3\", \"-c\", {COUNTER:?}, \"{}\"]\nhost = \"host-a\"\nshadow = \"host-b\"\ninterval = \"500ms\"\n[probe]\ncommand = [\"/bin/sleep\", \"3\"]\n",
            marker(name)
        ),
    )
    .unwrap();
    let created = c.cli(&["workload", "create", "--spec", spec.to_str().unwrap()]);
    assert!(created.status.success(), "{}", said(&created));
}

/// Waits until `name`'s copy restored on host-b prints, then cuts host-b off: lost while
/// its liveness check runs, so the restore's answer never comes.
fn cut_off_while_restored(c: &Cluster, name: &str) {
    eventually(
        "host-b's restored copy runs",
        Duration::from_secs(60),
        || {
            if numbers(&c.output_log("host-b", name)).is_empty() {
                Err("not yet".into())
            } else {
                Ok(())
            }
        },
    );
    c.set_link("host-b", false);
}

/// A switchover whose target is lost before it answers the restore: once the target has
/// been silent for `failover_after`, its copy froze when its lease ran out, and the old
/// primary takes the workload back instead of staying stopped for a host that may never
/// return; when the target comes back, its copy is destroyed.
#[test]
fn a_target_lost_before_it_answers_the_restore_gives_the_workload_back_to_its_old_primary() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&["host-a", "host-b"]);
    slow_check_counter(&c, "slowcheck");
    c.wait_for_epochs("slowcheck", 1);
    let counted = last_count(&c, "host-a", "slowcheck");

    let migrate = {
        let mut cmd = c.cli_command();
        std::thread::spawn(move || cmd.args(["migrate", "slowcheck"]).output())
    };
    cut_off_while_restored(&c, "slowcheck");
    // Before, the switchover asked host-b for ever, the workload stopped on host-a.
    eventually(
        "the switchover ends without host-b",
        FAILOVER_AFTER + Duration::from_secs(40),
        || match migrate.is_finished() {
            true => Ok(()),
            false => Err(format!("{:?}", c.workload("slowcheck").map(|w| w.state))),
        },
    );
    let out = migrate.join().unwrap().unwrap();
    let text = said(&out);
    assert_eq!(out.status.code(), Some(75), "rolled back: {text}");
    assert!(text.contains("host-b was lost"), "{text}");
    let w = c.workload("slowcheck").unwrap();
    assert_eq!((w.primary.as_str(), w.state.name()), ("host-a", "running"));
    // host-b's copy froze by itself before host-a went on.
    assert!(
        c.output_log("host-b", "slowcheck")
            .contains("lease expired"),
        "host-b's copy was not frozen"
    );
    assert!(advancing(&c, "host-a", "slowcheck") > counted);

    // host-b back: its frozen copy is destroyed, and the workload runs once, on host-a.
    c.set_link("host-b", true);
    c.wait_connected(2);
    assert_eq!(
        one_copy_soon(&c, &["host-a", "host-b"], "slowcheck"),
        "host-a"
    );
    advancing(&c, "host-a", "slowcheck");
}

/// A failover whose target is lost before it answers the restore: the failover fails
/// once the target has been silent for `failover_after` (its copy froze when its lease
/// ran out), and the workload comes back on its old primary when that returns — rather
/// than waiting for the target.
#[test]
fn a_failover_whose_target_is_lost_mid_restore_lets_the_old_primary_take_it_back() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&["host-a", "host-b"]);
    slow_check_counter(&c, "twice");
    c.wait_for_epochs("twice", 1);
    // host-a cut off: its copy freezes, and host-b restores the workload.
    c.set_link("host-a", false);
    cut_off_while_restored(&c, "twice");
    let frozen_at = last_count(&c, "host-a", "twice");
    // Both away: the failover fails, and the workload is lost until one returns.
    eventually(
        "the failover ends without host-b",
        FAILOVER_AFTER * 2 + Duration::from_secs(40),
        || {
            let w = c.workload("twice")?;
            match (&w.state, &w.last_migration) {
                (WorkloadState::Lost(why), Some(m)) if m.outcome == "failed" => Ok(why.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert!(
        c.output_log("host-b", "twice").contains("lease expired"),
        "host-b's copy was not frozen"
    );
    // host-a back: its copy goes on from where it froze; host-b back: its copy is stopped.
    c.set_link("host-a", true);
    eventually("running on host-a again", Duration::from_secs(60), || {
        let w = c.workload("twice")?;
        match (&w.state, w.primary.as_str()) {
            (WorkloadState::Running, "host-a") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(advancing(&c, "host-a", "twice") > frozen_at);
    c.set_link("host-b", true);
    c.wait_connected(2);
    assert_eq!(one_copy_soon(&c, &["host-a", "host-b"], "twice"), "host-a");
    advancing(&c, "host-a", "twice");
}
