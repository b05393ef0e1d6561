//! Lead time: faults made on the primary's host through the real signal paths its agent
//! reads, with the coordinator's default timing and decision settings (but a cool-down of
//! 10 s and no hourly budget, so that runs can follow each other), and a workload that
//! answers on TCP (the greeter). For each run: from the fault's onset to the workload
//! answering on its new host, and how long before the failure point the move had finished.
//!
//! - memory: a process in the host's memory cgroup (`[agent] memory_cgroup`, 512 MiB)
//!   grows by 4 MiB/s from nothing; the failure point is when it would reach the limit
//!   (128 s after onset);
//! - errors: corrected memory errors (EDAC) in the host's kernel log (the test build's
//!   `UNDERSTUDY_TEST_KMSG` file), one every 2 s for 2 minutes; the failure point is the
//!   burst's end (120 s after onset). The host's agent is restarted after its run, since
//!   it rightly counts those errors for an hour.
//!
//! Real binaries, real CRIU, namespace hosts; run as root after `cargo build --release
//! --workspace --bins` with UNDERSTUDY_BIN_DIR=target/release.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_tests::cluster::Cluster;
use understudy_tests::greeter::{self, GREETER};
use understudy_tests::pressure::{edac_errors, MemoryCgroup, GROWER};

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
const MIB: u64 = 1 << 20;
const LIMIT: u64 = 512 * MIB;
const GROWTH: u64 = 4 * MIB;
const PORT: u16 = 7300;
const NAME: &str = "lead";

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The coordinator's JSON at `path`.
fn get(c: &Cluster, path: &str) -> serde_json::Value {
    c.api_get("coord", path)
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The hosts that show no memory trouble: every memory forecast's p90 under 0.95 and the
/// failure risk at most 0.5 (what the default triggers look for).
fn calm(c: &Cluster) -> Vec<String> {
    let hosts = get(c, "/v1/hosts");
    let Some(hosts) = hosts["hosts"].as_array() else {
        return Vec::new();
    };
    hosts
        .iter()
        .filter(|h| {
            let health = &h["telemetry"]["health"];
            let risk = health["risk"]["probability"].as_f64().unwrap_or(0.0);
            let mem = health["forecasts"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter(|x| x["metric"] == "mem_u")
                        .filter_map(|x| x["upper"].as_f64())
                        .fold(0.0, f64::max)
                })
                .unwrap_or(0.0);
            risk <= 0.5 && mem < 0.95
        })
        .filter_map(|h| h["name"].as_str().map(str::to_owned))
        .collect()
}

/// One run's figures, seconds: onset to answering on the new host, and the move's finish
/// before the failure point (negative: after it).
struct Run {
    answered: f64,
    lead: f64,
}

/// Waits for the workload to have moved off `from` and to answer on its new host; returns
/// the run's figures.
fn moved(c: &Cluster, from: &str, onset: Instant, failure_ms: u64) -> Run {
    let (to, finished_ms) = loop {
        let w = get(c, &format!("/v1/workloads/{NAME}"));
        let primary = w["primary"].as_str().unwrap_or(from);
        let m = &w["last_migration"];
        if primary != from && m["outcome"] == "succeeded" && m["from"] == from {
            break (
                primary.to_owned(),
                m["finished_unix_ms"].as_u64().unwrap_or(0),
            );
        }
        assert!(
            onset.elapsed() < Duration::from_secs(600),
            "{NAME} never left {from}: {w}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let addr = SocketAddr::from((c.host(&to).addr, PORT));
    while !greeter::answers(addr, Duration::from_millis(200)) {
        assert!(
            onset.elapsed() < Duration::from_secs(900),
            "never answered on {to}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let answered = onset.elapsed().as_secs_f64();
    Run {
        answered,
        lead: (failure_ms as f64 - finished_ms as f64) / 1000.0,
    }
}

fn primary(c: &Cluster) -> String {
    get(c, &format!("/v1/workloads/{NAME}"))["primary"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn memory_run(c: &Cluster, cgroups: &[(String, MemoryCgroup)]) -> Run {
    // The primary and one other host calm (the previous run's host may still be forecast
    // to fill for a while: its window still holds the growth).
    let from = primary(c);
    let wait = Instant::now();
    loop {
        let calm = calm(c);
        if calm.contains(&from) && calm.len() >= 2 {
            break;
        }
        assert!(wait.elapsed() < Duration::from_secs(600), "no calm");
        std::thread::sleep(Duration::from_millis(500));
    }
    let cg = &cgroups.iter().find(|(h, _)| *h == from).unwrap().1;
    let mut grower = std::process::Command::new("python3")
        .args(["-c", GROWER, &GROWTH.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cg.add(grower.id());
    let (onset, onset_ms) = (Instant::now(), wall_ms());
    let run = moved(c, &from, onset, onset_ms + 1000 * LIMIT / GROWTH);
    let _ = grower.kill();
    let _ = grower.wait();
    run
}

fn errors_run(c: &Cluster, seq: &mut u64) -> Run {
    let from = primary(c);
    let kmsg = c.host_dir(&from).join("kmsg");
    let (onset, onset_ms) = (Instant::now(), wall_ms());
    let failure_ms = onset_ms + 120_000;
    // The burst goes on beside the move, as a failing DIMM's would (until the workload has
    // left: the rest of it would change nothing measured).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burst = {
        let (kmsg, stop) = (kmsg.clone(), stop.clone());
        let first = *seq;
        std::thread::spawn(move || {
            for i in 0..60 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                edac_errors(&kmsg, first + i, 1);
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    *seq += 60;
    let run = moved(c, &from, onset, failure_ms);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    burst.join().unwrap();
    // Its errors count for an hour: a fresh agent (and log) to make it a target again.
    c.stop(&from);
    std::fs::write(&kmsg, "").unwrap();
    start_agent(c, &from);
    c.wait_connected(3);
    run
}

fn start_agent(c: &Cluster, host: &str) {
    let kmsg = c.host_dir(host).join("kmsg");
    c.start_agent_env(host, &[("UNDERSTUDY_TEST_KMSG", kmsg.to_str().unwrap())]);
}

fn summary(label: &str, runs: &[Run]) {
    let stats = |mut v: Vec<f64>, worst_is_max: bool| {
        v.sort_by(f64::total_cmp);
        let worst = if worst_is_max { v[v.len() - 1] } else { v[0] };
        (v[v.len() / 2], worst)
    };
    let (a_med, a_worst) = stats(runs.iter().map(|r| r.answered).collect(), true);
    let (l_med, l_worst) = stats(runs.iter().map(|r| r.lead).collect(), false);
    println!(
        "lead time, {label}, {} runs: onset to answering on the new host median {a_med:.1} s, worst {a_worst:.1} s; move finished before the failure point median {l_med:.1} s, worst {l_worst:.1} s",
        runs.len()
    );
}

/// Runs `runs` runs of each fault and prints the figures.
pub fn run(runs: usize) {
    let cgroups: Vec<(String, MemoryCgroup)> = HOSTS
        .iter()
        .map(|h| {
            let cg =
                MemoryCgroup::new(LIMIT).unwrap_or_else(|e| panic!("a memory cgroup for {h}: {e}"));
            ((*h).to_owned(), cg)
        })
        .collect();
    let c = Cluster::new(&HOSTS);
    c.use_default_timing();
    c.set_decisions(
        "mode = \"act\"\ntriggers = [\"risk\", \"exhaustion\", \"errors\"]\ncooldown = \"10s\"\nmoves_per_hour = 1000\ntarget_health_min = 0",
    );
    for (h, cg) in &cgroups {
        c.agent_setting(h, &format!("memory_cgroup = \"{}\"", cg.dir().display()));
        std::fs::write(c.host_dir(h).join("kmsg"), "").unwrap();
    }
    c.start_coordinator();
    for h in HOSTS {
        start_agent(&c, h);
    }
    c.wait_connected(3);
    c.create_workload(&[
        NAME,
        "--host",
        HOSTS[0],
        "--shadow",
        HOSTS[1],
        "--interval",
        "1s",
        "--probe-tcp",
        &PORT.to_string(),
        "--",
        "/usr/bin/python3",
        "-c",
        GREETER,
        "64",
        &PORT.to_string(),
    ]);
    c.wait_for_epochs(NAME, 3);
    // The forecaster needs two minutes of samples on every host.
    std::thread::sleep(Duration::from_secs(125));
    let mut memory = Vec::new();
    for i in 0..runs {
        let r = memory_run(&c, &cgroups);
        eprintln!(
            "memory run {i}: answered after {:.1} s, {:.1} s before the limit",
            r.answered, r.lead
        );
        memory.push(r);
    }
    let mut errors = Vec::new();
    let mut seq = 1000;
    for i in 0..runs {
        let r = errors_run(&c, &mut seq);
        eprintln!(
            "errors run {i}: answered after {:.1} s, {:.1} s before the burst's end",
            r.answered, r.lead
        );
        errors.push(r);
    }
    summary("memory growing to the host's limit", &memory);
    summary("a burst of memory errors", &errors);
}
