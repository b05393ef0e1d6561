//! `telemetry` benchmark: what watching a host costs.
//!
//! 1. The anomaly detector's evaluation per host per step (normalise, model, smoothing,
//!    the host's own threshold calibration with its window full), the score's percentile
//!    among the window's (which `/metrics` gives at every sample), and one full sample of the
//!    host's schema metrics from procfs.
//! 2. Side by side in one run, on one namespace host: the understudy agent (sampling and
//!    assessing every second, heartbeating, its /metrics scraped every second) and
//!    `prometheus-node-exporter` (Debian's package, scraped every second): CPU time and
//!    resident memory of each process over the same minute.
//!
//! Usage: telemetry [SECONDS]   (default 60; needs root and prometheus-node-exporter)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark program

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use understudy_agent::hostmetrics::{schema, Sampler};
use understudy_agent::predict;
use understudy_tests::cluster::{http_get, Cluster};
use understudy_tests::procstat::{cpu_seconds, status_kib};
use understudy_tests::ChildGuard;

fn detector_cost() {
    let dir = predict::manifest::default_dir();
    let mut det = predict::load_anomaly(&dir).unwrap();
    let mut x: u64 = 88;
    let mut row = || -> Vec<f64> {
        (0..38)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f64 / 1000.0
            })
            .collect()
    };
    // As live at one sample a second: an hour's warm-up, then the manifest's
    // `calibration_days` of scores, so the threshold's calibration window is full.
    let day = predict::detector::DAY_SECONDS;
    let days = predict::manifest::read(&dir, "anomaly")
        .unwrap()
        .calibration_days;
    det.calibrate_for(day, 3600, None);
    for _ in 0..(3600.0 + days * day) as usize {
        det.step(&row()).unwrap();
    }
    let rows: Vec<Vec<f64>> = (0..20_000).map(|_| row()).collect();
    let t = Instant::now();
    for r in &rows {
        det.step(r).unwrap();
    }
    let per_step = t.elapsed().as_secs_f64() / rows.len() as f64;
    let t = Instant::now();
    let mut seen = 0.0;
    for _ in 0..200 {
        seen += det.percentile_now().unwrap();
    }
    let per_percentile = t.elapsed().as_secs_f64() / 200.0;
    assert!((0.0..=100.0 * 200.0).contains(&seen));
    // The calibration's refit alone, on a full window of the detector's own recent scores.
    let params = predict::calibrate::CalibrationParams {
        target_per_day: 0.5,
        rows_per_day: day,
        window: (days * day) as usize,
        tail: 0.02,
        merge_gap: 10,
        refit_every: usize::MAX,
    };
    let mut cal = predict::calibrate::Calibrator::new(params);
    for _ in 0..params.window {
        cal.push(det.step(&row()).unwrap().smoothed);
    }
    let t = Instant::now();
    for _ in 0..20 {
        cal.refit();
    }
    let per_refit = t.elapsed().as_secs_f64() / 20.0;
    assert!(cal.threshold().is_some());
    let mut sampler = Sampler::new(schema::shipped().unwrap(), None);
    sampler.sample();
    let t = Instant::now();
    for _ in 0..200 {
        sampler.sample();
    }
    let per_sample = t.elapsed().as_secs_f64() / 200.0;
    let uni = predict::univariate::UnivariateModel::load(&dir).unwrap();
    let mut series = uni.detector();
    let mut x: u64 = 5;
    let values: Vec<f64> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f64
        })
        .collect();
    // Five-minute values with their times, so the seasonal scale is in play: by value 3000
    // every scale's memory is full.
    let at = |i: usize| Some(1_700_006_400.0 + 300.0 * i as f64);
    for (i, v) in values[..3000].iter().enumerate() {
        series.step_at(*v, at(i)).unwrap();
    }
    let t = Instant::now();
    for (i, v) in values.iter().enumerate().skip(3000) {
        series.step_at(*v, at(i)).unwrap();
    }
    let per_value = t.elapsed().as_secs_f64() / 2000.0;
    println!(
        "anomaly detector: {:.1} µs per host per step ({} steps, calibration window {} scores); \
         its percentile: {:.0} µs; a calibration refit: {:.2} ms; host sample from procfs: {:.0} µs; \
         univariate detector (memory full): {:.0} µs per value",
        per_step * 1e6,
        rows.len(),
        (days * day) as usize,
        per_percentile * 1e6,
        per_refit * 1e3,
        per_sample * 1e6,
        per_value * 1e6
    );
}

fn main() {
    if let Some(why) = understudy_tests::e2e_unavailable() {
        eprintln!("telemetry: {why}");
        std::process::exit(77);
    }
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    detector_cost();
    let exporter = "/usr/bin/prometheus-node-exporter";
    if !std::path::Path::new(exporter).exists() {
        eprintln!("telemetry: {exporter} missing (apt-get install prometheus-node-exporter)");
        std::process::exit(69);
    }
    let c = Cluster::new(&["host-a"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);
    let h = c.host("host-a").clone();
    let _ne = ChildGuard(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", h.netns))
            .arg(exporter)
            .arg(format!("--web.listen-address={}:9100", h.addr))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ne_pid = _ne.0.id();
    let agent_pid = c.pid("host-a").unwrap();
    let (agent_url, ne_url) = (
        SocketAddr::from((h.addr, 7443)),
        SocketAddr::from((h.addr, 9100)),
    );
    std::thread::sleep(Duration::from_secs(5));
    let (a0, n0) = (cpu_seconds(agent_pid), cpu_seconds(ne_pid));
    let (mut a_max, mut n_max) = (0, 0);
    let (mut a_anon, mut n_anon) = (0, 0);
    let (mut a_bytes, mut n_bytes) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..seconds {
        a_bytes = http_get(agent_url, "/metrics").map_or(0, |t| t.len());
        n_bytes = http_get(ne_url, "/metrics").map_or(0, |t| t.len());
        a_max = a_max.max(status_kib(agent_pid, "VmRSS"));
        n_max = n_max.max(status_kib(ne_pid, "VmRSS"));
        a_anon = a_anon.max(status_kib(agent_pid, "RssAnon"));
        n_anon = n_anon.max(status_kib(ne_pid, "RssAnon"));
        let next = Duration::from_secs(i + 1);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (a_cpu, n_cpu) = (cpu_seconds(agent_pid) - a0, cpu_seconds(ne_pid) - n0);
    println!();
    println!("| process ({seconds} s, scraped every second) | CPU (% of one core) | peak RSS | of which anonymous (peak) | /metrics size |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| understudy-agent (samples + assesses every second, heartbeats) | {:.2}% | {:.1} MiB | {:.1} MiB | {} KiB |",
        100.0 * a_cpu / secs,
        a_max as f64 / 1024.0,
        a_anon as f64 / 1024.0,
        a_bytes / 1024
    );
    println!(
        "| prometheus-node-exporter (Debian 12 package, default collectors) | {:.2}% | {:.1} MiB | {:.1} MiB | {} KiB |",
        100.0 * n_cpu / secs,
        n_max as f64 / 1024.0,
        n_anon as f64 / 1024.0,
        n_bytes / 1024
    );
}
