//! Real services that drop privileges, protected and moved between two VMs with a stock
//! Debian kernel and full root (what this machine's sandbox lacks), with Debian's own
//! packages: memcached started with `-u memcache` holding 20,000 items, moved and moved
//! back with every item; PostgreSQL run as the postgres user over a data directory, moved
//! while a client commits one row per transaction, with every committed row there
//! afterwards and the server taking writes; a workload run as `nobody`, checkpointed and
//! moved. The agent is the .deb, installed and run by its systemd unit; a started and a
//! restored workload each run in their own systemd scope, and the counter runs on untouched
//! through `systemctl kill -s SIGKILL` of the agent's unit and a `dpkg -i` upgrade of the
//! agent package. The freeze times are printed for docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use understudy_coordinator::workloads::{WorkloadRecord, WorkloadState};
use understudy_tests::require_vm;
use understudy_tests::vm::install::Settings;
use understudy_tests::vm::VmPair;
use understudy_tests::wait::eventually;

const A: usize = 0;
const B: usize = 1;

/// What the operator writes into the configs: the coordinator on vm-a, an agent on each VM.
fn settings() -> Settings {
    Settings {
        coordinator: "[quic]\nlisten = \"0.0.0.0:7440\"\n[http]\nlisten = \"0.0.0.0:7441\"\n\
             [tls]\nca = \"/etc/understudy/tls/ca.crt\"\ncert = \"/etc/understudy/tls/coordinator.crt\"\nkey = \"/etc/understudy/tls/coordinator.key\"\n\
             [store]\npath = \"/var/lib/understudy/coordinator.redb\"\n[heartbeat]\ninterval = \"1s\"\ntimeout = \"30s\"\n\
             [failover]\nfence_after = \"60s\"\nfailover_after = \"150s\"\n"
            .to_owned(),
        // The VMs are emulated, so a dump freezes a workload about ten times as long as on
        // hardware: at the default 5 % freeze budget their epochs would come minutes apart.
        // No [criu] binary: the agent uses the one provision-criu.sh chose.
        agent: |_, coord_ip| {
            format!(
                "[agent]\ndata_dir = \"/var/lib/understudy-agent\"\n[coordinator]\naddresses = [\"{coord_ip}:7440\"]\n\
                 [tls]\nca = \"/etc/understudy/tls/ca.crt\"\ncert = \"/etc/understudy/tls/agent.crt\"\nkey = \"/etc/understudy/tls/agent.key\"\n\
                 [workload_data]\nallowed_roots = [\"/srv\"]\nhost_root = \"/\"\n\
                 [models]\nwarmup_samples = 3\n[probes]\ninterval = \"2s\"\n\
                 [epochs]\nfreeze_budget_percent = 50\n"
            )
        },
    }
}

/// Installs both packages as docs/install.md says and starts the cluster (coordinator on
/// vm-a, an agent on each); then a bad key in each config fails its unit once. Returns
/// the install-to-healthy time and what CRIU each VM got.
fn start_cluster(vms: &VmPair) -> (Duration, Vec<String>) {
    let installed = vms.install_as_documented(
        &settings(),
        "RUST_LOG=info,understudy_agent::life::epoch=debug",
    );
    for said in &installed.criu {
        assert!(
            said.contains("criu 3.17") && said.contains("the system's"),
            "on Debian 12's kernel the distribution's CRIU is chosen, offline: {said}"
        );
    }
    vms.bad_key_fails_once(B, "understudy-agent", "/etc/understudy/agent.toml");
    vms.bad_key_fails_once(
        A,
        "understudy-coordinator",
        "/etc/understudy/coordinator.toml",
    );
    eventually(
        "both agents connected again",
        Duration::from_secs(120),
        || {
            let hosts = cli(vms, "hosts");
            if hosts.matches(" connected ").count() == 2 {
                Ok(())
            } else {
                Err(hosts)
            }
        },
    );
    (installed.to_healthy, installed.criu)
}

/// The operator CLI, run in vm-a against the coordinator; must succeed.
fn cli(vms: &VmPair, args: &str) -> String {
    vms.cli(args)
}

fn workload(vms: &VmPair, name: &str) -> WorkloadRecord {
    serde_json::from_str(&cli(vms, &format!("workload show {name} --output json"))).unwrap()
}

fn wait_epochs(vms: &VmPair, name: &str, at_least: u64) {
    // Why a workload failed is in the agents' journals: kept for the failure message.
    let journals = std::cell::RefCell::new(String::new());
    eventually(
        &format!("{name}: epochs committed"),
        Duration::from_secs(300),
        || {
            let w = workload(vms, name);
            if w.epochs >= at_least && w.last_epoch.is_some() {
                Ok(())
            } else {
                if matches!(w.state, WorkloadState::Failed(_)) && journals.borrow().is_empty() {
                    for i in [A, B] {
                        let j = vms.run(
                            i,
                            "journalctl -u understudy-agent --no-pager -n 60 -o short-precise || true",
                        );
                        journals
                            .borrow_mut()
                            .push_str(&format!("\n--- {} agent journal ---\n{j}", vms.vms[i].name));
                    }
                }
                Err(format!(
                    "{} epochs, {:?}, {:?}{}",
                    w.epochs,
                    w.state,
                    w.unprotected,
                    journals.borrow()
                ))
            }
        },
    );
}

/// Moves `name` and returns its freeze in ms.
fn migrate(vms: &VmPair, name: &str, to: &str) -> u64 {
    let started = Instant::now();
    let out = cli(vms, &format!("migrate {name}"));
    let w = workload(vms, name);
    assert_eq!(w.primary, to, "{out}");
    assert_eq!(w.state, WorkloadState::Running);
    let m = w.last_migration.unwrap();
    assert_eq!(m.outcome, "succeeded", "{m:?}");
    eprintln!(
        "{name}: moved to {to} in {:.1} s, frozen {:?} ms",
        started.elapsed().as_secs_f64(),
        m.freeze_ms
    );
    m.freeze_ms.unwrap()
}

/// The user running processes named `comm` in VM `i` (empty if none).
fn users_of(vms: &VmPair, i: usize, comm: &str) -> Vec<String> {
    let out = vms.ssh(i, &format!("ps -o user= -C {comm}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// How long each disruption of the agents and the coordinator took to be over.
#[derive(Debug)]
struct Disruptions {
    /// vm-b's agent back after SIGKILL (s).
    killed: f64,
    /// vm-b's agent back after SIGSTOP, restarted by systemd's watchdog (s).
    hung: f64,
    /// vm-b's agent back after `dpkg -i` of a newer package (s).
    agent_upgraded: f64,
    /// The coordinator back after `dpkg -i` of a newer package on vm-a (s).
    coordinator_upgraded: f64,
}

/// While the counter runs on vm-b: its agent killed with SIGKILL (everything in its unit,
/// as `systemctl kill` does); hung with SIGSTOP until systemd's watchdog kills and restarts
/// it; upgraded with `dpkg -i` of a newer package; then the coordinator's package upgraded
/// on vm-a (its postinst restarts it). Throughout, the same process counts on without a
/// gap or a freeze, in its own scope, its output reaching its log, exactly once (no copy
/// on vm-a); it is re-adopted and its next epochs commit; the coordinator comes back with
/// its record, one continuous history: no new generation, no move.
fn disruptions(vms: &VmPair) -> Disruptions {
    let log = "/var/lib/understudy-agent/workloads/counter/output.log";
    let counter = || vms.run(B, "pgrep -u nobody -x sh").trim().to_owned();
    let agent = "understudy-agent";
    let pid = counter();
    let cg = vms.run(B, &format!("cat /proc/{pid}/cgroup"));
    assert!(
        cg.contains("/understudy.slice/understudy-counter.scope"),
        "a restored workload runs in its own scope: {cg}"
    );
    let before = workload(vms, "counter");
    let from_line: u64 = vms
        .run(B, &format!("wc -l < {log}"))
        .trim()
        .parse()
        .unwrap();

    let old = vms.unit_property(B, agent, "MainPID");
    vms.run(B, "systemctl kill --signal=SIGKILL understudy-agent");
    let killed = vms.unit_back(B, agent, &old).as_secs_f64();
    wait_epochs(vms, "counter", before.epochs + 2);

    let hung = vms.hung_agent_restarted_by_watchdog(B).as_secs_f64();
    let mid = workload(vms, "counter");
    wait_epochs(vms, "counter", mid.epochs + 2);

    let newer = vms.newer_package(&name_in_share("understudy-agent_"));
    let old = vms.unit_property(B, agent, "MainPID");
    let t = Instant::now();
    vms.upgrade(B, agent, &newer);
    let agent_upgraded = (t.elapsed() + vms.unit_back(B, agent, &old)).as_secs_f64();
    let mid = workload(vms, "counter");
    wait_epochs(vms, "counter", mid.epochs + 2);

    let newer = vms.newer_package(&name_in_share("understudy_"));
    let coordinator = "understudy-coordinator";
    let old = vms.unit_property(A, coordinator, "MainPID");
    let t = Instant::now();
    vms.upgrade(A, "understudy", &newer);
    let coordinator_upgraded = (t.elapsed() + vms.unit_back(A, coordinator, &old)).as_secs_f64();
    let mid = workload(vms, "counter");
    wait_epochs(vms, "counter", mid.epochs + 2);

    assert_eq!(counter(), pid, "the same process counted throughout");
    assert!(
        !vms.ssh(A, "pgrep -u nobody -x sh").status.success(),
        "no second copy on vm-a"
    );
    let after = workload(vms, "counter");
    assert_eq!(after.primary, "vm-b");
    assert_eq!(after.state, WorkloadState::Running);
    assert_eq!(after.generation, before.generation, "no new generation");
    assert_eq!(
        format!("{:?}", after.last_migration),
        format!("{:?}", before.last_migration),
        "no migration in between"
    );
    assert!(
        after.epochs >= before.epochs + 8,
        "{} -> {}",
        before.epochs,
        after.epochs
    );
    let text = vms.run(B, &format!("tail -n +{from_line} {log}"));
    assert!(!text.contains("lease expired"), "the counter froze: {text}");
    let counts: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        counts.len() > 50,
        "counting went on: {} lines",
        counts.len()
    );
    let gaps: Vec<_> = counts.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(gaps.is_empty(), "counts missing from output.log: {gaps:?}");
    let journal = vms.run(B, "journalctl -u understudy-agent --no-pager -o cat");
    assert!(
        !journal.contains("left-over process"),
        "the agent's unit holds only the agent: {journal}"
    );
    Disruptions {
        killed,
        hung,
        agent_upgraded,
        coordinator_upgraded,
    }
}

/// The name of the package file starting with `prefix` that the install copied into the
/// share.
fn name_in_share(prefix: &str) -> String {
    let (agent, coord) = understudy_tests::vm::install::package_files();
    let deb = if prefix.starts_with("understudy-agent") {
        agent
    } else {
        coord
    };
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(prefix), "{name}");
    name
}

/// Removing the agent package from vm-b while the counter runs there: the removal names
/// it; the coordinator records the agent's departure and shows it unprotected. Purging
/// leaves exactly what docs/install.md says: the operator's keys and certificates. Then
/// the coordinator's package purged on vm-a: its store goes, its user and the keys stay.
fn remove_and_purge(vms: &VmPair) {
    let removed = vms.remove_then_purge(B, "understudy-agent");
    assert!(
        removed.contains("WARNING: workloads still run on this host: counter"),
        "{removed}"
    );
    assert!(
        vms.ssh(B, "pgrep -u nobody -x sh").status.success(),
        "removing the agent does not kill its workloads"
    );
    let events = cli(vms, "events --host vm-b");
    assert!(
        events.contains("vm-b's agent stopped") && events.contains("counter"),
        "{events}"
    );
    let show = cli(vms, "workload show counter");
    assert!(show.contains("primary unreachable"), "{show}");
    let left = vms.files_under(
        B,
        &[
            "/etc/understudy",
            "/var/lib/understudy-agent",
            "/var/cache/understudy",
            "/usr/share/understudy",
            "/usr/bin/understudy-agent",
        ],
    );
    assert_eq!(
        left,
        [
            "/etc/understudy/",
            "/etc/understudy/tls/",
            "/etc/understudy/tls/agent.crt",
            "/etc/understudy/tls/agent.key",
            "/etc/understudy/tls/ca.crt",
        ],
        "after purging the agent"
    );
    vms.remove_then_purge(A, "understudy");
    let left = vms.files_under(A, &["/var/lib/understudy", "/etc/understudy"]);
    assert_eq!(
        left,
        [
            "/etc/understudy/",
            "/etc/understudy/agent.toml",
            "/etc/understudy/tls/",
            "/etc/understudy/tls/agent.crt",
            "/etc/understudy/tls/agent.key",
            "/etc/understudy/tls/ca.crt",
            // The CA key the operator gave the coordinator to sign joins with: theirs.
            "/etc/understudy/tls/ca.key",
            "/etc/understudy/tls/coordinator.crt",
            "/etc/understudy/tls/coordinator.key",
        ],
        "after purging the coordinator (the agent's package is still installed on vm-a)"
    );
    assert!(
        vms.ssh(A, "getent passwd understudy").status.success(),
        "the system user stays"
    );
}

const MEMCACHED_CLIENT: &str = r#"
import socket, sys
mode, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, 11211), timeout=30)
f = s.makefile("rb")
if mode == "set":
    batch = b"".join(b"set key%d 0 0 %d noreply\r\n%s\r\n" % (i, len(b"value-%d" % i), b"value-%d" % i) for i in range(n))
    s.sendall(batch + b"version\r\n")
    assert f.readline().startswith(b"VERSION")
    print(n)
else:
    good = 0
    for start in range(0, n, 100):
        keys = [b"key%d" % i for i in range(start, min(n, start + 100))]
        s.sendall(b"get " + b" ".join(keys) + b"\r\n")
        while True:
            line = f.readline()
            if line == b"END\r\n":
                break
            _, key, _, _ = line.split()
            value = f.readline().rstrip(b"\r\n")
            if value == b"value-%s" % key[3:]:
                good += 1
    print(good)
"#;

/// A workload of `MIB` MiB that keeps writing a hot set of 1 % of its pages (a 64-bit tick
/// in each, mirrored in a ledger) ten times a second, the hot set moving on every 100 ticks;
/// every 20 ticks it checks each page against the ledger and says so, so pages from
/// different instants (a chain made whole wrongly) show as a mismatch. Its memory is
/// private (CRIU cannot track writes to shared anonymous memory: it dumps it whole every
/// time) and opts out of transparent huge pages, as databases advise (the kernel tracks
/// writes to a huge page for all its 2 MiB).
const MEM_WORKLOAD: &str = r#"
import array, mmap, sys, time
mib = int(sys.argv[1])
pages = mib * 256
region = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE)
region.madvise(mmap.MADV_NOHUGEPAGE)
words = memoryview(region).cast("Q")
ledger = array.array("Q", bytes(8 * pages))
hot = max(1, pages // 100)
for p in range(pages):
    words[p * 512] = 0
n = 0
while True:
    n += 1
    first = (n // 100) * hot
    for k in range(hot):
        p = (first + k) % pages
        words[p * 512] = n
        ledger[p] = n
    if n % 20 == 0:
        if words[::512].tolist() == ledger.tolist():
            print(n, "verified", pages, "pages", flush=True)
        else:
            bad = [p for p in range(pages) if words[p * 512] != ledger[p]]
            print(n, "MISMATCH", len(bad), "pages, first", bad[:5], flush=True)
    else:
        print(n, flush=True)
    time.sleep(0.1)
"#;

/// The memory-tracking debug lines of `workload` in VM `i`'s agent journal:
/// (pages written while frozen, pages in the dump, frozen ms).
fn tracked_dumps(vms: &VmPair, i: usize, workload: &str) -> Vec<(u64, u64, u64)> {
    let journal = vms.run(
        i,
        "journalctl -u understudy-agent --no-pager -o cat | grep 'memory tracking:' || true",
    );
    let field = |l: &str, k: &str| -> Option<u64> {
        let at = l.find(&format!(" {k}="))? + k.len() + 2;
        l[at..].split_whitespace().next()?.parse().ok()
    };
    journal
        .lines()
        .filter(|l| l.contains(&format!("workload={workload} ")))
        .filter_map(|l| {
            Some((
                field(l, "pages_dumped")?,
                field(l, "pages_total")?,
                field(l, "frozen_ms")?,
            ))
        })
        .collect()
}

/// A 64 MiB workload writing a hot set of 1 % of its pages, on a stock kernel with soft-dirty
/// tracking: after its first whole dump each epoch holds only the pages written since the
/// one before, and it moves with every page as it was. Returns the figures to print.
fn tracked_memory_moves(vms: &VmPair) -> String {
    const MIB: u64 = 64;
    std::fs::write(vms.share().join("mem.py"), MEM_WORKLOAD).unwrap();
    for i in [A, B] {
        vms.run(i, "cp /mnt/understudy-share/mem.py /usr/local/lib/mem.py");
    }
    cli(
        vms,
        &format!(
            "workload create mem --host vm-a --shadow vm-b --interval 2s -- \
             /usr/bin/python3 /usr/local/lib/mem.py {MIB}"
        ),
    );
    wait_epochs(vms, "mem", 5);
    let dumps = tracked_dumps(vms, A, "mem");
    let whole = dumps
        .iter()
        .find(|d| d.0 == d.1)
        .unwrap_or_else(|| panic!("no whole first dump of mem: {dumps:?}"));
    let chained: Vec<_> = dumps.iter().filter(|d| d.0 < d.1).collect();
    assert!(
        chained.len() >= 3,
        "epochs after the first one carry only written pages: {dumps:?}"
    );
    assert!(
        whole.1 >= MIB * 256,
        "the whole dump holds the workload's {MIB} MiB: {whole:?}"
    );
    // The first chained dump may still meet pages the workload was touching for the
    // first time; from the second on, only the hot sets it wrote since the one before (an
    // epoch cycle here, emulated, takes seconds to tens of seconds: a few hot sets).
    for d in &chained[1..] {
        assert!(
            d.0 * 4 < d.1,
            "a chained epoch holds only the pages written since the one before, not a quarter of them all: {dumps:?}"
        );
    }
    let show = cli(vms, "workload show mem");
    assert!(show.contains("(memory tracking)"), "{show}");
    let log = "/var/lib/understudy-agent/workloads/mem/output.log";
    let freeze = migrate(vms, "mem", "vm-b");
    let last_a: u64 = vms
        .run(A, &format!("tail -n 3 {log}"))
        .lines()
        .rev()
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .expect("a count at the end of vm-a's log");
    eventually(
        "mem checks its pages on vm-b",
        Duration::from_secs(120),
        || {
            let on_b = vms.run(B, &format!("cat {log}"));
            if let Some(bad) = on_b.lines().find(|l| l.contains("MISMATCH")) {
                panic!("pages from different instants after the move: {bad}");
            }
            let verified = on_b.lines().any(|l| {
                l.contains("verified")
                    && l.split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > last_a)
            });
            let first: Option<u64> = on_b
                .lines()
                .find_map(|l| l.split_whitespace().next()?.parse().ok());
            assert!(
                first.is_some_and(|f| f >= last_a),
                "vm-b went on from {last_a}, not {first:?}"
            );
            if verified {
                Ok(())
            } else {
                Err(on_b.lines().rev().take(3).collect::<Vec<_>>().join(" | "))
            }
        },
    );
    assert!(
        users_of(vms, A, "python3").is_empty(),
        "no copy left on vm-a"
    );
    let frozen: Vec<u64> = chained.iter().map(|d| d.2).collect();
    let share: Vec<String> = chained
        .iter()
        .map(|d| format!("{:.1} %", d.0 as f64 * 100.0 / d.1 as f64))
        .collect();
    let thp = vms.run(A, "cat /sys/kernel/mm/transparent_hugepage/enabled");
    format!(
        "tracked {MIB} MiB: whole dump frozen {} ms ({} pages), chained dumps frozen {frozen:?} ms holding {share:?} of the pages; move frozen {freeze} ms; transparent huge pages {}",
        whole.2,
        whole.1,
        thp.trim()
    )
}

const PG_CLIENT: &str = r#"#!/bin/sh
# Commits one row per transaction, to whichever host answers; records each id committed.
i=0
while [ ! -e /root/stop ]; do
  i=$((i + 1))
  for ip in "$@"; do
    if psql -h "$ip" -U postgres -d postgres -qtAc "insert into t values ($i)" >/dev/null 2>&1; then
      echo "$i" >> /root/acked
      break
    fi
  done
done
"#;

#[test]
fn real_services_that_drop_privileges_move_with_their_state() {
    require_vm!();
    let started = Instant::now();
    let vms = VmPair::boot(["vm-a", "vm-b"]);
    eprintln!("VMs answering on ssh after {:?}", vms.boot_times);
    let (to_healthy, criu) = start_cluster(&vms);
    let (a, b) = (vms.vms[A].lan_ip, vms.vms[B].lan_ip);

    let phases =
        std::env::var("UNDERSTUDY_VM_PHASES").unwrap_or_else(|_| "memcached,pg,nobody,mem".into());
    let (mut mc_there, mut mc_back, mut pg_freeze) = (0, 0, 0);
    // First, while the VMs' small disks are empty: the shadow's epochs of the services
    // below fill them enough for the coordinator to forecast the disk full and take the
    // shadow off that host. Deleted afterwards, which drops its epochs there.
    let tracked = if phases.contains("mem") {
        let figures = tracked_memory_moves(&vms);
        cli(&vms, "workload delete mem");
        figures
    } else {
        String::new()
    };
    if phases.contains("memcached") {
        // memcached drops to the memcache user by itself (-u).
        std::fs::write(vms.share().join("mc.py"), MEMCACHED_CLIENT).unwrap();
        cli(
            &vms,
            "workload create memcached --host vm-a --shadow vm-b --interval 3s --probe-tcp 11211 \
         -- /usr/bin/memcached -u memcache -l 0.0.0.0 -p 11211 -m 64",
        );
        eventually("memcached answers", Duration::from_secs(60), || {
            let o = vms.ssh(A, &format!("python3 /mnt/understudy-share/mc.py get {a} 1"));
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
        assert_eq!(users_of(&vms, A, "memcached"), ["memcache"]);
        let cg = vms.run(A, "cat /proc/$(pgrep -x memcached)/cgroup");
        assert!(
            cg.contains("/understudy.slice/understudy-memcached.scope"),
            "a started workload runs in its own scope, not the agent's cgroup: {cg}"
        );
        let set = vms.run(
            A,
            &format!("python3 /mnt/understudy-share/mc.py set {a} 20000"),
        );
        assert_eq!(set.trim(), "20000");
        let before = workload(&vms, "memcached").epochs;
        wait_epochs(&vms, "memcached", before + 1);
        mc_there = migrate(&vms, "memcached", "vm-b");
        let got = vms.run(
            A,
            &format!("python3 /mnt/understudy-share/mc.py get {b} 20000"),
        );
        assert_eq!(got.trim(), "20000", "every item on vm-b");
        assert_eq!(users_of(&vms, B, "memcached"), ["memcache"]);
        assert!(
            users_of(&vms, A, "memcached").is_empty(),
            "no copy left on vm-a"
        );
        let before = workload(&vms, "memcached").epochs;
        wait_epochs(&vms, "memcached", before + 1);
        mc_back = migrate(&vms, "memcached", "vm-a");
        let got = vms.run(
            A,
            &format!("python3 /mnt/understudy-share/mc.py get {a} 20000"),
        );
        assert_eq!(got.trim(), "20000", "every item back on vm-a");
        assert!(users_of(&vms, B, "memcached").is_empty());
    }

    if phases.contains("pg") {
        // PostgreSQL as the postgres user, its cluster in a data directory.
        for i in [A, B] {
            vms.run(i, "mkdir -p /srv/pg && chown postgres:postgres /srv/pg");
        }
        vms.run(
        A,
        "runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D /srv/pg/data -A trust -U postgres >/dev/null \
         && echo 'host all all 0.0.0.0/0 trust' >> /srv/pg/data/pg_hba.conf",
    );
        cli(
            &vms,
            "workload create pg --host vm-a --shadow vm-b --interval 3s --probe-tcp 5432 \
         --user postgres --data-dir /srv/pg --stop-signal SIGINT -- \
         /usr/lib/postgresql/15/bin/postgres -D /srv/pg/data -c listen_addresses=* \
         -c unix_socket_directories= -c dynamic_shared_memory_type=sysv",
        );
        eventually("postgres answers", Duration::from_secs(120), || {
            let o = vms.ssh(
            A,
            &format!("psql -h {a} -U postgres -qtAc 'create table if not exists t (id int primary key)'"),
        );
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
        assert_eq!(
            users_of(&vms, A, "postgres").first().map(String::as_str),
            Some("postgres")
        );
        let before = workload(&vms, "pg").epochs;
        wait_epochs(&vms, "pg", before + 1);
        std::fs::write(vms.share().join("pg-client.sh"), PG_CLIENT).unwrap();
        vms.run(
        A,
        &format!(
            "rm -f /root/stop /root/acked; systemd-run --unit=pg-client sh /mnt/understudy-share/pg-client.sh {a} {b}"
        ),
    );
        eventually("rows are being committed", Duration::from_secs(60), || {
            let n = vms.run(A, "wc -l < /root/acked 2>/dev/null || echo 0");
            if n.trim().parse::<u32>().unwrap_or(0) >= 5 {
                Ok(())
            } else {
                Err(n)
            }
        });
        pg_freeze = migrate(&vms, "pg", "vm-b");
        eventually(
            "rows are committed on vm-b",
            Duration::from_secs(120),
            || {
                let o = vms.ssh(
                    A,
                    &format!("psql -h {b} -U postgres -qtAc 'select count(*) from t'"),
                );
                if o.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).into_owned())
                }
            },
        );
        std::thread::sleep(Duration::from_secs(3));
        vms.run(A, "touch /root/stop; sleep 3");
        let acked: BTreeSet<u64> = vms
            .run(A, "cat /root/acked")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let stored: BTreeSet<u64> = vms
            .run(
                A,
                &format!("psql -h {b} -U postgres -qtAc 'select id from t'"),
            )
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let lost: Vec<&u64> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "committed rows missing on vm-b: {lost:?}");
        assert!(acked.len() >= 5);
        vms.run(
            A,
            &format!("psql -h {b} -U postgres -qtAc 'insert into t values (-1)'"),
        );
        assert_eq!(
            users_of(&vms, B, "postgres").first().map(String::as_str),
            Some("postgres")
        );
        assert!(
            users_of(&vms, A, "postgres").is_empty(),
            "no copy left on vm-a"
        );
    }

    // A plain workload as nobody: checkpointed (CRIU needs root's rights over it) and moved.
    cli(
        &vms,
        "workload create counter --host vm-a --shadow vm-b --interval 2s --user nobody -- \
         /bin/sh -c 'n=0; while :; do n=$((n+1)); echo $n; sleep 0.1; done'",
    );
    wait_epochs(&vms, "counter", 2);
    assert_eq!(
        users_of(&vms, A, "sh")
            .iter()
            .filter(|u| *u == "nobody")
            .count(),
        1
    );
    let log = "/var/lib/understudy-agent/workloads/counter/output.log";
    let counter_freeze = migrate(&vms, "counter", "vm-b");
    let tail_a = vms.run(A, &format!("tail -n 5 {log}"));
    let last_a: u64 = tail_a
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count at the end of vm-a's log: {tail_a:?}"));
    std::thread::sleep(Duration::from_secs(2));
    let on_b: Vec<u64> = vms
        .run(B, &format!("cat {log}"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(on_b.len() > 3, "counting on vm-b");
    assert!(
        on_b[0] >= last_a,
        "vm-b went on from {last_a}: {:?}",
        &on_b[..3]
    );
    assert_eq!(
        users_of(&vms, B, "sh")
            .iter()
            .filter(|u| *u == "nobody")
            .count(),
        1
    );
    let show = cli(&vms, "workload show counter");
    assert!(show.contains("user:           nobody"), "{show}");
    let d = disruptions(&vms);
    remove_and_purge(&vms);
    eprintln!(
        "figures: VM boot {:?}; install to healthy {:.0} s (CRIU: {criu:?}); freeze memcached {mc_there} ms there, {mc_back} ms back; postgres {pg_freeze} ms; nobody counter {counter_freeze} ms; agent back after SIGKILL {:.1} s, after SIGSTOP (watchdog) {:.1} s, after the package upgrade {:.1} s; coordinator back after its package upgrade {:.1} s; {tracked}; whole test {:.0} s",
        vms.boot_times,
        to_healthy.as_secs_f64(),
        d.killed,
        d.hung,
        d.agent_upgraded,
        d.coordinator_upgraded,
        started.elapsed().as_secs_f64()
    );
}
