//! Needless moves: normal telemetry replayed into the engine.
//!
//! Each machine of the shared SMD and ASD sets is one host. Its train file holds normal
//! telemetry; its first half is the baseline the agent's detector learns, its second half
//! goes through the agent's own replay path (`predict::replay::smd`, learning on from the
//! rows that do not alarm, as live), and each row's score through the agent's health
//! assessment. The health score it gives is what the host's heartbeats would carry for that
//! row's minute (SMD) or five minutes (ASD), time-compressed: the engine ticks once a minute
//! of the data, and a low row counts as that many minutes of low heartbeats (120 a minute at
//! the default 500 ms interval). Every host runs one workload, its shadow on the next host;
//! a move the engine makes is carried out at once. The data are normal, so every move is
//! needless. SMD and ASD are separate fleets (different step, different model). Only the
//! anomaly signal is replayed: the sets' metrics are normalised per machine, so they carry no
//! capacity to forecast exhaustion against, and no kernel log.

use std::path::{Path, PathBuf};

use understudy_agent::predict::health::{self, Inputs, Thresholds};
use understudy_agent::predict::replay::parse_row;
use understudy_common::telemetry::HealthReport;
use understudy_coordinator::decide::{
    decide, Action, Fleet, HostView, Memory, Settings, WorkloadView,
};

const MINUTE_MS: u64 = 60_000;
/// Heartbeats a minute at the coordinator's default interval (500 ms).
const BEATS_PER_MINUTE: u32 = 120;

/// One host's replayed health, one report per row.
struct Host {
    name: String,
    reports: Vec<HealthReport>,
}

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets")
}

fn rows(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let text = zstd::decode_all(bytes.as_slice()).unwrap();
    String::from_utf8(text)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Replays `train`'s second half after learning its first, through the agent's replay.
fn replay(train: &Path, model: &str, scratch: &Path) -> Vec<HealthReport> {
    let all = rows(train);
    let (first, second) = all.split_at(all.len() / 2);
    let stem = train
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".txt.zst", "");
    let (a, b, out) = (
        scratch.join(format!("{stem}.learn")),
        scratch.join(format!("{stem}.replay")),
        scratch.join(format!("{stem}.out")),
    );
    std::fs::write(&a, first.join("\n")).unwrap();
    std::fs::write(&b, second.join("\n")).unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut det = understudy_agent::predict::load_anomaly_named(&models, model).unwrap();
    let rows_per_day = if model == "anomaly-asd" {
        288.0
    } else {
        1440.0
    };
    understudy_agent::predict::replay::smd(&mut det, &a, &b, &out, (rows_per_day, None), true)
        .unwrap();
    // The host's threshold as its calibration ended (it moves a little along the replay).
    let threshold = det.threshold();
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let v = parse_row(l).unwrap();
            health::assess(
                Inputs {
                    anomaly: v[1],
                    threshold,
                    alarm: v[2] > 0.5,
                    mem_used: None,
                    top: Vec::new(),
                    forecasts: Vec::new(),
                    kernel_errors: [0; 3],
                },
                &Thresholds::default(),
            )
        })
        .collect()
}

fn fleet_of(dir: &Path, model: &str, scratch: &Path) -> Vec<Host> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".txt.zst"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| Host {
            name: f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".txt.zst", ""),
            reports: replay(f, model, scratch),
        })
        .collect()
}

/// What the engine did over a replayed fleet.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    moves: usize,
    host_days: f64,
    /// Host-minutes whose health was below the trigger's threshold.
    low_minutes: usize,
}

/// Runs the engine over `hosts` (one row every `row_minutes`) with `s`.
fn simulate(hosts: &[Host], row_minutes: u64, s: &Settings) -> Outcome {
    let n = hosts.len();
    let rows = hosts.iter().map(|h| h.reports.len()).min().unwrap_or(0);
    let minutes = rows as u64 * row_minutes;
    let mut workloads: Vec<WorkloadView> = (0..n)
        .map(|i| WorkloadView {
            name: format!("w{i}"),
            primary: hosts[i].name.clone(),
            shadow: Some(hosts[(i + 1) % n].name.clone()),
            running: true,
            moving: false,
            priority: 1.0,
            bytes: 1 << 30,
            dirty_bytes_per_s: 10e6,
            last_freeze_ms: Some(1000),
            last_move_ms: None,
        })
        .collect();
    let mut low_beats = vec![0u32; n];
    let mut recent: Vec<u64> = Vec::new();
    let mut memory = Memory::default();
    let mut out = Outcome {
        host_days: (n as u64 * minutes) as f64 / 1440.0,
        ..Outcome::default()
    };
    let below = s.health_below.unwrap_or(0);
    for minute in 0..minutes {
        let now = 1_800_000_000_000 + minute * MINUTE_MS;
        let row = (minute / row_minutes) as usize;
        let views: Vec<HostView> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let r = &h.reports[row];
                if r.score < below {
                    low_beats[i] = low_beats[i].saturating_add(BEATS_PER_MINUTE);
                    out.low_minutes += 1;
                } else {
                    low_beats[i] = 0;
                }
                HostView {
                    name: h.name.clone(),
                    connected: true,
                    health: Some(r.clone()),
                    low_health_beats: low_beats[i],
                    memory_bytes: 64 << 30,
                    memory_used: 0.4,
                    cordoned: false,
                    draining: false,
                    max_moves: None,
                    maintenance: Vec::new(),
                    zone: None,
                }
            })
            .collect();
        recent.retain(|t| now - t < 3_600_000);
        let fleet = Fleet {
            hosts: views,
            workloads: workloads.clone(),
            recent_moves_ms: recent.clone(),
            link_bytes_per_s: 500e6,
        };
        for d in decide(&fleet, s, &mut memory, now) {
            if let Action::Move { to } = d.action {
                let w = workloads.iter_mut().find(|w| w.name == d.workload).unwrap();
                w.shadow = Some(std::mem::replace(&mut w.primary, to));
                w.last_move_ms = Some(now);
                recent.push(now);
                out.moves += 1;
            }
        }
    }
    out
}

/// Replays both sets and prints the needless moves with the default settings, with other
/// health hysteresis, and with the shared-trouble guard off.
pub fn run(smd: Option<PathBuf>, asd: Option<PathBuf>) {
    let smd = smd.unwrap_or_else(|| datasets().join("smd/train"));
    let asd = asd.unwrap_or_else(|| datasets().join("asd/train"));
    let scratch = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let fleets = [
        ("SMD", fleet_of(&smd, "anomaly", scratch.path()), 1),
        ("ASD", fleet_of(&asd, "anomaly-asd", scratch.path()), 5),
    ];
    eprintln!(
        "replayed {} hosts in {:.0} s",
        fleets.iter().map(|f| f.1.len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    let defaults = Settings::default();
    let mut variants = vec![("defaults".to_string(), defaults.clone())];
    for beats in [3u32, 600, 1800, 2400, 3600, 4800, 7200] {
        if beats != defaults.health_heartbeats {
            variants.push((
                format!("health_heartbeats {beats}"),
                Settings {
                    health_heartbeats: beats,
                    ..defaults.clone()
                },
            ));
        }
    }
    // The shared-trouble guard off, as the baseline for what it holds back (the defaults,
    // and the shortest hysteresis, where most hosts are low at once most often).
    for beats in [defaults.health_heartbeats, 3] {
        variants.push((
            format!("health_heartbeats {beats}, shared_trouble_share 1 (off)"),
            Settings {
                health_heartbeats: beats,
                shared_trouble_share: 1.0,
                ..defaults.clone()
            },
        ));
    }
    for (label, s) in &variants {
        let mut total = Outcome::default();
        let mut parts = Vec::new();
        for (name, hosts, row_minutes) in &fleets {
            let o = simulate(hosts, *row_minutes, s);
            parts.push(format!(
                "{name} {} moves over {:.0} host-days ({:.1}% of host-minutes below {})",
                o.moves,
                o.host_days,
                100.0 * o.low_minutes as f64 / (o.host_days * 1440.0),
                s.health_below.unwrap_or(0)
            ));
            total.moves += o.moves;
            total.host_days += o.host_days;
        }
        println!(
            "needless moves, {label}: {} over {:.0} host-days = {:.2} per host-week (goal at most 1) [{}]",
            total.moves,
            total.host_days,
            total.moves as f64 * 7.0 / total.host_days,
            parts.join("; ")
        );
    }
}
