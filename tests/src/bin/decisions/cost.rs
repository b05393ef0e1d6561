//! What one tick of the decision engine costs on a large fabricated fleet (1,000 hosts,
//! 10,000 workloads; 5 % of the hosts in trouble, a few cordoned, draining or near a
//! maintenance window), in the release build the server runs. Prints the median and worst
//! of the ticks.

use std::time::Instant;

use understudy_common::telemetry::{Forecast, HealthLevel, HealthReport, Risk};
use understudy_coordinator::decide::{
    decide, Action, Fleet, HostView, Memory, Settings, Window, WorkloadView,
};

const HOSTS: usize = 1000;
const WORKLOADS: usize = 10_000;
const NOW: u64 = 1_800_000_000_000;

fn health(score: u8, i: usize) -> HealthReport {
    HealthReport {
        score,
        level: if score >= 80 {
            HealthLevel::Healthy
        } else {
            HealthLevel::Critical
        },
        anomaly: 0.1,
        anomaly_threshold: 1.0,
        top: vec![("cpu_u".into(), 0.1)],
        note: None,
        forecasts: vec![Forecast {
            metric: "mem_u".into(),
            horizon_secs: 300,
            central: 0.4 + (i % 40) as f32 / 100.0,
            upper: 0.5 + (i % 40) as f32 / 100.0,
        }],
        risk: Some(Risk {
            probability: if i % 20 == 1 { 0.9 } else { 0.01 },
            horizon_secs: 300,
            cause: "mem_u".into(),
        }),
        kernel_errors: Vec::new(),
        percentile: None,
    }
}

fn fleet() -> Fleet {
    let hosts = (0..HOSTS)
        .map(|i| HostView {
            name: format!("h{i:04}"),
            connected: i % 97 != 0,
            health: Some(health(if i % 20 == 0 { 30 } else { 95 }, i)),
            low_health_beats: if i % 20 == 0 { 10 } else { 0 },
            memory_bytes: 64 << 30,
            memory_used: 0.4,
            cordoned: i % 101 == 0,
            draining: i % 211 == 0,
            max_moves: (i % 211 == 0).then_some(2),
            maintenance: if i % 307 == 0 {
                vec![Window {
                    start_ms: NOW + 60_000,
                    duration_ms: 3_600_000,
                    reason: "kernel".into(),
                }]
            } else {
                Vec::new()
            },
            zone: Some(format!("z{}", i % 4)),
        })
        .collect();
    let workloads = (0..WORKLOADS)
        .map(|i| WorkloadView {
            name: format!("w{i:05}"),
            primary: format!("h{:04}", i % HOSTS),
            shadow: Some(format!("h{:04}", (i * 7 + 1) % HOSTS)),
            running: true,
            moving: i % 500 == 0,
            priority: [0.5, 1.0, 2.0][i % 3],
            bytes: (64 + (i % 1024) as u64) << 20,
            dirty_bytes_per_s: 2e6,
            last_freeze_ms: Some(200 + (i % 300) as u64),
            last_move_ms: (i % 13 == 0).then_some(NOW - 600_000),
        })
        .collect();
    Fleet {
        hosts,
        workloads,
        recent_moves_ms: vec![NOW - 1_000_000; 2],
        link_bytes_per_s: 500e6,
    }
}

/// Runs `ticks` ticks and prints their cost.
pub fn run(ticks: usize) {
    let fleet = fleet();
    let settings = Settings {
        persist_ms: 0,
        moves_per_hour: 1000,
        max_moves: 50,
        ..Settings::default()
    };
    let mut memory = Memory::default();
    let mut times = Vec::with_capacity(ticks);
    let mut last = Vec::new();
    for t in 0..ticks {
        let started = Instant::now();
        last = decide(&fleet, &settings, &mut memory, NOW + t as u64 * 1000);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let moves = last
        .iter()
        .filter(|d| matches!(d.action, Action::Move { .. }))
        .count();
    println!(
        "decision engine, {HOSTS} hosts, {WORKLOADS} workloads, {} decisions per tick ({moves} moves): median {:.2} ms, worst {:.2} ms over {ticks} ticks",
        last.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
