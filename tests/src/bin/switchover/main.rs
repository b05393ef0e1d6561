//! `switchover` benchmark: how long a workload is frozen by `understudy migrate`, and what
//! steady-state epochs cost, against the naive baseline of `criu dump` → copy the whole
//! image directory → `criu restore` on the other host, measured the same way in the same
//! run. Needs root and the provisioned CRIU.
//!
//! Workloads of 64, 256 and 1024 MiB resident memory (random content) dirty 1% of their
//! pages per second and answer UDP probes. A prober sends a probe to both hosts every
//! millisecond; the freeze is the gap between the last answer from the old host and the
//! first from the new one.
//!
//! Usage: switchover [--link RATE] [SIZE_MIB ...]   (default: 64 256 1024, unlimited links)
//!        switchover [--link RATE] --data [DATA_MIB]  (a workload with a data directory, see
//!        `data.rs`; default 1024)
//!
//! `--link 1gbit` limits every host's link with a tc token bucket, both directions, for
//! ours and the baseline alike: namespace links otherwise move data at memory speed, which
//! no network between two machines does.
//!
//! Before each switchover, steady-state protection is sampled every 100 ms for
//! `--window SECS` (default 120) with the agents at their default `[epochs]` budgets: the
//! recovery point's age (p50, p99), the share of wall time the workload was frozen by
//! epochs, the interval the agent paced them at and which limit set it, the primary
//! agent's CPU per epoch and its peak resident memory.
//!
//! After our switchover the workload moves back with `migrate --post-copy` (once the old
//! host, now its shadow, holds an epoch), measured by the same prober: the post-copy
//! column. It needs `fs.pipe-max-size` of 4 MiB without CAP_SYS_RESOURCE, which the
//! program sets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark program

mod data;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use understudy_tests::cluster::Cluster;
use understudy_tests::criu;
use understudy_tests::wait::eventually;

const PORT: u16 = 9100;
const DIRTY_SHARE_PER_SEC: f64 = 0.01;

/// A Python workload that answers UDP probes on PORT and, between them, does `work` (code
/// indented by 8 spaces) once per `unit` of `rate` accrued; `setup` defines `rate` per second
/// of wall time (so probes never change how much the workload changes).
pub(crate) fn echoing_workload(setup: &str, unit: &str, work: &str) -> String {
    format!(
        r#"
import os, random, select, socket, sys, time
{setup}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {PORT}))
s.setblocking(False)
last = time.monotonic()
debt = 0.0
while True:
    r, _, _ = select.select([s], [], [], 0.01)
    if r:
        try:
            while True:
                data, addr = s.recvfrom(64)
                s.sendto(data, addr)
        except BlockingIOError:
            pass
    now = time.monotonic()
    debt += (now - last) * rate
    last = now
    while debt >= {unit}:
        debt -= {unit}
{work}
"#
    )
}

fn workload_script(mib: usize) -> String {
    echoing_workload(
        &format!(
            "size = {mib} * 1024 * 1024\nbuf = bytearray(os.urandom(size))\npages = size // 4096\n\
             rate = pages * {DIRTY_SHARE_PER_SEC}  # pages dirtied per second"
        ),
        "1",
        "        p = random.randrange(pages) * 4096\n        buf[p] = (buf[p] + 1) % 256",
    )
}

/// Probes `a` and `b` every millisecond; records when each last/first answered.
struct Prober {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, u8)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(a: SocketAddr, b: SocketAddr) -> Self {
        let sock = Arc::new(UdpSocket::bind("0.0.0.0:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s1, st1) = (sock.clone(), stop.clone());
        let sender = std::thread::spawn(move || {
            let mut n = 0u32;
            while !st1.load(Ordering::Relaxed) {
                n += 1;
                let _ = s1.send_to(&n.to_be_bytes(), a);
                let _ = s1.send_to(&n.to_be_bytes(), b);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let (s2, st2, ans) = (sock, stop.clone(), answers.clone());
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !st2.load(Ordering::Relaxed) {
                if let Ok((_, from)) = s2.recv_from(&mut buf) {
                    let host = if from == a { 0 } else { 1 };
                    ans.lock().unwrap().push((Instant::now(), host));
                }
            }
        });
        Prober {
            stop,
            answers,
            threads: vec![sender, receiver],
        }
    }

    /// Stops and returns the gap between the last answer from A and the first from B
    /// after it.
    fn freeze(self) -> Option<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let answers = self.answers.lock().unwrap();
        let last_a = answers
            .iter()
            .filter(|(_, h)| *h == 0)
            .map(|(t, _)| *t)
            .max()?;
        let first_b = answers
            .iter()
            .filter(|(t, h)| *h == 1 && *t > last_a)
            .map(|(t, _)| *t)
            .min()?;
        Some(first_b - last_a)
    }
}

/// Steady-state protection over the sampling window.
struct Window {
    rpo_p50_ms: u64,
    rpo_p99_ms: u64,
    freeze_share: f64,
    cpu_share: f64,
    interval_ms: u64,
    limit: String,
    agent_rss_mib: f64,
    agent_anon_mib: f64,
    /// Per-epoch averages of the epochs committed inside the window (bytes sent, changed
    /// and in all, agent CPU ms, frozen ms), once the interval has settled.
    epochs: Option<[f64; 5]>,
}

impl Window {
    /// A share of the window's wall time, or why there is none.
    fn share(&self, v: f64) -> String {
        match self.epochs {
            Some(_) => format!("{:.1} %", v * 100.0),
            None => "no epoch in the window".into(),
        }
    }
}

fn window_secs() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--window")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(120)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `field` of `/proc/PID/status` (VmRSS, RssAnon, RssFile, RssShmem), KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Samples `name`'s recovery point every 100 ms for the window.
fn sample(c: &Cluster, name: &str) -> Window {
    let agent = c.pid("host-a").expect("host-a's agent runs");
    let secs = window_secs();
    let (start, start_ms) = (Instant::now(), wall_ms());
    let mut ages = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    let mut rss = 0;
    let mut anon = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Ok(Some(e)) = c.workload(name).map(|w| w.last_epoch) {
            ages.push(wall_ms().saturating_sub(e.committed_unix_ms));
            seen.insert(e.epoch, e);
        }
        rss = rss.max(status_kib(agent, "VmRSS:"));
        anon = anon.max(status_kib(agent, "RssAnon:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let window_ms = (secs * 1000) as f64;
    let inside: Vec<_> = seen
        .values()
        .filter(|e| e.committed_unix_ms >= start_ms)
        .collect();
    let sum = |f: &dyn Fn(&understudy_common::workload::EpochReport) -> u64| {
        inside.iter().map(|e| f(e) as f64).sum::<f64>()
    };
    ages.sort_unstable();
    let pct = |p: f64| ages[((ages.len() as f64 * p).ceil() as usize).clamp(1, ages.len()) - 1];
    let pace = seen.values().next_back().and_then(|e| e.cadence);
    let n = inside.len() as f64;
    let epochs = (!inside.is_empty()).then(|| {
        [
            sum(&|e| e.bytes_sent) / n,
            sum(&|e| e.bytes_changed) / n,
            sum(&|e| e.bytes_total) / n,
            sum(&|e| e.cpu_ms) / n,
            sum(&|e| e.frozen_ms) / n,
        ]
    });
    Window {
        epochs,
        rpo_p50_ms: pct(0.5),
        rpo_p99_ms: pct(0.99),
        freeze_share: sum(&|e| e.frozen_ms) / window_ms,
        cpu_share: sum(&|e| e.cpu_ms) / window_ms,
        interval_ms: pace.map_or(0, |p| p.interval_ms),
        limit: pace.map_or("-".into(), |p| format!("{:?}", p.limit)),
        agent_rss_mib: rss as f64 / 1024.0,
        agent_anon_mib: anon as f64 / 1024.0,
    }
}

struct Row {
    window: Window,
    mib: usize,
    ours_freeze: Duration,
    post_copy_freeze: Duration,
    naive_freeze: Duration,
    steady_sent: f64,
    steady_changed: f64,
    steady_total: f64,
    cpu_ms: f64,
    dump_ms: f64,
}

fn limited(c: &Cluster) {
    if let Some(rate) = link_rate() {
        c.limit_links(&rate);
    }
}

fn link_rate() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--link")
        .and_then(|i| args.get(i + 1).cloned())
}

fn started_cluster() -> Cluster {
    let c = Cluster::new(&["host-a", "host-b"]);
    limited(&c);
    c.start_coordinator();
    for h in ["host-a", "host-b"] {
        c.use_default_epoch_budgets(h);
    }
    c.start_agent("host-a");
    c.start_agent("host-b");
    c.wait_connected(2);
    c
}

/// Moves `name` (on host-b, shadowed on host-a) back to host-a by post-copy, once host-a
/// holds an epoch; the client-seen freeze.
fn post_copy_back(c: &Cluster, name: &str) -> Duration {
    criu::allow_post_copy();
    eventually("an epoch on host-a", Duration::from_secs(600), || {
        let w = c.workload(name)?;
        match &w.last_epoch {
            Some(e) if w.primary == "host-b" && e.shadow == "host-a" => Ok(()),
            _ => Err(format!(
                "primary {}, last epoch {:?}",
                w.primary,
                w.last_epoch.map(|e| e.epoch)
            )),
        }
    });
    measured_move(
        c,
        ("host-b", "host-a"),
        &["migrate", name, "--post-copy"],
        "post-copy",
    )
}

/// Runs the CLI's `migrate` (`args`) from host `from` to host `to` with the prober on both,
/// prints the CLI's last line under `label`; the client-seen freeze.
fn measured_move(c: &Cluster, (from, to): (&str, &str), args: &[&str], label: &str) -> Duration {
    let old = SocketAddr::from((c.host(from).addr, PORT));
    let new = SocketAddr::from((c.host(to).addr, PORT));
    let prober = Prober::start(old, new);
    std::thread::sleep(Duration::from_millis(300));
    let out = c.cli(args);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!(
        "  {label}: {}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
    );
    std::thread::sleep(Duration::from_millis(500));
    let freeze = prober.freeze().expect("no answers around the switchover");
    println!("; client-seen freeze {} ms", freeze.as_millis());
    freeze
}

fn ours(mib: usize) -> (Duration, Duration, [f64; 5], Window) {
    let c = started_cluster();
    let name = format!("mem{mib}");
    let out = c.cli(&[
        "workload",
        "create",
        &name,
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "2s",
        "--",
        "/usr/bin/python3",
        "-c",
        &workload_script(mib),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Collect steady-state epochs (the first is sent whole).
    let mut seen = std::collections::BTreeMap::new();
    eventually("4 epochs", Duration::from_secs(600), || {
        let w = c.workload(&name)?;
        if let Some(e) = w.last_epoch {
            seen.insert(e.epoch, e);
        }
        if seen.len() >= 4 {
            Ok(())
        } else {
            Err(format!("{} epochs; {:?}", seen.len(), w.unprotected))
        }
    });
    let steady: Vec<_> = seen.values().skip(1).collect();
    let n = steady.len() as f64;
    let avg = |f: &dyn Fn(&understudy_common::workload::EpochReport) -> u64| {
        steady.iter().map(|e| f(e) as f64).sum::<f64>() / n
    };
    let stats = [
        avg(&|e| e.bytes_sent),
        avg(&|e| e.bytes_changed),
        avg(&|e| e.bytes_total),
        avg(&|e| e.cpu_ms),
        avg(&|e| e.frozen_ms),
    ];
    let window = sample(&c, &name);
    // The window's epochs, at the interval the budgets settled on, rather than the first
    // few (whose interval has not adapted yet).
    let stats = window.epochs.unwrap_or(stats);
    println!(
        "  steady: recovery point p50 {} ms, p99 {} ms; frozen {} of the time; interval {} ms ({}); agent CPU {} of a core, peak RSS {:.0} MiB (anonymous {:.0} MiB)",
        window.rpo_p50_ms,
        window.rpo_p99_ms,
        window.share(window.freeze_share),
        window.interval_ms,
        window.limit,
        window.share(window.cpu_share),
        window.agent_rss_mib,
        window.agent_anon_mib
    );
    let freeze = measured_move(&c, ("host-a", "host-b"), &["migrate", &name], "ours");
    if std::env::var("SWITCHOVER_VERBOSE").is_ok() {
        for host in ["host-a", "host-b"] {
            for l in c
                .log(host)
                .lines()
                .filter(|l| l.contains("DEBUG"))
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("    {host}: {l}");
            }
        }
    }
    let post_copy = post_copy_back(&c, &name);
    (freeze, post_copy, stats, window)
}

fn naive(mib: usize, criu_bin: &std::path::Path) -> Duration {
    let c = Cluster::new(&["host-a", "host-b"]);
    limited(&c);
    let (ha, hb) = (c.host("host-a").clone(), c.host("host-b").clone());
    let ns = |h: &understudy_tests::netns::Host| format!("--net=/run/netns/{}", h.netns);
    let work = c.host_dir("naive");
    let (dir_a, dir_b) = (work.join("a"), work.join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let child = understudy_tests::ChildGuard(
        Command::new("nsenter")
            .args([
                &ns(&ha),
                "--",
                "unshare",
                "--pid",
                "--fork",
                "--",
                "setsid",
                "--",
                "/usr/bin/python3",
                "-c",
                &workload_script(mib),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let unshare = child.0.id();
    let a = SocketAddr::from((ha.addr, PORT));
    let b = SocketAddr::from((hb.addr, PORT));
    let init: u32 = eventually("naive workload up", Duration::from_secs(60), || {
        let probe = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        probe.send_to(b"x", a).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8];
        probe.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let kids = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .map_err(|e| e.to_string())?;
        kids.split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("no child".into())
    });
    // The copy goes from host-a to host-b over TCP (tar through a socket); the receiver
    // listens before the clock starts.
    let recv = Command::new("nsenter")
        .args([&ns(&hb), "--", "sh", "-c", &format!(
            "python3 -c 'import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((\"0.0.0.0\",9999));s.listen(1);c,_=s.accept()\nwhile True:\n  d=c.recv(1<<20)\n  if not d: break\n  sys.stdout.buffer.write(d)' | tar xf - -C {}", dir_b.display())])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let prober = Prober::start(a, b);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    // As an operator would: criu runs on host-a, then on host-b.
    let dump = Command::new("nsenter")
        .args([&ns(&ha), "--", criu_bin.to_str().unwrap()])
        .args([
            "dump",
            "-t",
            &init.to_string(),
            "-D",
            dir_a.to_str().unwrap(),
            "--tcp-established",
            "-o",
            "dump.log",
        ])
        .status()
        .unwrap();
    assert!(dump.success(), "naive criu dump failed");
    let t_dump = t0.elapsed();
    let send = Command::new("nsenter")
        .args([&ns(&ha), "--", "sh", "-c", &format!(
            "tar cf - -C {} . | python3 -c 'import socket,sys\ns=socket.create_connection((\"{}\",9999))\nwhile True:\n  d=sys.stdin.buffer.read(1<<20)\n  if not d: break\n  s.sendall(d)'", dir_a.display(), hb.addr)])
        .status()
        .unwrap();
    assert!(send.success());
    assert!(recv.wait_with_output().unwrap().status.success());
    let t_copy = t0.elapsed() - t_dump;
    let restore = Command::new("nsenter")
        .args([
            &ns(&hb),
            "--",
            criu_bin.to_str().unwrap(),
            "restore",
            "-d",
            "-D",
            dir_b.to_str().unwrap(),
            "--tcp-close",
            "-o",
            "restore.log",
        ])
        .status()
        .unwrap();
    assert!(restore.success(), "naive criu restore failed");
    let t_restore = t0.elapsed() - t_dump - t_copy;
    std::thread::sleep(Duration::from_millis(500));
    let freeze = prober
        .freeze()
        .expect("naive: no answers around the switchover");
    println!(
        "  naive: dump {} ms, copy {} ms, restore {} ms; client-seen freeze {} ms",
        t_dump.as_millis(),
        t_copy.as_millis(),
        t_restore.as_millis(),
        freeze.as_millis()
    );
    freeze
}

fn main() {
    let criu = match criu::provisioned() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchover: {e}");
            std::process::exit(69);
        }
    };
    if let Some(why) = understudy_tests::e2e_unavailable() {
        eprintln!("switchover: {why}");
        std::process::exit(77);
    }
    if std::env::args().any(|a| a == "--data") {
        let mib = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .next()
            .unwrap_or(1024);
        data::run(mib);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || args[i - 1] != "--window")
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![64, 256, 1024]
    } else {
        sizes
    };
    let mut rows = Vec::new();
    for mib in sizes {
        println!(
            "{mib} MiB workload, dirtying {:.0}% of its pages per second:",
            DIRTY_SHARE_PER_SEC * 100.0
        );
        let (ours_freeze, post_copy_freeze, s, window) = ours(mib);
        let naive_freeze = naive(mib, &criu.bin);
        rows.push(Row {
            window,
            mib,
            ours_freeze,
            post_copy_freeze,
            naive_freeze,
            steady_sent: s[0],
            steady_changed: s[1],
            steady_total: s[2],
            cpu_ms: s[3],
            dump_ms: s[4],
        });
    }
    let mb = |b: f64| b / (1024.0 * 1024.0);
    println!();
    println!("| size | freeze ours | freeze naive | ours/naive | freeze post-copy | post-copy/naive | epoch size | changed/epoch | sent/epoch | sent/changed | dump (frozen) | agent CPU/epoch |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} MiB | {} ms | {} ms | {:.2} | {} ms | {:.2} | {:.1} MiB | {:.2} MiB | {:.2} MiB | {:.2} | {:.0} ms | {:.0} ms |",
            r.mib,
            r.ours_freeze.as_millis(),
            r.naive_freeze.as_millis(),
            r.ours_freeze.as_secs_f64() / r.naive_freeze.as_secs_f64(),
            r.post_copy_freeze.as_millis(),
            r.post_copy_freeze.as_secs_f64() / r.naive_freeze.as_secs_f64(),
            mb(r.steady_total),
            mb(r.steady_changed),
            mb(r.steady_sent),
            r.steady_sent / r.steady_changed.max(1.0),
            r.dump_ms,
            r.cpu_ms
        );
    }
    println!();
    println!(
        "steady state over {} s, spec interval 2 s, default budgets (freeze 5 %, CPU 20 %):",
        window_secs()
    );
    println!("| size | recovery point p50 | p99 | p99 / spec interval | frozen share | interval in force | set by | agent CPU share | agent peak RSS | of it anonymous |");
    println!("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in &rows {
        let w = &r.window;
        println!(
            "| {} MiB | {} ms | {} ms | {:.1} | {} | {} ms | {} | {} | {:.0} MiB | {:.0} MiB |",
            r.mib,
            w.rpo_p50_ms,
            w.rpo_p99_ms,
            w.rpo_p99_ms as f64 / 2000.0,
            w.share(w.freeze_share),
            w.interval_ms,
            w.limit,
            w.share(w.cpu_share),
            w.agent_rss_mib,
            w.agent_anon_mib
        );
    }
}
