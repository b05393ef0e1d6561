//! Several shadows (`workload create --shadows 2`): every epoch goes to each; with one
//! shadow host lost, epochs go on to the other, a move goes there, and a lost primary
//! fails over to it — exactly one copy, counting on from where its epoch left it. And a
//! shadow whose host stays away is replaced by another host, which a lost primary then
//! fails over to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::WorkloadRecord;
use understudy_tests::cluster::{Cluster, FAILOVER_AFTER};
use understudy_tests::copies::{
    advancing, create_counter, failed_over, last_count, marker, the_one_copy, COUNTER,
};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

/// A counter on host-a shadowed on host-b and host-c, once both have committed an epoch.
fn twice_shadowed(c: &Cluster, name: &str) -> WorkloadRecord {
    let m = marker(name);
    c.create_workload(&[
        name,
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--shadows",
        "2",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        COUNTER,
        &m,
    ]);
    eventually("an epoch on each shadow", Duration::from_secs(30), || {
        let w = c.workload(name)?;
        match (
            w.shadows()[..].to_vec(),
            w.epoch_on("host-b"),
            w.epoch_on("host-c"),
        ) {
            (s, Some(_), Some(_)) if s == ["host-b", "host-c"] => Ok(w),
            other => Err(format!("{other:?}")),
        }
    })
}

/// Waits until `host` has committed `more` epochs beyond what it holds now.
fn epochs_go_on(c: &Cluster, name: &str, host: &str, more: u64) -> u64 {
    let from = c.workload(name).unwrap().epoch_on(host).unwrap_or(0);
    eventually(
        &format!("epochs go on to {host}"),
        Duration::from_secs(30),
        || {
            let now = c.workload(name)?.epoch_on(host).unwrap_or(0);
            if now >= from + more {
                Ok(now)
            } else {
                Err(format!("{host} holds epoch {now}, held {from}"))
            }
        },
    )
}

#[test]
fn with_one_of_two_shadows_lost_epochs_go_on_to_the_other_and_a_move_goes_there() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&HOSTS);
    twice_shadowed(&c, "two");
    let show = String::from_utf8_lossy(&c.cli(&["workload", "show", "two"]).stdout).into_owned();
    assert!(
        show.contains("shadows:        2 of 2 wanted: host-b (epoch"),
        "{show}"
    );
    assert!(show.contains("host-c (epoch"), "{show}");
    // The coordinator keeps both shadows across a crash and a clean restart, and the
    // epochs go on to each.
    for kill in [true, false] {
        if kill {
            c.kill("coord");
        } else {
            assert_eq!(c.stop("coord"), Some(0), "a clean stop exits 0");
        }
        c.start_coordinator();
        c.wait_connected(3);
        let w = c.workload("two").unwrap();
        assert_eq!(w.shadows(), ["host-b", "host-c"]);
        assert_eq!(w.more_shadows.wanted(), 2);
        epochs_go_on(&c, "two", "host-b", 1);
        epochs_go_on(&c, "two", "host-c", 1);
    }

    c.kill_host("host-b");
    let held_by_b = c.workload("two").unwrap().epoch_on("host-b");
    epochs_go_on(&c, "two", "host-c", 4);
    assert_eq!(
        c.workload("two").unwrap().epoch_on("host-b"),
        held_by_b,
        "the lost shadow committed nothing more"
    );

    // A move without --to goes to the shadow that is up.
    let before = last_count(&c, "host-a", "two");
    let out = c.cli(&["migrate", "two"]);
    assert!(
        out.status.success(),
        "migrate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let w = c.workload("two").unwrap();
    assert_eq!(w.primary, "host-c");
    assert_eq!(
        w.last_migration.as_ref().map(|m| m.outcome.as_str()),
        Some("succeeded")
    );
    assert_eq!(the_one_copy(&c, &HOSTS, "two"), "host-c");
    let first = numbers(&c.output_log("host-c", "two"))[0];
    assert!(
        first >= before,
        "host-c went on from {first}, host-a had counted {before}"
    );
    advancing(&c, "host-c", "two");
    // Still two shadows: the old primary, and the lost one kept for when it returns.
    assert_eq!(
        c.workload("two").unwrap().shadows(),
        ["host-a", "host-b"],
        "{w:?}"
    );
}

#[test]
fn with_the_primary_and_one_shadow_lost_the_other_shadow_takes_over() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&HOSTS);
    twice_shadowed(&c, "both");
    epochs_go_on(&c, "both", "host-c", 2);
    // What host-a had counted when host-c's newest epoch was committed: that epoch was
    // dumped after the previous one committed, so the copy goes on from at least this.
    let floor = last_count(&c, "host-a", "both");
    let on_c = epochs_go_on(&c, "both", "host-c", 1);
    c.kill_host("host-b");
    c.kill_host("host-a");
    let w = failed_over(
        &c,
        "both",
        "host-c",
        FAILOVER_AFTER + Duration::from_secs(30),
    );
    let m = w.last_migration.clone().unwrap();
    assert!(
        m.recovery_epoch.unwrap() >= on_c,
        "{m:?}, host-c held {on_c}"
    );
    assert_eq!(the_one_copy(&c, &HOSTS, "both"), "host-c");
    let first = numbers(&c.output_log("host-c", "both"))[0];
    assert!(first >= floor, "host-c went on from {first}, below {floor}");
    advancing(&c, "host-c", "both");
}

#[test]
fn a_shadow_whose_host_stays_away_is_replaced_and_the_workload_fails_over_there() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&HOSTS);
    // The least the config allows: as long as a primary is waited for.
    c.add_failover_setting(&format!(
        "replace_shadow_after = \"{}ms\"",
        FAILOVER_AFTER.as_millis()
    ));
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(HOSTS.len());
    create_counter(&c, "once", "host-a", "host-b", "500ms");
    c.wait_for_epochs("once", 1);

    c.kill_host("host-b");
    let w = eventually(
        "host-c shadows it in host-b's place, holding the recovery point",
        FAILOVER_AFTER + Duration::from_secs(40),
        || {
            let w = c.workload("once")?;
            match (&w.shadow, &w.last_epoch) {
                (Some(s), Some(e)) if s == "host-c" && e.shadow == "host-c" => Ok(w),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert_eq!(w.primary, "host-a");
    assert_eq!(w.shadows(), ["host-c"], "host-b is no shadow any more");
    let events = String::from_utf8_lossy(&c.cli(&["events"]).stdout).into_owned();
    assert!(
        events.contains("once's shadow moved from host-b (unreachable for"),
        "{events}"
    );

    // Protected again: the primary lost, it comes back on host-c from its epoch there.
    let counted = last_count(&c, "host-a", "once");
    c.kill_host("host-a");
    failed_over(
        &c,
        "once",
        "host-c",
        FAILOVER_AFTER + Duration::from_secs(40),
    );
    let first = numbers(&c.output_log("host-c", "once"))[0];
    assert!(
        first > 1 && first <= counted + 200,
        "host-c went on from {first}; host-a had counted {counted}"
    );
    advancing(&c, "host-c", "once");
    assert_eq!(the_one_copy(&c, &HOSTS, "once"), "host-c");
}
