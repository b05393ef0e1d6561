//! `ha` benchmark: the coordinator group (two coordinators and a witness on namespace
//! hosts, one agent) under repeated leader kills.
//!
//! 1. Leader failover, over KILLS kills (default 20): from the SIGKILL of the leader to the
//!    first replicated write (a host cordon) accepted by the new leader; and meanwhile an
//!    operator's CLI (`understudy workload list` with both coordinators' URLs) called in a
//!    loop: how long its calls fail.
//! 2. Write latency: a cordon (one host-admin record and one event committed through the
//!    log) as the API answers it, on the namespace network, 200 times.
//!
//! 3. The witness's resident memory.
//! 4. `ha fleet [AGENTS] [SECONDS]` (default 2000, 60): one process simulating AGENTS agents
//!    (real QUIC and mutual TLS, one certificate each, 1 Hz heartbeats with full telemetry)
//!    against the group: the leader's CPU and resident memory over SECONDS, heartbeat
//!    round trips, and how long `understudy hosts` takes.
//!
//! Usage: ha [KILLS] | ha fleet [AGENTS] [SECONDS]
//! (needs root; run from target/release with UNDERSTUDY_BIN_DIR set)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark program

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_common::tls::Role;
use understudy_tests::api::ApiClient;
use understudy_tests::cluster::{bin, Cluster, HTTP_PORT};
use understudy_tests::procstat::{cpu_seconds, status_kib};
use understudy_tests::wait::eventually;

/// One HTTP POST with an empty JSON body; the status code.
fn post(client: &ApiClient, addr: SocketAddr, path: &str) -> Result<u16, String> {
    client
        .send(addr, "POST", path, "{}")
        .map(|(status, _)| status)
}

/// Posts a cordon or uncordon to whichever member accepts it; true once one did.
fn write_once(c: &Cluster, cordon: bool) -> bool {
    let path = if cordon {
        "/v1/hosts/host-a/cordon"
    } else {
        "/v1/hosts/host-a/uncordon"
    };
    let client = c.api_client(Some(Role::Operator));
    c.coordinators().iter().any(|m| {
        let addr = SocketAddr::from((c.host(m).addr, HTTP_PORT));
        matches!(post(&client, addr, path), Ok(200))
    })
}

fn caught_up(c: &Cluster) {
    eventually("members caught up", Duration::from_secs(30), || {
        let s = c.cluster_status()?;
        let behind = s
            .members
            .iter()
            .filter(|m| s.leader != Some(m.id) && m.lag != Some(0))
            .count();
        if s.members.len() == 3 && behind == 0 {
            Ok(())
        } else {
            Err(format!("{behind} behind"))
        }
    });
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: n={} median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        v.len(),
        ms(p(0.5)),
        ms(p(0.9)),
        ms(*v.last().unwrap())
    );
}

fn fleet(agents: usize, secs: u64) {
    use understudy_tests::fleet;
    let c = Cluster::started_group(&[]);
    let leader = c.leader().unwrap();
    let pid = c.pid(leader).unwrap();
    let t = Instant::now();
    let certs = fleet::certificates(c.ca(), agents);
    println!(
        "{agents} agent certificates issued in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let addrs: Vec<SocketAddr> = c
        .coordinators()
        .iter()
        .map(|m| SocketAddr::from((c.host(m).addr, understudy_tests::cluster::QUIC_PORT)))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let samples = fleet::Samples::default();
    let until = Instant::now() + Duration::from_secs(secs + 120);
    let _guard = rt.enter();
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    for (i, cert) in certs.into_iter().enumerate() {
        rt.spawn(fleet::agent(
            i,
            endpoint.clone(),
            cert,
            c.ca().cert_pem.clone(),
            addrs.clone(),
            until,
            samples.clone(),
        ));
    }
    let t = Instant::now();
    eventually("the fleet registered", Duration::from_secs(120), || {
        let n = c.hosts()?.iter().filter(|h| h.connected).count();
        if n == agents {
            Ok(())
        } else {
            Err(format!("{n} of {agents}"))
        }
    });
    println!(
        "{agents} agents registered in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(5));
    samples.lock().unwrap().clear();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut hosts_calls = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let out = Command::new(bin("understudy"))
            .args(["hosts", "--output", "json"])
            .env("UNDERSTUDY_COORDINATOR", c.api())
            .output()
            .unwrap();
        assert!(out.status.success());
        hosts_calls.push(t.elapsed());
        std::thread::sleep(Duration::from_secs(5));
    }
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS");
    let mut rtt = samples.lock().unwrap().clone();
    rtt.sort_by(f64::total_cmp);
    let q = |p: f64| rtt[((rtt.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "leader with {agents} agents at 1 Hz: CPU {:.2} cores, resident {:.0} MiB",
        cpu,
        rss as f64 / 1024.0
    );
    println!(
        "heartbeat round trip: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        rtt.len(),
        q(0.5),
        q(0.99),
        rtt.last().unwrap()
    );
    stats("understudy hosts (CLI, JSON)", hosts_calls);
    let s = c.cluster_status().unwrap();
    println!(
        "log entries after the run: {} (the fleet's heartbeats are not in the log)",
        s.last_log_index.unwrap_or(0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fleet") {
        let n = args
            .get(2)
            .map_or(2000, |a| a.parse().expect("AGENTS: a number"));
        let secs = args
            .get(3)
            .map_or(60, |a| a.parse().expect("SECONDS: a number"));
        fleet(n, secs);
        return;
    }
    let kills: usize = args
        .get(1)
        .map_or(20, |a| a.parse().expect("KILLS: a number"));
    let c = Cluster::started_group(&["host-a"]);
    let api = c.api();

    let mut failovers = Vec::new();
    let mut cli_down = Vec::new();
    let mut cordon = true;
    for round in 0..kills {
        caught_up(&c);
        let old = c.leader().expect("a leader");
        // The operator's CLI, called in a loop from before the kill until after the new
        // leader answers: the span from the first failed call's start to the last failed
        // call's end.
        let stop = Arc::new(AtomicBool::new(false));
        let cli = {
            let stop = stop.clone();
            let api = api.clone();
            std::thread::spawn(move || {
                let mut failed: Option<(Instant, Instant)> = None;
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let ok = Command::new(bin("understudy"))
                        .args(["workload", "list"])
                        .env("UNDERSTUDY_COORDINATOR", &api)
                        .output()
                        .is_ok_and(|o| o.status.success());
                    if !ok {
                        let end = Instant::now();
                        failed = Some(failed.map_or((t, end), |(s, _)| (s, end)));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                failed.map_or(Duration::ZERO, |(s, e)| e - s)
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        c.kill(old);
        let killed = Instant::now();
        while !write_once(&c, cordon) {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no leader accepted a write within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = killed.elapsed();
        cordon = !cordon;
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
        let down = cli.join().unwrap();
        println!(
            "kill {round}: {old} killed; a write accepted after {:.0} ms; CLI calls failed for {:.0} ms",
            took.as_secs_f64() * 1000.0,
            down.as_secs_f64() * 1000.0
        );
        if std::env::var_os("HA_TRACE").is_some() {
            let new = c.leader().unwrap_or("?");
            println!(
                "killed at {:?}",
                std::time::SystemTime::now() - took - Duration::from_secs(1)
            );
            for l in c
                .log(new)
                .lines()
                .filter(|l| {
                    l.contains("leading")
                        || l.contains("vote")
                        || l.contains("elect")
                        || l.contains("Leader")
                })
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("  {new}: {}", &l[..l.len().min(220)]);
            }
        }
        failovers.push(took);
        cli_down.push(down);
        c.start_member(old);
    }
    if let Some(pid) = c.pid("witness") {
        println!(
            "witness resident memory: {:.1} MiB (anonymous {:.1} MiB)",
            status_kib(pid, "VmRSS") as f64 / 1024.0,
            status_kib(pid, "RssAnon") as f64 / 1024.0
        );
    }
    stats("leader failover (kill to a write accepted)", failovers);
    stats("operator CLI failing during it", cli_down);

    caught_up(&c);
    let leader = c.leader().unwrap();
    let addr = SocketAddr::from((c.host(leader).addr, HTTP_PORT));
    let client = c.api_client(Some(Role::Operator));
    let mut writes = Vec::new();
    for i in 0..200 {
        let path = if i % 2 == 0 {
            "/v1/hosts/host-a/cordon"
        } else {
            "/v1/hosts/host-a/uncordon"
        };
        let t = Instant::now();
        assert_eq!(post(&client, addr, path), Ok(200));
        writes.push(t.elapsed());
    }
    stats(
        "write latency (cordon or uncordon through the log)",
        writes.clone(),
    );
    writes.sort();
    println!(
        "write latency p50 {:.1} ms, p99 {:.1} ms",
        writes[100].as_secs_f64() * 1000.0,
        writes[197].as_secs_f64() * 1000.0
    );
}
