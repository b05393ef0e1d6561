//! The coordinator as a group of two coordinators and a witness (real binaries on namespace
//! hosts, formed with `understudy cluster init`): the leader killed again and again, the
//! witness down, both coordinators down at once. Each time a leader is back, the agents
//! reconnect to it without their workloads moving, the CLI reaches it through whichever
//! member answers, and the workload's epochs keep committing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::Cluster;
use understudy_tests::copies::{
    advancing, create_counter, marker, one_copy_soon, settled_create, spawn_create_counter,
    the_one_copy,
};
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

const HOSTS: [&str; 2] = ["host-a", "host-b"];

/// Waits for `name` to commit two more epochs than now.
fn epochs_go_on(c: &Cluster, name: &str) -> u64 {
    let before = c.workload(name).unwrap().epochs;
    eventually(
        &format!("{name}'s epochs go on"),
        Duration::from_secs(30),
        || {
            let w = c.workload(name)?;
            if w.epochs >= before + 2 {
                Ok(w.epochs)
            } else {
                Err(format!(
                    "{} epochs (was {before}); {:?}",
                    w.epochs, w.unprotected
                ))
            }
        },
    )
}

/// Waits until every member reports the same last log index as the leader (nothing to
/// catch up), so that whichever is killed next, the other can be elected.
fn caught_up(c: &Cluster) {
    eventually("every member caught up", Duration::from_secs(20), || {
        let s = c.cluster_status()?;
        let lagging: Vec<_> = s
            .members
            .iter()
            .filter(|m| m.lag != Some(0) && s.leader != Some(m.id))
            .map(|m| (m.id, m.lag))
            .collect();
        if s.members.len() == 3 && lagging.is_empty() {
            Ok(())
        } else {
            Err(format!("lagging {lagging:?}"))
        }
    });
}

#[test]
fn killing_the_leader_elects_the_other_coordinator_and_protection_goes_on() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&HOSTS);
    let s = c.cluster_status().unwrap();
    let kinds: Vec<_> = s.members.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["coordinator", "coordinator", "witness"], "{s:?}");
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 2);
    let generation = c.workload("steady").unwrap().generation;

    let mut elections = Vec::new();
    for round in 0..4 {
        caught_up(&c);
        let old = c.leader().expect("a leader");
        c.kill(old);
        let killed = Instant::now();
        let new = c.wait_leader(&[old], Duration::from_secs(15));
        elections.push(killed.elapsed());
        eprintln!(
            "round {round}: {old} killed, {new} leads after {:?}",
            killed.elapsed()
        );
        // The agents find the new leader and nothing moves.
        c.wait_connected(HOSTS.len());
        let listed = c.cli(&["workload", "list"]);
        assert!(
            listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("steady"),
            "workload list through the survivor: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        epochs_go_on(&c, "steady");
        assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
        advancing(&c, "host-a", "steady");
        let w = c.workload("steady").unwrap();
        assert_eq!(w.generation, generation, "the workload moved: {w:?}");
        c.start_member(old);
    }
    elections.sort();
    let median = elections[elections.len() / 2];
    eprintln!("kill to a new leader answering the CLI: {elections:?}, median {median:?}");
    assert!(
        median < Duration::from_secs(2),
        "median time to a new leader {median:?} (of {elections:?}) is over 2 s"
    );
}

#[test]
fn the_pair_works_without_the_witness_and_both_down_then_up_keeps_every_record() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&HOSTS);
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 2);
    caught_up(&c);

    // Witness down: the two coordinators still form a majority and act.
    c.kill("witness");
    c.create_workload(&[
        "later",
        "--host",
        "host-b",
        "--shadow",
        "host-a",
        "--interval",
        "1s",
        "--",
        "/bin/sleep",
        "3600",
    ]);
    c.wait_for_epochs("later", 1);
    let leader = c.leader().expect("a leader without the witness");
    let other = if leader == "coord" { "coord2" } else { "coord" };
    c.start_member("witness");
    caught_up(&c);

    // Both coordinators down at once (SIGKILL), then up: everything is still there, and
    // nothing moved.
    let before = c.workload("steady").unwrap();
    c.kill(leader);
    c.kill(other);
    std::thread::sleep(Duration::from_secs(2));
    c.start_member("coord");
    c.start_member("coord2");
    c.wait_leader(&[], Duration::from_secs(30));
    c.wait_connected(HOSTS.len());
    let after = c.workload("steady").unwrap();
    assert_eq!(after.generation, before.generation, "moved: {after:?}");
    assert_eq!(after.primary, before.primary);
    assert!(
        c.workload("later").is_ok(),
        "the workload created without the witness is gone"
    );
    epochs_go_on(&c, "steady");
    assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
    advancing(&c, "host-a", "steady");
}

/// How the leader is taken away while it creates a workload.
#[derive(Clone, Copy, Debug)]
enum LeaderLoss {
    /// Cut off from the other members (it steps down; its last writes do not commit).
    CutOff,
    /// SIGKILLed (the CLI's request goes unanswered).
    Killed,
    /// Stopped with SIGTERM.
    Stopped,
}

/// Creates a counter on host-a while host-a holds back its reply to the start order (see
/// agent/src/faults.rs), and takes the leader away meanwhile: the CLI says the old leader
/// could not settle it, waits for the new one, and reports the workload running (not
/// "failed", which is what the old leader's record said); it runs once, on host-a.
fn create_across_a_leader_loss(loss: LeaderLoss) {
    let c = Cluster::new_group(&HOSTS);
    for m in ["coord", "coord2", "witness"] {
        c.start_member(m);
    }
    c.init_group();
    c.start_agent_env("host-a", &[("UNDERSTUDY_FAULTS", "delay-reply:start:6000")]);
    c.start_agent("host-b");
    c.wait_connected(HOSTS.len());
    caught_up(&c);
    let old = c.leader().expect("a leader");
    let create = spawn_create_counter(&c, "steady", "host-a", "host-b");
    eventually("host-a starts steady", Duration::from_secs(30), || {
        if c.log("host-a").contains("workload started workload=steady") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });
    match loss {
        LeaderLoss::CutOff => c.set_member_link(old, false),
        LeaderLoss::Killed => c.kill(old),
        LeaderLoss::Stopped => {
            c.stop(old);
        }
    }
    let stderr = settled_create(create, &format!("{loss:?}"));
    eprintln!("workload create said:\n{stderr}");
    let new = c.wait_leader(&[old], Duration::from_secs(15));
    assert_ne!(new, old);
    let w = c.workload("steady").unwrap();
    assert_eq!(w.primary, "host-a");
    assert_eq!(w.state, WorkloadState::Running, "{w:?}");
    assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
    advancing(&c, "host-a", "steady");
    epochs_go_on(&c, "steady");
    if let LeaderLoss::CutOff = loss {
        c.set_member_link(old, true);
    }
}

#[test]
fn a_create_whose_leader_is_cut_off_mid_way_is_settled_by_the_new_leader_and_runs_once() {
    require_e2e!();
    require_criu!();
    create_across_a_leader_loss(LeaderLoss::CutOff);
}

#[test]
fn a_create_whose_leader_is_killed_mid_way_is_settled_by_the_new_leader_and_runs_once() {
    require_e2e!();
    require_criu!();
    create_across_a_leader_loss(LeaderLoss::Killed);
}

#[test]
fn a_create_whose_leader_is_stopped_mid_way_is_settled_by_the_new_leader_and_runs_once() {
    require_e2e!();
    require_criu!();
    create_across_a_leader_loss(LeaderLoss::Stopped);
}

#[test]
fn a_leader_cut_off_from_the_other_members_stops_acting_and_the_new_leader_wins() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&["host-a", "host-b", "host-c"]);
    let hosts = ["host-a", "host-b", "host-c"];
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 2);
    caught_up(&c);
    let old = c.leader().expect("a leader");
    let old_term = c.cluster_status().unwrap().term;

    // Cut the leader off from the other members only: agents and the CLI still reach it.
    c.set_member_link(old, false);
    let new = c.wait_leader(&[old], Duration::from_secs(15));
    assert_ne!(new, old);
    // The old leader stops acting: its API no longer serves the records.
    eventually(
        "the cut-off leader stops serving",
        Duration::from_secs(10),
        || {
            let addr = format!(
                "https://{}:{}",
                c.host(old).addr,
                understudy_tests::cluster::HTTP_PORT
            );
            let out = c
                .cli_command()
                .args(["workload", "list"])
                .env("UNDERSTUDY_COORDINATOR", addr)
                .output()
                .unwrap();
            if out.status.success() {
                Err("it still answers workload list".into())
            } else {
                Ok(())
            }
        },
    );
    // The agents are with the new leader, of a newer term.
    c.wait_connected(hosts.len());
    let new_term = c.cluster_status().unwrap().term;
    assert!(new_term > old_term, "term {new_term} after {old_term}");
    // The new leader's orders win: a migration through it completes (once the agent has
    // the new leader's lease and the counter counts).
    advancing(&c, "host-a", "steady");
    let out = c.cli(&["migrate", "steady", "--to", "host-c"]);
    assert!(
        out.status.success(),
        "migrate through the new leader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("steady runs on host-c", Duration::from_secs(60), || {
        let w = c.workload("steady")?;
        if w.primary == "host-c" {
            Ok(())
        } else {
            Err(w.primary)
        }
    });
    assert_eq!(the_one_copy(&c, &hosts, "steady"), "host-c");

    // Healed, the old leader rejoins as a follower; still one copy, counting.
    c.set_member_link(old, true);
    caught_up(&c);
    assert_eq!(c.leader(), Some(new));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(the_one_copy(&c, &hosts, "steady"), "host-c");
    advancing(&c, "host-c", "steady");
}

#[test]
fn a_stale_leader_is_refused_by_the_agents_that_have_seen_the_newer_term() {
    require_e2e!();
    require_criu!();
    // Both coordinators carry the `stale-leader` hook: a leader cut off from the others goes
    // on acting in its term, as one paused past its lease check would (see faults.rs).
    let c = Cluster::new_group(&HOSTS);
    for m in ["coord", "coord2"] {
        c.start_member_env(m, &[("UNDERSTUDY_FAULTS", "stale-leader")]);
    }
    c.start_member("witness");
    c.init_group();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(HOSTS.len());
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    c.wait_for_epochs("steady", 2);
    caught_up(&c);
    let old = c.leader().expect("a leader");
    let old_term = c.cluster_status().unwrap().term;

    // The leader cut off from everything; the other coordinator leads a newer term and the
    // agents register with it.
    c.set_member_link(old, false);
    c.set_link(old, false);
    let new = c.wait_leader(&[old], Duration::from_secs(15));
    let new_term = c.cluster_status().unwrap().term;
    assert!(new_term > old_term, "term {new_term} after {old_term}");
    c.wait_connected(HOSTS.len());
    advancing(&c, "host-a", "steady");

    // The old leader reachable by the agents again (still cut off from the members, still
    // acting in its term), and the new leader gone: the agents reach only the stale leader.
    c.set_link(old, true);
    c.kill(new);
    let refusal = format!(
        "this coordinator leads term {old_term}, but this host has seen term {new_term}: refused"
    );
    eventually(
        "the agents refuse the stale leader",
        Duration::from_secs(20),
        || {
            let refused: Vec<_> = HOSTS
                .iter()
                .filter(|h| c.log(h).contains(&refusal))
                .collect();
            if refused.len() == HOSTS.len() {
                Ok(())
            } else {
                Err(format!("refused by {refused:?}"))
            }
        },
    );
    // Its lease renewals are refused with it: the copy freezes when its lease runs out,
    // though the stale leader would renew it.
    eventually(
        "steady frozen without a current leader's lease",
        Duration::from_secs(15),
        || {
            let on = c.running_on(&HOSTS, &marker("steady"));
            if on.is_empty() {
                Ok(())
            } else {
                Err(format!("runs on {on:?}"))
            }
        },
    );

    // Healed and the other coordinator back (the witness holds entries the old leader
    // lacks, so the old one alone cannot win it): the old leader learns the newer term and
    // follows, and the workload goes on where it was.
    c.set_member_link(old, true);
    c.start_member(new);
    eventually(
        "the old leader follows the newer term",
        Duration::from_secs(15),
        || {
            let s = c.cluster_status_of(old)?;
            if s.term >= new_term && s.leader.is_some() {
                Ok(())
            } else {
                Err(format!("term {}, leader {:?}", s.term, s.leader))
            }
        },
    );
    c.wait_connected(HOSTS.len());
    epochs_go_on(&c, "steady");
    // The copy may still be frozen from the stale term: the next heartbeat's lease thaws it.
    assert_eq!(one_copy_soon(&c, &HOSTS, "steady"), "host-a");
    advancing(&c, "host-a", "steady");
}
