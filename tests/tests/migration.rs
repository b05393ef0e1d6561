//! End to end with real CRIU: a workload shadowed on another namespace host moves there
//! with `understudy migrate` and keeps the state it had in memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::workloads::WorkloadRecord;
use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{criu, require_e2e};

/// Counts in memory and prints every value, every 10 ms.
const COUNTER: &str = "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n";

fn workload(c: &Cluster, name: &str) -> Result<WorkloadRecord, String> {
    let out = c.cli(&["workload", "show", name, "--output", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn numbers(log: &str) -> Vec<u64> {
    log.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn output_log(c: &Cluster, host: &str, name: &str) -> String {
    std::fs::read_to_string(
        c.host_dir(host)
            .join("data/workloads")
            .join(name)
            .join("output.log"),
    )
    .unwrap_or_default()
}

fn started_cluster() -> Cluster {
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    eventually("both agents connected", Duration::from_secs(10), || {
        let hosts = c.hosts()?;
        let n = hosts.iter().filter(|h| h.connected).count();
        if n == 2 { Ok(()) } else { Err(format!("{n} connected")) }
    });
    c
}

fn wait_for_epochs(c: &Cluster, name: &str, at_least: u64) -> WorkloadRecord {
    eventually("epochs committed on the shadow", Duration::from_secs(30), || {
        let w = workload(c, name)?;
        if w.epochs >= at_least {
            Ok(w)
        } else {
            Err(format!("{} epochs; unprotected: {:?}; state {:?}", w.epochs, w.unprotected, w.state))
        }
    })
}

#[test]
fn counter_continues_on_the_new_host_after_migrate() {
    require_e2e!();
    if let Err(why) = criu::provisioned() {
        eprintln!("SKIPPED: CRIU not provisioned: {why}");
        return;
    }
    let c = started_cluster();
    let out = c.cli(&[
        "workload", "create", "counter", "--host", "host-a", "--shadow", "host-b",
        "--interval", "500ms", "--", "/usr/bin/python3", "-c", COUNTER,
    ]);
    assert!(out.status.success(), "create failed: {}", String::from_utf8_lossy(&out.stderr));
    let before = wait_for_epochs(&c, "counter", 2);
    assert_eq!(before.primary, "host-a");
    let e = before.last_epoch.clone().unwrap();
    assert!(e.bytes_total > 0 && e.bytes_sent > 0);

    let out = c.cli(&["migrate", "counter"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "migrate failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("frozen for"), "{stdout}");
    let last_on_a = *numbers(&output_log(&c, "host-a", "counter")).last().expect("A logged counts");

    let after = workload(&c, "counter").unwrap();
    assert_eq!(after.primary, "host-b");
    assert_eq!(after.generation, before.generation + 1);
    let b_counts = eventually("counter logs on host-b", Duration::from_secs(10), || {
        let n = numbers(&output_log(&c, "host-b", "counter"));
        if n.len() >= 20 { Ok(n) } else { Err(format!("{} lines", n.len())) }
    });
    // It did not restart from zero: it continues from at least the last value host-a logged.
    assert!(
        b_counts[0] > last_on_a.saturating_sub(1),
        "host-b started at {} but host-a had logged {last_on_a}",
        b_counts[0]
    );
    assert!(b_counts.windows(2).all(|w| w[1] == w[0] + 1), "counts on B are not consecutive");
    // And it keeps counting there, with A's copy gone.
    std::thread::sleep(Duration::from_millis(300));
    let later = numbers(&output_log(&c, "host-b", "counter"));
    assert!(later.len() > b_counts.len());
    let a_len = numbers(&output_log(&c, "host-a", "counter")).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(numbers(&output_log(&c, "host-a", "counter")).len(), a_len, "A still runs a copy");
    eprintln!(
        "counter: A logged up to {last_on_a}, B continued from {}; freeze {:?} ms",
        b_counts[0],
        after.last_migration.as_ref().and_then(|m| m.freeze_ms)
    );
}
