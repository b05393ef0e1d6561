//! A coordinator group while things change: the leader killed in the middle of a
//! switchover at each phase, a host lost while the leadership changes, every member
//! restarted in turn, and members added and removed. Each time: exactly one copy of the
//! workload at the end, where its record says, and nothing moved that should not have.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::{WorkloadRecord, WorkloadState};
use understudy_tests::cluster::Cluster;
use understudy_tests::command::said;
use understudy_tests::copies::{
    advancing, create_counter, marker, one_copy_soon, the_one_copy, told,
};
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

const HOSTS: [&str; 2] = ["host-a", "host-b"];

/// Waits until the group has `n` members, none behind the leader.
fn caught_up(c: &Cluster, n: usize) {
    eventually("every member caught up", Duration::from_secs(30), || {
        let s = c.cluster_status()?;
        let behind: Vec<_> = s
            .members
            .iter()
            .filter(|m| s.leader != Some(m.id) && m.lag != Some(0))
            .map(|m| (m.id, m.lag))
            .collect();
        if s.leader.is_some() && s.members.len() == n && behind.is_empty() {
            Ok(())
        } else {
            Err(format!("{} members, behind {behind:?}", s.members.len()))
        }
    });
}

fn the_other(leader: &str) -> &'static str {
    if leader == "coord" {
        "coord2"
    } else {
        "coord"
    }
}

fn epochs_go_on(c: &Cluster, name: &str) {
    let before = c.workload(name).unwrap().epochs;
    eventually(
        &format!("{name}'s epochs go on"),
        Duration::from_secs(60),
        || {
            let w = c.workload(name)?;
            if w.epochs >= before + 2 {
                Ok(())
            } else {
                Err(format!("{} epochs (was {before})", w.epochs))
            }
        },
    );
}

/// One switchover of `hop` led by a coordinator armed with `faults`, which aborts part
/// way; the other coordinator takes over. Returns the settled record.
fn switchover_losing_its_leader(c: &Cluster, faults: &str) -> WorkloadRecord {
    caught_up(c, 3);
    // Arm the follower, then make it the leader.
    let leader = c.leader().unwrap();
    let follower = the_other(leader);
    assert_eq!(c.stop(follower), Some(0));
    c.start_member_env(follower, &[("UNDERSTUDY_FAULTS", faults)]);
    caught_up(c, 3);
    c.kill(leader);
    assert_eq!(c.wait_leader(&[leader], Duration::from_secs(15)), follower);
    c.start_member(leader);
    c.wait_connected(HOSTS.len());
    caught_up(c, 3);
    let w = c.workload("hop").unwrap();
    c.wait_for_epochs("hop", w.epochs + 1);
    advancing(c, &w.primary, "hop");
    // The armed leader aborts during the move; the other takes over from its record.
    let migrate = {
        let mut cmd = c.cli_command();
        std::thread::spawn(move || cmd.args(["migrate", "hop"]).output())
    };
    c.wait_exit(follower, Duration::from_secs(60));
    c.start_member(follower);
    // The operator's migrate follows the move to the new leader and tells how it ended.
    let out = migrate.join().unwrap().unwrap();
    let after = eventually("the switchover ended", Duration::from_secs(90), || {
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
    let host = one_copy_soon(c, &HOSTS, "hop");
    assert_eq!(
        host, after.primary,
        "{faults}: the copy runs where the record says"
    );
    advancing(c, &host, "hop");
    epochs_go_on(c, "hop");
    after
}

#[test]
fn a_leader_killed_mid_switchover_at_each_phase_leaves_exactly_one_copy() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&HOSTS);
    create_counter(&c, "hop", "host-a", "host-b", "500ms");
    c.wait_for_epochs("hop", 1);
    for (faults, outcome) in [
        ("crash-after:checkpoint", "rolled back"),
        ("crash-after:final-checkpoint", "rolled back"),
        ("crash-after:restore", "succeeded"),
        ("crash-after:release", "succeeded"),
    ] {
        let from = c.workload("hop").unwrap().primary;
        let after = switchover_losing_its_leader(&c, faults);
        let m = after.last_migration.clone().unwrap();
        assert_eq!(m.outcome, outcome, "{faults}: {m:?}");
        let expected = if outcome == "succeeded" {
            m.to.clone()
        } else {
            from
        };
        assert_eq!(after.primary, expected, "{faults}");
    }
}

#[test]
fn a_host_lost_while_the_leader_changes_fails_over_once() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&["host-a", "host-b", "host-c"]);
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 2);
    caught_up(&c, 3);
    let leader = c.leader().unwrap();
    // host-a (the primary, with its agent and workload) and the leader go at once.
    c.kill_host("host-a");
    c.kill(leader);
    c.wait_leader(&[leader], Duration::from_secs(15));
    c.start_member(leader);
    let w = eventually("steady failed over", Duration::from_secs(60), || {
        let w = c.workload("steady")?;
        if w.primary == "host-b" && w.state == WorkloadState::Running {
            Ok(w)
        } else {
            Err(format!("{} {:?}", w.primary, w.state))
        }
    });
    assert!(w.generation > 1);
    // The restored copy runs under the restore order's lease; renewals follow each
    // heartbeat. Never two copies meanwhile, and one running within seconds.
    assert!(c.running_on(&["host-b", "host-c"], &marker("steady")).len() <= 1);
    assert_eq!(one_copy_soon(&c, &["host-b", "host-c"], "steady"), "host-b");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(the_one_copy(&c, &["host-b", "host-c"], "steady"), "host-b");
    advancing(&c, "host-b", "steady");
}

#[test]
fn every_member_restarted_in_turn_loses_nothing_and_moves_nothing() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&HOSTS);
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 2);
    let before = c.workload("steady").unwrap();
    let leader = c.leader().unwrap();
    for m in ["witness", the_other(leader), leader] {
        caught_up(&c, 3);
        assert_eq!(c.stop(m), Some(0), "{m} stops cleanly on SIGTERM");
        c.start_member(m);
        caught_up(&c, 3);
        c.wait_connected(HOSTS.len());
        let now = c.workload("steady").unwrap();
        assert_eq!(
            now.generation, before.generation,
            "moved after {m}: {now:?}"
        );
        assert_eq!(now.primary, before.primary);
    }
    epochs_go_on(&c, "steady");
    assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
    advancing(&c, "host-a", "steady");
}

#[test]
fn a_coordinator_joins_as_learner_then_voter_another_is_removed_and_the_group_serves() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group_with_spare(&HOSTS);
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 1);
    c.start_member("coord3");
    let out = c.cli(&["cluster", "join", "--peer", &c.raft_addr("coord3")]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("learner") && said.contains("voter"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    caught_up(&c, 4);
    let s = c.cluster_status().unwrap();
    let m4 = s
        .members
        .iter()
        .find(|m| m.id == 4)
        .expect("member 4 listed");
    assert_ne!(m4.role, "learner", "{s:?}");

    // Remove the coordinator that does not lead, and stop it.
    let leader = c.leader().unwrap();
    let other = the_other(leader);
    let id = if other == "coord" { "1" } else { "2" };
    let out = c.cli(&["cluster", "remove", "--id", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.stop(other);
    caught_up(&c, 3);
    let s = c.cluster_status().unwrap();
    assert!(s.members.iter().all(|m| m.id.to_string() != id), "{s:?}");

    // The group still serves without it, and elects coord3 when the leader goes.
    c.kill(leader);
    assert_eq!(c.wait_leader(&[leader], Duration::from_secs(15)), "coord3");
    c.wait_connected(HOSTS.len());
    epochs_go_on(&c, "steady");
    assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
    advancing(&c, "host-a", "steady");
}

#[test]
fn a_drain_goes_on_when_the_leader_is_killed_and_leaves_the_host_empty() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b", "host-c"];
    let c = Cluster::new_group(&hosts);
    // Any connected host is a target (the namespace hosts share this machine's load, which
    // the health model sees), as in decisions.rs.
    for m in ["coord", "coord2"] {
        let path = c.host_dir(m).join("coordinator.toml");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "mode = \"off\"",
            "mode = \"off\"\ntriggers = []\ntarget_health_min = 0",
        );
        std::fs::write(&path, text).unwrap();
    }
    for m in ["coord", "coord2", "witness"] {
        c.start_member(m);
    }
    c.init_group();
    for h in hosts {
        c.start_agent(h);
    }
    c.wait_connected(hosts.len());
    create_counter(&c, "d1", "host-a", "host-b", "500ms");
    create_counter(&c, "d2", "host-a", "host-c", "500ms");
    create_counter(&c, "d3", "host-a", "host-b", "500ms");
    for n in ["d1", "d2", "d3"] {
        c.wait_for_epochs(n, 1);
    }
    caught_up(&c, 3);

    let out = c.cli(&["host", "drain", "host-a", "--parallel", "1", "--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The leader killed once the first workload has left, with the others still to go.
    let moved = eventually("a first workload moved", Duration::from_secs(60), || {
        let off: Vec<_> = ["d1", "d2", "d3"]
            .into_iter()
            .filter(|n| c.workload(n).is_ok_and(|w| w.primary != "host-a"))
            .collect();
        if off.is_empty() {
            Err("none yet".into())
        } else {
            Ok(off.len())
        }
    });
    assert!(
        moved < 3,
        "the drain ended before the leader could be killed"
    );
    // An operator watches the drain; the watch goes on through the leader's loss.
    let watch = {
        let mut cmd = c.cli_command();
        std::thread::spawn(move || cmd.args(["host", "drain", "host-a", "--monitor"]).output())
    };
    let old = c.leader().expect("a leader");
    c.kill(old);
    c.wait_leader(&[old], Duration::from_secs(15));

    // The new leader carries the drain on to the end, and the watch sees it there.
    let out = watch.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("host-a drained"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["d1", "d2", "d3"] {
        let w = c.workload(n).unwrap();
        assert_ne!(w.primary, "host-a", "{n}");
        assert_ne!(w.shadow.as_deref(), Some("host-a"), "{n}'s shadow");
        assert_eq!(one_copy_soon(&c, &hosts, n), w.primary);
        advancing(&c, &w.primary, n);
    }
    c.start_member(old);
    caught_up(&c, 3);
}
