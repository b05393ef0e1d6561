//! `failover [SIZE_MIB…] [--runs N]` (default 64 256 1024, 10 runs each): how long a lost
//! host's workload takes to answer again on its shadow with the coordinator's default
//! timing, split into detection (loss to the failover's commit) and restore (commit to the
//! first answer from the shadow's address), and how much was lost (the recovery point's age
//! at the moment of the loss). Real binaries, real CRIU, namespace hosts; a host is lost by
//! cutting its link and killing everything on it. Run as root after
//! `cargo build --release --workspace --bins` (UNDERSTUDY_BIN_DIR=target/release).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark program

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_coordinator::workloads::WorkloadRecord;
use understudy_tests::cluster::Cluster;
use understudy_tests::greeter::{self, GREETER};

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
const INTERVAL: &str = "1s";

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn record(c: &Cluster, name: &str) -> Option<WorkloadRecord> {
    let body = c.api_get("coord", &format!("/v1/workloads/{name}")).ok()?;
    serde_json::from_str(&body).ok()
}

fn answers(addr: SocketAddr) -> bool {
    greeter::answers(addr, Duration::from_millis(200))
}

/// One run: (detection, restore, recovery point age at the loss), seconds.
fn run(c: &Cluster, mib: u64, i: usize) -> (f64, f64, f64) {
    let primary = HOSTS[i % 3];
    let shadow = HOSTS[(i + 1) % 3];
    let name = format!("bench-{mib}-{i}");
    // A port per run: the previous run's copy may still be on its way out.
    let port = 7000 + ((mib as usize * 10 + i) % 20_000) as u16;
    c.create_workload(&[
        &name,
        "--host",
        primary,
        "--shadow",
        shadow,
        "--interval",
        INTERVAL,
        "--probe-tcp",
        &port.to_string(),
        "--",
        "/usr/bin/python3",
        "-c",
        GREETER,
        &mib.to_string(),
        &port.to_string(),
    ]);
    let w = c.wait_for_epochs(&name, 3);
    // Lose the host at a different moment of the epoch interval each run (0, 100, …,
    // 900 ms after an epoch was seen), so the recovery point's age covers the interval.
    std::thread::sleep(Duration::from_millis(100 * (i % 10) as u64));
    let before = record(c, &name).unwrap_or(w);
    let age = wall_ms().saturating_sub(before.last_epoch.as_ref().unwrap().committed_unix_ms);
    let lost = Instant::now();
    c.kill_host(primary);
    let detected = loop {
        if record(c, &name).is_some_and(|r| r.generation > before.generation) {
            break lost.elapsed();
        }
        assert!(
            lost.elapsed() < Duration::from_secs(120),
            "{name}: no failover"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = SocketAddr::from((c.host(shadow).addr, port));
    let answered = loop {
        if answers(addr) {
            break lost.elapsed();
        }
        assert!(
            lost.elapsed() < Duration::from_secs(300),
            "{name}: never answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // Deleted before the next run (refused as busy while the failover finishes choosing a
    // new shadow), so each run's host loss moves only its own workload.
    let deleted = Instant::now();
    loop {
        let out = c.cli(&["workload", "delete", &name, "--force"]);
        if out.status.success() {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(60),
            "{name}: not deleted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.set_link(primary, true);
    c.start_agent(primary);
    c.wait_connected(3);
    (
        detected.as_secs_f64(),
        (answered - detected).as_secs_f64(),
        age as f64 / 1000.0,
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut sizes = Vec::new();
    let mut runs = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N");
        } else {
            sizes.push(a.parse::<u64>().expect("a size in MiB"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![64, 256, 1024];
    }
    let c = Cluster::new(&HOSTS);
    c.use_default_timing();
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(3);
    println!("failover benchmark: default timing (heartbeat 500 ms / 1.5 s, fence_after 1.5 s, failover_after 3.6 s), epochs every {INTERVAL}, {runs} runs per size");
    println!("| size | detection median / max (s) | restore median / max (s) | total median / max (s) | recovery point age at loss median / max (s) |");
    println!("|---|---|---|---|---|");
    for mib in sizes {
        let (mut det, mut res, mut tot, mut age) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let (d, r, a) = run(&c, mib, i);
            eprintln!("{mib} MiB run {i}: detection {d:.2} s, restore {r:.2} s, recovery point {a:.2} s old");
            det.push(d);
            res.push(r);
            tot.push(d + r);
            age.push(a);
        }
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        println!(
            "| {mib} MiB | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            median(&mut det.clone()),
            max(&det),
            median(&mut res.clone()),
            max(&res),
            median(&mut tot.clone()),
            max(&tot),
            median(&mut age.clone()),
            max(&age),
        );
    }
}
