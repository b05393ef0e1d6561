//! Checkpoints encrypted at rest: a workload holds a 128-byte secret in memory (made inside
//! the process, so it is in no command line, spec or log); the shadow's disk never shows
//! it, yet the workload comes back with it — after a switchover and after a failover — and
//! keeps counting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::{Cluster, FAILOVER_AFTER};
use understudy_tests::copies::{advancing, create_python, last_count, marker, the_one_copy};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

/// Builds its secret from a seed (the same the test computes), keeps it, and counts.
const SECRET_KEEPER: &str = "import hashlib, time\n\
secret = (hashlib.sha256(b'understudy-seal-test').hexdigest() * 2).encode()\n\
n = 0\n\
while True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n";

fn secret() -> Vec<u8> {
    let hex: String = sha256_hex(b"understudy-seal-test");
    format!("{hex}{hex}").into_bytes()
}

/// SHA-256 in hex, by the system's `sha256sum` (the test crate has no hash of its own).
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether the writable memory of process `pid` holds `needle`.
fn in_memory(pid: u32, needle: &[u8]) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let Ok(mut mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok()
            && mem.read_exact(&mut buf).is_ok()
            && contains(&buf, needle)
        {
            return true;
        }
    }
    false
}

/// The workload process of `name` on `host` (its python, not the supervisor).
fn workload_pid(c: &Cluster, host: &str, name: &str) -> u32 {
    eventually("the workload's process", Duration::from_secs(10), || {
        c.processes(host, &marker(name))
            .into_iter()
            .find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .starts_with(b"/usr/bin/python3")
            })
            .ok_or_else(|| format!("no process of {name} on {host}"))
    })
}

/// Every regular file under `dir` holding `needle`, and how many bytes were searched.
fn files_holding(dir: &Path, needle: &[u8]) -> (Vec<String>, u64) {
    let mut found = Vec::new();
    let mut searched = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                searched += bytes.len() as u64;
                if contains(&bytes, needle) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    (found, searched)
}

/// The shadow epochs of `name` on `host` hold none of the secret, and do hold memory
/// images (so the search had something to search).
fn shadow_shows_nothing(c: &Cluster, host: &str, name: &str, whole_data_dir: bool) {
    let epochs = c
        .host_dir(host)
        .join(format!("data/workloads/{name}/shadow"));
    let images = files_holding(&epochs, b"").1;
    assert!(
        images > 64 * 1024,
        "only {images} bytes of epochs on {host}"
    );
    let dir = if whole_data_dir {
        c.host_dir(host).join("data")
    } else {
        epochs
    };
    let (found, searched) = files_holding(&dir, &secret());
    assert!(
        found.is_empty(),
        "the secret is readable on {host}'s disk in {found:?}"
    );
    eprintln!("{host}: {searched} bytes searched, secret in none");
}

#[test]
fn the_shadow_s_disk_never_shows_the_workload_s_memory_which_comes_back_after_a_move_and_a_failover(
) {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b", "host-c"];
    let c = Cluster::started(&hosts);
    let name = "keeper";
    create_python(&c, name, ("host-a", "host-b"), "500ms", SECRET_KEEPER);
    let secret = secret();
    assert_eq!(secret.len(), 128);
    // The secret is in the process's memory (so an unsealed page image would show it).
    let pid = workload_pid(&c, "host-a", name);
    // The agent runs with its unit's allocator settings; its workloads do not inherit them.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !understudy_tests::cluster::unit_environment().is_empty()
            && !environ
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(b"GLIBC_TUNABLES=")),
        "the workload inherited the agent's GLIBC_TUNABLES"
    );
    eventually("the secret is in memory", Duration::from_secs(10), || {
        in_memory(pid, &secret)
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    });
    c.wait_for_epochs(name, 3);
    // host-b has only ever been the shadow: nothing of its data directory shows it.
    shadow_shows_nothing(&c, "host-b", name, true);

    // A switchover: host-b restores the sealed epoch with the key its order brought.
    let out = c.cli(&["migrate", name, "--to", "host-b"]);
    assert!(
        out.status.success(),
        "migrate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let before = last_count(&c, "host-a", name);
    advancing(&c, "host-b", name);
    let after = numbers(&c.output_log("host-b", name));
    assert!(
        after.first().copied().unwrap_or(0) >= before.saturating_sub(1),
        "host-b went on from {:?}, host-a had reached {before}",
        after.first()
    );
    assert!(
        in_memory(workload_pid(&c, "host-b", name), &secret),
        "the restored copy lost its secret"
    );
    assert_eq!(the_one_copy(&c, &hosts, name), "host-b");
    // Its new shadow (host-c, never a primary) receives sealed epochs too.
    let w = c.wait_for_epochs(name, c.workload(name).unwrap().epochs + 2);
    let shadow = w.shadow.clone().unwrap();
    assert_ne!(shadow, "host-b");
    shadow_shows_nothing(&c, &shadow, name, shadow == "host-c");

    // A failover: host-b is lost, the shadow restores the last sealed epoch.
    let floor = last_count(&c, "host-b", name);
    let logged = c.output_log(&shadow, name).len();
    c.kill_host("host-b");
    let w = eventually(
        "it fails over to the shadow",
        FAILOVER_AFTER + Duration::from_secs(40),
        || {
            let w = c.workload(name)?;
            match (&w.state, &w.last_migration) {
                (WorkloadState::Running, Some(l))
                    if l.outcome == "failed over" && w.primary == shadow =>
                {
                    Ok(w)
                }
                other => Err(format!("{} on {}: {other:?}", w.state.name(), w.primary)),
            }
        },
    );
    assert_eq!(w.primary, shadow);
    advancing(&c, &shadow, name);
    assert!(
        in_memory(workload_pid(&c, &shadow, name), &secret),
        "the failed-over copy lost its secret"
    );
    let log = c.output_log(&shadow, name);
    let resumed = numbers(log.get(logged..).unwrap_or_default());
    // The last epoch is at most an interval (50 counts) and a dump behind.
    assert!(
        resumed.first().copied().unwrap_or(0) + 200 >= floor,
        "{shadow} went on from {:?}, host-b had reached {floor}",
        resumed.first()
    );
    assert_eq!(the_one_copy(&c, &["host-a", "host-c"], name), shadow);
}
