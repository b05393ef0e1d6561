//! Counting copies of a workload: the invariant every fault test checks is that exactly one
//! copy runs, on the host the coordinator's record names, and that it keeps working there.

use std::process::{Child, Stdio};
use std::time::Duration;

use understudy_coordinator::workloads::{MigrationSummary, WorkloadRecord, WorkloadState};

use crate::cluster::Cluster;
use crate::numbers;
use crate::wait::eventually;

/// Counts in memory and prints every value every 10 ms; its argument (a marker) only
/// makes its processes easy to find.
pub const COUNTER: &str =
    "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n";

/// A marker to put in a workload's arguments.
pub fn marker(name: &str) -> String {
    format!("understudy-test-copy-{name}")
}

/// Creates a counter workload `name` on `host`, shadowed on `shadow`.
pub fn create_counter(c: &Cluster, name: &str, host: &str, shadow: &str, interval: &str) {
    create_python(c, name, (host, shadow), interval, COUNTER);
}

/// Starts `understudy workload create` for a counter `name` on `host`, shadowed on
/// `shadow` every 500 ms, without waiting for it: for the tests that act while the create
/// is in flight. Its output is piped, for `wait_with_output`.
pub fn spawn_create_counter(c: &Cluster, name: &str, host: &str, shadow: &str) -> Child {
    c.cli_command()
        .args(["workload", "create", name, "--host", host])
        .args(["--shadow", shadow, "--interval", "500ms", "--"])
        .args(["/usr/bin/python3", "-c", COUNTER, marker(name).as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy workload create starts")
}

/// Waits for a create started by [`spawn_create_counter`] and checks that the CLI settled it
/// from the hosts' reports and succeeded (not "failed", which is what a record left by a
/// lost answer said before); returns what it wrote on stderr. `what` heads the messages.
pub fn settled_create(create: Child, what: &str) -> String {
    let out = create.wait_with_output().expect("workload create ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what}: workload create: {stderr}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("settled from the hosts' reports"),
        "{what}: {stderr}"
    );
    stderr
}

/// Creates workload `name` running the Python `program` on `host`, shadowed on `shadow`,
/// its marker in its arguments.
pub fn create_python(
    c: &Cluster,
    name: &str,
    (host, shadow): (&str, &str),
    interval: &str,
    program: &str,
) {
    create_python_with(c, name, (host, shadow), interval, program, &[]);
}

/// Like [`create_python`], with `args` for the program (its `sys.argv[1..]`) before the
/// marker.
pub fn create_python_with(
    c: &Cluster,
    name: &str,
    (host, shadow): (&str, &str),
    interval: &str,
    program: &str,
    args: &[&str],
) {
    let m = marker(name);
    let mut all = vec![
        name,
        "--host",
        host,
        "--shadow",
        shadow,
        "--interval",
        interval,
        "--",
        "/usr/bin/python3",
        "-c",
        program,
    ];
    all.extend_from_slice(args);
    all.push(&m);
    c.create_workload(&all);
}

/// Waits until `name` has failed over to `to` and returns its record; while it has not,
/// says what a restored copy that did not come up wrote, to see why.
pub fn failed_over(c: &Cluster, name: &str, to: &str, within: Duration) -> WorkloadRecord {
    eventually(&format!("{name} fails over to {to}"), within, || {
        let w = c.workload(name)?;
        match (&w.state, &w.last_migration) {
            (WorkloadState::Running, Some(m)) if m.outcome == "failed over" && w.primary == to => {
                Ok(w)
            }
            other => {
                let said = c.output_log(to, name);
                let tail: String = said
                    .chars()
                    .skip(said.chars().count().saturating_sub(600))
                    .collect();
                Err(format!(
                    "{} on {}: {other:?}; its output on {to} ends: {tail}",
                    w.state.name(),
                    w.primary
                ))
            }
        }
    })
}

/// The last count `name`'s counter printed on `host` (0 before any).
pub fn last_count(c: &Cluster, host: &str, name: &str) -> u64 {
    numbers(&c.output_log(host, name))
        .last()
        .copied()
        .unwrap_or(0)
}

/// The one host among `hosts` that runs `name`; panics if none or several do.
pub fn the_one_copy(c: &Cluster, hosts: &[&str], name: &str) -> String {
    let on = c.running_on(hosts, &marker(name));
    assert_eq!(
        on.len(),
        1,
        "{name} runs on {on:?}, not on exactly one host\n{}",
        seen(c, hosts, name)
    );
    on[0].clone()
}

/// What each host shows of `name`: its processes with their states, and the last lines
/// of its output log there (the supervisor writes lease freezes and thaws into it).
pub fn seen(c: &Cluster, hosts: &[&str], name: &str) -> String {
    let mut out = String::new();
    for h in hosts {
        let procs: Vec<String> = c
            .processes(h, &marker(name))
            .into_iter()
            .map(|p| {
                format!(
                    "{p}:{}{}",
                    crate::cluster::proc_state(p).unwrap_or_default(),
                    tracer(p)
                )
            })
            .collect();
        let log = c.output_log(h, name);
        let tail: Vec<&str> = log.lines().rev().take(4).collect();
        out.push_str(&format!(
            "{h}: processes {procs:?}; output log ends {:?}\n",
            tail.into_iter().rev().collect::<Vec<_>>()
        ));
    }
    out
}

/// Waits (a few seconds at most: a copy frozen by its lease thaws at the next renewal)
/// until exactly one host among `hosts` runs `name`; returns it.
pub fn one_copy_soon(c: &Cluster, hosts: &[&str], name: &str) -> String {
    eventually(
        &format!("{name} runs on exactly one host"),
        Duration::from_secs(5),
        || {
            let on = c.running_on(hosts, &marker(name));
            if on.len() == 1 {
                Ok(on[0].clone())
            } else {
                Err(format!("{on:?}\n{}", seen(c, hosts, name)))
            }
        },
    )
}

/// Waits until the counter `name` logs on `host` beyond what it had logged, and returns
/// the last value.
pub fn advancing(c: &Cluster, host: &str, name: &str) -> u64 {
    let before = numbers(&c.output_log(host, name))
        .last()
        .copied()
        .unwrap_or(0);
    eventually(
        &format!("{name} counting on {host}"),
        Duration::from_secs(15),
        || {
            let now = numbers(&c.output_log(host, name))
                .last()
                .copied()
                .unwrap_or(0);
            if now > before + 5 {
                Ok(now)
            } else {
                Err(format!("last count {now}, was {before}"))
            }
        },
    )
}

/// Asserts that `name`'s log on `host` does not grow for `how_long`.
pub fn silent(c: &Cluster, host: &str, name: &str, how_long: Duration) {
    let before = c.output_log(host, name).len();
    std::thread::sleep(how_long);
    assert_eq!(
        c.output_log(host, name).len(),
        before,
        "{name} still prints on {host}"
    );
}

/// ` traced by PID (its command line)` when a process is being traced (CRIU seizes the
/// tasks it dumps).
fn tracer(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let by = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if by == 0 {
        return String::new();
    }
    let cmd = std::fs::read(format!("/proc/{by}/cmdline")).unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    format!(" traced by {by} ({})", cmd.trim())
}

/// The numbers workload `name` has logged on `host`, once there are at least 20 of them
/// (within 10 s).
pub fn counts_on(c: &Cluster, host: &str, name: &str) -> Vec<u64> {
    eventually(
        &format!("{name} logging counts on {host}"),
        Duration::from_secs(10),
        || {
            let n = numbers(&c.output_log(host, name));
            if n.len() >= 20 {
                Ok(n)
            } else {
                Err(format!("{} lines", n.len()))
            }
        },
    )
}

/// What `understudy migrate` says of a move that ended as `m` records: the hosts of one
/// that succeeded, or how one that did not ended.
pub fn told(m: &MigrationSummary) -> String {
    if m.outcome == "succeeded" {
        format!("from {} to {}", m.from, m.to)
    } else {
        m.outcome.clone()
    }
}
