//! Every workload runs under its own supervisor, process 1 of its PID namespace: the
//! command runs as the spec's user, a command that cannot run here is refused at create,
//! a delete stops it as a service manager would, its output no longer depends on the
//! agent (it outlives the agent; a full disk drops lines instead of killing it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use understudy_tests::cluster::Cluster;
use understudy_tests::copies::{advancing, create_counter, marker, the_one_copy};
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

/// `/proc/PID/status` field `key` (its first value).
fn status_field(pid: u32, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
}

fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

#[test]
fn the_command_runs_as_the_specs_user_under_a_root_supervisor() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let m = marker("as-nobody");
    c.create_workload(&[
        "as-nobody",
        "--host",
        "host-a",
        "--interval",
        "1h",
        "--user",
        "nobody",
        "--",
        "/bin/sh",
        "-c",
        "sleep 3600; true",
        &m,
    ]);
    let (supervisor, service) = eventually("it runs", Duration::from_secs(10), || {
        let pids = c.processes("host-a", &m);
        let supervisor: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| cmdline(*p).split(' ').nth(1) == Some("supervise"))
            .collect();
        let service: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| cmdline(*p).starts_with("/bin/sh"))
            .collect();
        if supervisor.len() == 1 && service.len() == 1 {
            Ok((supervisor, service))
        } else {
            Err(format!("{pids:?}"))
        }
    });
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
    assert_eq!(status_field(supervisor[0], "Uid").as_deref(), Some("0"));
    let nspid = std::fs::read_to_string(format!("/proc/{}/status", supervisor[0]))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:").map(str::to_owned))
        .unwrap();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "the supervisor is process 1 of the workload's namespace"
    );
    assert_eq!(status_field(service[0], "Uid"), Some(nobody.clone()));
    let groups = std::fs::read_to_string(format!("/proc/{}/status", service[0])).unwrap();
    assert!(
        !groups
            .lines()
            .any(|l| l.starts_with("Groups:") && l.split_whitespace().any(|g| g == "0")),
        "no root group left: {groups}"
    );
    let shown = c.cli(&["workload", "show", "as-nobody"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("user:           nobody"));
}

#[test]
fn a_command_that_cannot_run_here_is_refused_at_create_with_the_reason() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let plain = c.host_dir("host-a").join("plain-file");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for (name, extra, argv, why) in [
        (
            "missing",
            vec![],
            vec!["/usr/bin/no-such-server"],
            "No such file",
        ),
        (
            "not-exec",
            vec![],
            vec![plain.to_str().unwrap()],
            "not executable",
        ),
        (
            "nowhere",
            vec![],
            vec!["no-such-program-here"],
            "not found on this host's PATH",
        ),
        (
            "stranger",
            vec!["--user", "no-such-user-here"],
            vec!["/bin/true"],
            "does not exist",
        ),
    ] {
        let mut args = vec!["workload", "create", name, "--host", "host-a"];
        args.extend(extra);
        args.push("--");
        args.extend(argv);
        let out = c.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(65), "{name}: {err}");
        assert!(err.contains(why), "{name}: {err}");
        assert!(c.workload(name).is_err(), "{name} was recorded");
    }
}

#[test]
fn a_delete_stops_the_service_as_a_service_manager_would() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    // Traps the stop signal and says goodbye.
    c.create_workload(&[
        "polite",
        "--host",
        "host-a",
        "--interval",
        "1h",
        "--",
        "/bin/sh",
        "-c",
        "trap 'echo cleaned up; exit 0' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    eventually("it started", Duration::from_secs(10), || {
        if c.output_log("host-a", "polite").contains("started") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    let out = c.cli(&["workload", "delete", "polite"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = c.output_log("host-a", "polite");
    assert!(
        log.contains("cleaned up"),
        "its last words reached the log: {log}"
    );
    // Ignores SIGINT (its stop signal): killed once its stop timeout has passed.
    let m = marker("stubborn");
    c.create_workload(&[
        "stubborn",
        "--host",
        "host-a",
        "--interval",
        "1h",
        "--stop-signal",
        "SIGINT",
        "--stop-timeout",
        "1s",
        "--",
        "/bin/sh",
        "-c",
        "trap '' INT; while :; do sleep 0.1; done",
        &m,
    ]);
    eventually("it runs", Duration::from_secs(10), || {
        if c.processes("host-a", &m).is_empty() {
            Err("not yet".into())
        } else {
            Ok(())
        }
    });
    let started = Instant::now();
    let out = c.cli(&["workload", "delete", "stubborn"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the stop timeout was given"
    );
    assert!(c.processes("host-a", &m).is_empty(), "killed after it");
}

#[test]
fn a_workload_that_prints_outlives_its_agent_and_is_taken_back() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started(&["host-a", "host-b"]);
    create_counter(&c, "talker", "host-a", "host-b", "500ms");
    c.wait_for_epochs("talker", 1);
    c.kill("host-a");
    // Nobody reads a pipe for it any more: its supervisor writes its log.
    let last = advancing(&c, "host-a", "talker");
    let before = c.workload("talker").unwrap().epochs;
    c.start_agent("host-a");
    advancing(&c, "host-a", "talker");
    // Taken back: protected again.
    c.wait_for_epochs("talker", before + 2);
    assert_eq!(the_one_copy(&c, &["host-a", "host-b"], "talker"), "host-a");
    let counts = numbers(&c.output_log("host-a", "talker"));
    let from = counts.iter().position(|n| *n == last).unwrap();
    assert!(
        counts[from..].windows(2).all(|w| w[1] == w[0] + 1),
        "no count lost or repeated while the agent was away"
    );
}

/// A small tmpfs mounted at a path, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs at {}", at.display());
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Prints a count and 200 more bytes every 10 ms.
const WIDE: &str =
    "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, 'x' * 200, flush=True)\n    time.sleep(0.01)\n";

/// The counts at the start of `text`'s lines.
fn counts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn output_that_a_full_disk_cannot_take_is_dropped_and_counted_and_the_service_runs_on() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let dir = c.host_dir("host-a").join("data/workloads/chatty");
    let _disk = SmallDisk::mount(&dir, "1m");
    let m = marker("chatty");
    c.create_workload(&[
        "chatty",
        "--host",
        "host-a",
        "--interval",
        "1h",
        "--",
        "/usr/bin/python3",
        "-c",
        WIDE,
        &m,
    ]);
    eventually("it prints", Duration::from_secs(10), || {
        let n = counts(&c.output_log("host-a", "chatty")).len();
        if n > 20 {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    });
    // Fill the disk: the log takes what is left of its last page, then nothing.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", dir.join("filler").display()))
        .output()
        .unwrap();
    eventually("the log stops growing", Duration::from_secs(10), || {
        let before = c.output_log("host-a", "chatty").len();
        std::thread::sleep(Duration::from_millis(500));
        let after = c.output_log("host-a", "chatty").len();
        if before == after {
            Ok(())
        } else {
            Err(format!("{before} -> {after}"))
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let service = c
        .processes("host-a", &m)
        .into_iter()
        .filter(|p| cmdline(*p).starts_with("/usr/bin/python3"))
        .count();
    assert_eq!(service, 1, "the service runs on");
    std::fs::remove_file(dir.join("filler")).unwrap();
    let text = eventually(
        "output resumes and says what was lost",
        Duration::from_secs(10),
        || {
            let log = c.output_log("host-a", "chatty");
            if log.contains("of output were dropped: No space left on device") {
                Ok(log)
            } else {
                Err(format!("{} bytes", log.len()))
            }
        },
    );
    let note = text
        .lines()
        .find(|l| l.contains("were dropped"))
        .unwrap()
        .to_owned();
    assert!(
        note.starts_with("[understudy] "),
        "the note has a line of its own: {note}"
    );
    let lost: u64 = note
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!(lost >= 100, "a second or more of lines: {note}");
    // The count kept going while its output was lost: no blocking, no restart.
    let (before, after) = text.split_once(&note).unwrap();
    let (before, after) = (counts(before), counts(after));
    assert!(
        after[0] >= before.last().unwrap() + lost - 2,
        "{note}: counts {:?} then {:?}",
        before.last(),
        after.first()
    );
    let _ = c.cli(&["workload", "delete", "chatty"]);
}

#[test]
fn a_command_probe_runs_inside_the_workloads_namespaces_as_its_user() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let m = marker("probed");
    // Somewhere the probe (as nobody) may write what it saw.
    let seen = tempfile::Builder::new()
        .prefix("understudy-probe-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        seen.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = seen.path().join("seen");
    let spec = seen.path().join("probed.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "probed"
command = ["/bin/sh", "-c", "sleep 3600; true", "{m}"]
host = "host-a"
interval = "1h"
user = "nobody"
[probe]
command = ["/bin/sh", "-c", "echo $(id -u) $(readlink /proc/self/ns/pid) $(readlink /proc/self/ns/mnt) > {out}.new && mv {out}.new {out}"]
"#,
            out = out.display()
        ),
    )
    .unwrap();
    let created = c.cli(&["workload", "create", "--spec", spec.to_str().unwrap()]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let service = eventually("it runs", Duration::from_secs(10), || {
        let pids: Vec<u32> = c
            .processes("host-a", &m)
            .into_iter()
            .filter(|p| cmdline(*p).starts_with("/bin/sh"))
            .collect();
        pids.first().copied().ok_or_else(|| "not yet".to_string())
    });
    let line = eventually("the probe ran", Duration::from_secs(20), || {
        std::fs::read_to_string(&out).map_err(|e| e.to_string())
    });
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/{service}/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields, [nobody.as_str(), &ns("pid"), &ns("mnt")], "{line}");
    // ... which is not where the agent itself runs.
    let agent = c.pid("host-a").unwrap();
    let agent_pid_ns = std::fs::read_link(format!("/proc/{agent}/ns/pid")).unwrap();
    assert_ne!(agent_pid_ns.display().to_string(), ns("pid"));
}
