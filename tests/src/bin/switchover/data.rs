//! `switchover --data [MIB]`: a workload owning a data directory (default 1024 MiB in
//! 4 MiB files of random content) that rewrites random 64 KiB blocks, 1 % of the directory
//! per epoch interval. Reports bytes sent per epoch against bytes changed, the share of the
//! freeze spent capturing the disk, the client-seen switchover freeze, and, in the same run,
//! `rsync -a --inplace` of the same directory from host-a to an rsync daemon on host-b as
//! the baseline for bytes and time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use understudy_tests::wait::eventually;
use understudy_tests::ChildGuard;

use super::{echoing_workload, started_cluster, Prober, PORT};

const FILE_MIB: usize = 4;
const CHANGE_SHARE: f64 = 0.01;
const INTERVAL_S: f64 = 2.0;
const RSYNC_PORT: u16 = 8730;

fn workload_script() -> String {
    echoing_workload(
        &format!(
            "root = sys.argv[1]\n\
             fds = [os.open(os.path.join(root, n), os.O_RDWR) for n in sorted(os.listdir(root))]\n\
             size = os.fstat(fds[0]).st_size\n\
             rate = size * len(fds) * {CHANGE_SHARE} / {INTERVAL_S}"
        ),
        "65536",
        "        os.pwrite(random.choice(fds), os.urandom(65536), random.randrange(size // 65536) * 65536)",
    )
}

/// Fills `dir` with `mib` MiB of incompressible files.
fn fill(dir: &Path, mib: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; FILE_MIB << 20];
    for i in 0..mib / FILE_MIB {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        std::fs::write(dir.join(format!("f{i:04}")), &buf).unwrap();
    }
}

fn stat(text: &str, label: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|n| n.replace(',', "").parse().unwrap_or(0.0))
        .unwrap_or(0.0)
}

/// Runs the data-directory benchmark.
pub fn run(mib: usize) {
    let c = started_cluster();
    let logical = c.logical_dir("bench");
    let on_a = c.data_path("host-a", &logical);
    let t = Instant::now();
    fill(&on_a, mib);
    println!(
        "{mib} MiB data directory ({} files of {FILE_MIB} MiB) written in {:.1} s; the workload rewrites {:.0}% of it per {INTERVAL_S} s epoch interval in random 64 KiB blocks",
        mib / FILE_MIB,
        t.elapsed().as_secs_f64(),
        CHANGE_SHARE * 100.0
    );
    let l = logical.to_str().unwrap();
    let script = workload_script();
    let out = c.cli(&[
        "workload",
        "create",
        "data",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "2s",
        "--data-dir",
        l,
        "--",
        "/usr/bin/python3",
        "-c",
        &script,
        l,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = std::collections::BTreeMap::new();
    eventually("6 epochs", Duration::from_secs(900), || {
        let w = c.workload("data")?;
        if let Some(e) = w.last_epoch {
            seen.insert(e.epoch, e);
        }
        if seen.len() >= 6 {
            Ok(())
        } else {
            Err(format!("{} epochs; {:?}", seen.len(), w.unprotected))
        }
    });
    let first = seen.values().next().unwrap().clone();
    let steady: Vec<_> = seen.values().skip(2).collect();
    let n = steady.len() as f64;
    let avg = |f: &dyn Fn(&understudy_common::workload::EpochReport) -> u64| {
        steady.iter().map(|e| f(e) as f64).sum::<f64>() / n
    };
    let mb = |b: f64| b / (1024.0 * 1024.0);
    let (changed, sent) = (avg(&|e| e.data_changed), avg(&|e| e.data_sent));
    let (frozen, disk) = (avg(&|e| e.frozen_ms), avg(&|e| e.frozen_disk_ms));
    println!(
        "  first epoch (whole): {:.0} MiB of data sent, frozen {} ms of which {} ms disk capture",
        mb(first.data_sent as f64),
        first.frozen_ms,
        first.frozen_disk_ms
    );
    println!(
        "  ours, steady state over {n} epochs: data changed {:.2} MiB/epoch, data sent {:.2} MiB/epoch, sent/changed {:.3}; frozen {frozen:.0} ms/epoch of which disk capture {disk:.0} ms ({:.0}%); transfer {:.0} ms/epoch; agent CPU {:.0} ms/epoch",
        mb(changed),
        mb(sent),
        sent / changed.max(1.0),
        100.0 * disk / frozen.max(1.0),
        avg(&|e| e.transfer_ms),
        avg(&|e| e.cpu_ms),
    );

    // Baseline: rsync -a --inplace of the same directory to a daemon on host-b.
    let (ha, hb) = (c.host("host-a").clone(), c.host("host-b").clone());
    let target = c.host_dir("host-b").join("rsync-target");
    std::fs::create_dir_all(&target).unwrap();
    let conf = c.host_dir("host-b").join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "uid = root\ngid = root\nuse chroot = no\n[bench]\npath = {}\nread only = false\n",
            target.display()
        ),
    )
    .unwrap();
    let _daemon = ChildGuard(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", hb.netns))
            .args([
                "rsync",
                "--daemon",
                "--no-detach",
                "--port",
                &RSYNC_PORT.to_string(),
            ])
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let dest = format!("rsync://{}:{RSYNC_PORT}/bench/", hb.addr);
    let rsync = || {
        let t = Instant::now();
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ha.netns))
            .args(["rsync", "-a", "--inplace", "--stats"])
            .arg(format!("{}/", on_a.display()))
            .arg(&dest)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "rsync: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            t.elapsed(),
            stat(&text, "Total bytes sent:"),
            stat(&text, "Literal data:"),
        )
    };
    let (seed_time, seed_sent, _) = rsync();
    println!(
        "  rsync seed (whole directory): {:.0} MiB sent in {} ms",
        mb(seed_sent),
        seed_time.as_millis()
    );
    let mut runs = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs_f64(INTERVAL_S));
        runs.push(rsync());
    }
    let k = runs.len() as f64;
    let r_time = runs.iter().map(|r| r.0.as_secs_f64()).sum::<f64>() / k;
    let r_sent = runs.iter().map(|r| r.1).sum::<f64>() / k;
    let r_lit = runs.iter().map(|r| r.2).sum::<f64>() / k;
    println!(
        "  rsync -a --inplace, every {INTERVAL_S} s ({} runs): {:.2} MiB sent/run, literal {:.2} MiB/run, sent/literal {:.3}, {:.0} ms/run",
        runs.len(),
        mb(r_sent),
        mb(r_lit),
        r_sent / r_lit.max(1.0),
        r_time * 1000.0
    );

    let a = SocketAddr::from((ha.addr, PORT));
    let b = SocketAddr::from((hb.addr, PORT));
    let prober = Prober::start(a, b);
    std::thread::sleep(Duration::from_millis(300));
    let out = c.cli(&["migrate", "data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(500));
    let freeze = prober.freeze().expect("no answers around the switchover");
    println!(
        "  switchover: {}; client-seen freeze {} ms",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
        freeze.as_millis()
    );
    if let Ok(dir) = std::env::var("SWITCHOVER_LOGS") {
        for host in ["host-a", "host-b"] {
            std::fs::write(Path::new(&dir).join(format!("{host}.log")), c.log(host)).unwrap();
        }
    }
    println!();
    println!("| data dir | changed/epoch | sent/epoch | sent/changed | frozen/epoch | disk capture share | transfer/epoch | rsync sent/run | rsync literal/run | rsync time/run | switchover freeze |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {mib} MiB | {:.2} MiB | {:.2} MiB | {:.3} | {frozen:.0} ms | {:.0}% ({disk:.0} ms) | {:.0} ms | {:.2} MiB | {:.2} MiB | {:.0} ms | {} ms |",
        mb(changed),
        mb(sent),
        sent / changed.max(1.0),
        100.0 * disk / frozen.max(1.0),
        avg(&|e| e.transfer_ms),
        mb(r_sent),
        mb(r_lit),
        r_time * 1000.0,
        freeze.as_millis()
    );
}
