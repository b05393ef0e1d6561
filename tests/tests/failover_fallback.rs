//! A failover whose newest epoch does not restore comes back from the next older one the
//! shadow keeps, and says so: a workload that opened a file only on its primary's disk
//! after an epoch was taken cannot be restored from the epochs that hold that file open on
//! a host where it is gone, but it can from the epoch before, and running from an older
//! state beats not running at all when the primary is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::{Cluster, FAILOVER_AFTER};
use understudy_tests::copies::{advancing, create_python_with, failed_over, marker, the_one_copy};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

/// Counts; once `ARGV[1].now` exists, opens `ARGV[1]` (read-only, so its size stays what
/// an epoch recorded) and keeps it open.
const OPENS_LATE: &str = "import os, sys, time
late = sys.argv[1]
held = None
n = 0
while True:
    n += 1
    print(n, flush=True)
    if held is None and os.path.exists(late + '.now'):
        held = open(late, 'rb')
        print('opened at', n, flush=True)
    time.sleep(0.01)
";

/// The recovery point the coordinator records for `name`, once it is newer than `after`.
fn recovery_point_after(c: &Cluster, name: &str, after: u64, within: Duration) -> u64 {
    eventually(
        &format!("an epoch of {name} newer than {after}"),
        within,
        || match c.workload(name)?.last_epoch {
            Some(e) if e.epoch > after => Ok(e.epoch),
            other => Err(format!("{other:?}")),
        },
    )
}

#[test]
fn a_failover_whose_newest_epoch_does_not_restore_comes_back_from_the_one_before() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("only-on-host-a");
    std::fs::write(&late, b"a file the shadow host will not have").unwrap();
    let name = "opener";
    create_python_with(
        &c,
        name,
        ("host-a", "host-b"),
        "4s",
        OPENS_LATE,
        &[late.to_str().unwrap()],
    );
    let first = c.wait_for_epochs(name, 1).last_epoch.unwrap().epoch;
    // Right after an epoch commits (the next is about 4 s away), the workload opens the
    // file: that epoch is the last one without it.
    let before_open = recovery_point_after(&c, name, first, Duration::from_secs(30));
    std::fs::write(dir.path().join("only-on-host-a.now"), b"").unwrap();
    let opened_at = eventually(
        "the workload opens the file",
        Duration::from_secs(5),
        || {
            c.output_log("host-a", name)
                .lines()
                .find_map(|l| l.strip_prefix("opened at ")?.trim().parse::<u64>().ok())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    // An epoch that holds the file open is committed, and recorded as the recovery point.
    let recorded = recovery_point_after(&c, name, before_open, Duration::from_secs(30));
    c.kill_host("host-a");
    // The file (and what told the workload to open it) existed only on host-a's disk.
    std::fs::remove_file(&late).unwrap();
    std::fs::remove_file(dir.path().join("only-on-host-a.now")).unwrap();
    let w = failed_over(&c, name, "host-b", FAILOVER_AFTER + Duration::from_secs(60));
    let m = w.last_migration.clone().unwrap();
    assert_eq!(
        m.recovery_epoch,
        Some(before_open),
        "restored the last epoch without the file (recorded recovery point {recorded}): {m:?}"
    );
    let why = m.error.clone().unwrap_or_default();
    assert!(
        why.contains(&format!("epoch {recorded} did not restore")),
        "the move says why the newer epochs were passed over: {m:?}"
    );
    // The state is the older epoch's: the count goes on from before the file was opened.
    let counts = eventually("it counts on host-b", Duration::from_secs(10), || {
        let n = numbers(&c.output_log("host-b", name));
        if n.len() > 10 {
            Ok(n)
        } else {
            Err(format!("{} lines", n.len()))
        }
    });
    assert!(
        counts[0] < opened_at,
        "host-b went on from {}, not from before {opened_at}, where host-a opened the file",
        counts[0]
    );
    advancing(&c, "host-b", name);
    assert_eq!(the_one_copy(&c, &hosts, name), "host-b");
    let shown = c.cli(&["workload", "show", name]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!("recovery point epoch {before_open}"))
            && text.contains(&format!(
                "(not the newest: epoch {recorded} did not restore"
            )),
        "{text}"
    );
    let events = c.cli(&["events", "--workload", name]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("older than the newest"),
        "the event log says so: {events}"
    );
    eprintln!("opener: recorded epoch {recorded}, restored {before_open}: {why}");
}

/// Opens `ARGV[1]` (read-only) at once and counts.
const OPENS_AT_ONCE: &str = "import sys, time
held = open(sys.argv[1], 'rb')
n = 0
while True:
    n += 1
    print(n, flush=True)
    time.sleep(0.01)
";

#[test]
fn a_failover_nothing_can_restore_is_retried_less_often_and_succeeds_once_fixed() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::started(&hosts);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("only-on-host-a");
    let content = b"a file every epoch holds open";
    std::fs::write(&file, content).unwrap();
    let name = "holder";
    create_python_with(
        &c,
        name,
        ("host-a", "host-b"),
        "1s",
        OPENS_AT_ONCE,
        &[file.to_str().unwrap()],
    );
    let before = c.wait_for_epochs(name, 2);
    c.kill_host("host-a");
    std::fs::remove_file(&file).unwrap();
    // Every epoch holds the file open: no failover can succeed. It is tried again, but
    // less often: 2, 4, 8, 16 s apart (a new generation each time), not every sweep.
    let lost = eventually(
        "holder is lost with the reason and the next attempt",
        FAILOVER_AFTER + Duration::from_secs(30),
        || {
            let w = c.workload(name)?;
            match &w.state {
                WorkloadState::Lost(why) if why.contains("attempt 3 in a row failed") => Ok(w),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let WorkloadState::Lost(why) = &lost.state else {
        unreachable!()
    };
    assert!(
        why.contains("Unable to open") && why.contains("the next in 8s"),
        "the reason names CRIU's error and when it is tried again: {why}"
    );
    std::thread::sleep(Duration::from_secs(10));
    let later = c.workload(name).unwrap();
    assert!(
        later.generation <= lost.generation + 1,
        "10 s after the third failed attempt, at most one more was made (generation {} then {})",
        lost.generation,
        later.generation
    );
    // The coordinator restarted (SIGTERM, then SIGKILL) while the workload is lost: its
    // record stays lost, nothing runs it anywhere, and attempts go on (counted afresh).
    for kill in [false, true] {
        if kill {
            c.kill("coord");
        } else {
            c.stop("coord");
        }
        c.start_coordinator();
        c.wait_connected(1);
        eventually(
            "holder is lost again after the restart",
            Duration::from_secs(30),
            || match c.workload(name)?.state {
                WorkloadState::Lost(why) if why.contains("attempt 1 in a row failed") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        assert!(
            c.running_on(&hosts, &marker(name)).is_empty(),
            "a lost workload runs nowhere"
        );
    }
    // The file is put back on the shadow's side: the next attempt restores the newest epoch.
    std::fs::write(&file, content).unwrap();
    let w = failed_over(&c, name, "host-b", Duration::from_secs(70));
    let m = w.last_migration.clone().unwrap();
    assert!(
        m.recovery_epoch >= before.last_epoch.as_ref().map(|e| e.epoch),
        "{m:?}"
    );
    advancing(&c, "host-b", name);
    assert_eq!(the_one_copy(&c, &hosts, name), "host-b");
    eprintln!(
        "holder: lost at generation {}, back at generation {} from epoch {:?}",
        lost.generation, w.generation, m.recovery_epoch
    );
}
