//! A randomised fault soak: three agents and a coordinator with a few counter workloads;
//! for a while it kills and restarts agents and the coordinator, cuts and heals links,
//! partitions hosts from the coordinator and runs migrations at random moments (from a
//! seed, printed, so a failing run can be replayed), and checks the invariants as it goes:
//!
//! - never two running copies of a workload (a copy frozen by its lease does not run);
//! - no counted value lost beyond the recovery point: a copy restored somewhere counts on
//!   from at least what its host had counted before that epoch was taken;
//! - once the faults stop, every workload runs somewhere within the failover bound, where
//!   the coordinator's record says, exactly once.
//!
//! Used by the `soak` program (long runs) and by the test command (a short one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use understudy_coordinator::workloads::{WorkloadRecord, WorkloadState};

use crate::cluster::{Cluster, FAILOVER_AFTER};
use crate::copies::{create_counter, marker};
use crate::numbers;

/// The soak's hosts.
pub const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
/// Its workloads, with their first primary and shadow.
const WORKLOADS: [(&str, &str, &str); 3] = [
    ("soak-1", "host-a", "host-b"),
    ("soak-2", "host-b", "host-c"),
    ("soak-3", "host-c", "host-a"),
];

/// A small deterministic generator (xorshift64*): the seed replays a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One fault the soak made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// SIGKILL an agent, restart it after a pause (ms).
    KillAgent(usize, u64),
    /// SIGKILL (true) or SIGTERM the coordinator, restart it at once.
    RestartCoordinator(bool),
    /// Cut a host's link for a while (ms).
    CutLink(usize, u64),
    /// Partition a host from the coordinator only, for a while (ms).
    Partition(usize, u64),
    /// Migrate a workload.
    Migrate(usize),
}

/// What a soak run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Faults made, in order, with their time from the start.
    pub faults: Vec<String>,
    /// Checks made of the invariants.
    pub checks: u64,
    /// Failovers and migrations that happened, by workload.
    pub moves: BTreeMap<String, u64>,
}

/// What the soak remembers of one workload between checks.
#[derive(Debug, Default)]
struct Watch {
    /// (when, count) samples of the recorded primary's log: what its lineage had counted.
    samples: Vec<(u64, u64)>,
    /// When each epoch seen was committed (ms since the Unix epoch, the agents' clock,
    /// which is this machine's).
    commits: BTreeMap<u64, u64>,
    /// Each host's log length when it last did not run the workload: a run that starts
    /// there later starts after it.
    offsets: BTreeMap<String, usize>,
    /// Generation and primary last seen, to notice moves.
    last: Option<(u64, String)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks that no workload runs twice, and that a failover's restored copy counts on from
/// at least what its lineage had counted before the restored epoch was taken: epoch R was
/// dumped after epoch R-1 was committed, so every count logged before that commit is in it.
/// After a failover the lineage is the restored copy's: what the lost copy counted after
/// the restored epoch no longer counts toward it.
fn check(
    c: &Cluster,
    watches: &mut BTreeMap<String, Watch>,
    report: &mut Report,
) -> Result<(), String> {
    report.checks += 1;
    for (name, _, _) in WORKLOADS {
        let on = c.running_on(&HOSTS, &marker(name));
        if on.len() > 1 {
            return Err(format!("{name} runs on {on:?} at once"));
        }
        let w = watches.entry(name.to_owned()).or_default();
        for h in HOSTS {
            if !on.iter().any(|o| o == h) {
                w.offsets.insert(h.to_owned(), c.output_log(h, name).len());
            }
        }
        let Ok(rec) = c.workload(name) else {
            continue;
        };
        if let Some(e) = &rec.last_epoch {
            w.commits.insert(e.epoch, e.committed_unix_ms);
        }
        let t = now_ms();
        let count = numbers(&c.output_log(&rec.primary, name))
            .last()
            .copied()
            .unwrap_or(0);
        w.samples.push((t, count));
        let moved = w
            .last
            .as_ref()
            .is_some_and(|(g, p)| rec.generation != *g || rec.primary != *p);
        if moved && rec.state == WorkloadState::Running {
            *report.moves.entry(name.to_owned()).or_default() += 1;
            if let Some(m) = rec
                .last_migration
                .as_ref()
                .filter(|m| m.outcome == "failed over")
            {
                let restored = m.recovery_epoch.unwrap_or(0);
                let before = w.commits.range(..restored).next_back().map(|(_, at)| *at);
                let floor = before.map_or(0, |at| {
                    w.samples
                        .iter()
                        .filter(|(when, _)| *when < at)
                        .map(|(_, v)| *v)
                        .max()
                        .unwrap_or(0)
                });
                let log = c.output_log(&rec.primary, name);
                let from = w
                    .offsets
                    .get(&rec.primary)
                    .copied()
                    .unwrap_or(0)
                    .min(log.len());
                let start = numbers(&log[from..]).first().copied();
                if start.is_some_and(|s| s < floor) {
                    return Err(format!(
                        "{name} restored from epoch {restored} on {} started at {start:?}, below the {floor} its lineage had counted before that epoch was taken",
                        rec.primary
                    ));
                }
                // What the old primary counted after the restored epoch was dumped is lost
                // (within the recovery point): the lineage goes on from the restored count,
                // so those samples must not raise the floor of a later failover.
                match start {
                    Some(s) => w.samples.retain(|(_, v)| *v <= s),
                    None => w
                        .samples
                        .retain(|(when, _)| before.is_some_and(|at| *when < at)),
                }
            }
        }
        w.last = Some((rec.generation, rec.primary.clone()));
    }
    Ok(())
}

fn fault(c: &Cluster, rng: &mut Rng) -> Fault {
    match rng.below(10) {
        0..=2 => Fault::KillAgent(rng.below(3) as usize, 500 + rng.below(4_000)),
        3 => Fault::RestartCoordinator(rng.below(2) == 0),
        4..=5 => {
            // Long enough, half of the time, for a failover.
            let ms = if rng.below(2) == 0 {
                1_000 + rng.below(4_000)
            } else {
                FAILOVER_AFTER.as_millis() as u64 + 2_000 + rng.below(6_000)
            };
            Fault::CutLink(rng.below(3) as usize, ms)
        }
        6 => Fault::Partition(rng.below(3) as usize, 2_000 + rng.below(14_000)),
        _ => {
            let _ = c;
            Fault::Migrate(rng.below(WORKLOADS.len() as u64) as usize)
        }
    }
}

/// Sleeps `total`, checking the invariants every 200 ms.
fn soak_for(
    c: &Cluster,
    total: Duration,
    watches: &mut BTreeMap<String, Watch>,
    report: &mut Report,
) -> Result<(), String> {
    let until = Instant::now() + total;
    while Instant::now() < until {
        check(c, watches, report)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Runs the soak for `duration` from `seed`. On a broken invariant the error holds the
/// faults made so far, and every host's log is kept in `/tmp/understudy-soak-SEED/`.
pub fn run(seed: u64, duration: Duration) -> Result<Report, String> {
    let c = Cluster::started(&HOSTS);
    let mut report = Report::default();
    match soak(&c, seed, duration, &mut report) {
        Ok(()) => Ok(report),
        Err(e) => {
            let keep = std::path::PathBuf::from(format!("/tmp/understudy-soak-{seed}"));
            c.save_logs(&keep);
            Err(format!(
                "{e}\nfaults so far:\n{}\nlogs kept in {}",
                report.faults.join("\n"),
                keep.display()
            ))
        }
    }
}

fn soak(c: &Cluster, seed: u64, duration: Duration, report: &mut Report) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    for (name, primary, shadow) in WORKLOADS {
        create_counter(c, name, primary, shadow, "500ms");
    }
    for (name, _, _) in WORKLOADS {
        c.wait_for_epochs(name, 1);
    }
    let mut watches = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        soak_for(
            c,
            Duration::from_millis(1_000 + rng.below(5_000)),
            &mut watches,
            report,
        )?;
        let f = fault(c, &mut rng);
        report
            .faults
            .push(format!("{:>6.1}s {f:?}", started.elapsed().as_secs_f64()));
        c.note("coord", &format!("soak: {f:?}"));
        match f {
            Fault::KillAgent(h, pause) => {
                c.kill(HOSTS[h]);
                soak_for(c, Duration::from_millis(pause), &mut watches, report)?;
                c.start_agent(HOSTS[h]);
            }
            Fault::RestartCoordinator(kill) => {
                if kill {
                    c.kill("coord");
                } else {
                    c.stop("coord");
                }
                c.start_coordinator();
            }
            Fault::CutLink(h, ms) => {
                c.set_link(HOSTS[h], false);
                soak_for(c, Duration::from_millis(ms), &mut watches, report)?;
                c.set_link(HOSTS[h], true);
            }
            Fault::Partition(h, ms) => {
                c.isolate(&["coord", HOSTS[h]], true);
                soak_for(c, Duration::from_millis(ms), &mut watches, report)?;
                c.isolate(&["coord", HOSTS[h]], false);
            }
            Fault::Migrate(w) => {
                let mut cmd = c.cli_command();
                let name = WORKLOADS[w].0;
                // In the background: it may be refused, roll back or succeed.
                std::thread::spawn(move || {
                    let _ = cmd.args(["migrate", name]).output();
                });
            }
        }
    }
    // The faults stop: everything up, then every workload must settle within the bound.
    c.isolate(&["coord", HOSTS[0], HOSTS[1], HOSTS[2]], false);
    for h in HOSTS {
        c.set_link(h, true);
        if !c.is_running(h) {
            c.start_agent(h);
        }
    }
    if !c.is_running("coord") {
        c.start_coordinator();
    }
    let bound = FAILOVER_AFTER + Duration::from_secs(60);
    let settled = Instant::now();
    loop {
        check(c, &mut watches, report)?;
        let mut pending = Vec::new();
        for (name, _, _) in WORKLOADS {
            match c.workload(name) {
                Ok(WorkloadRecord {
                    state: WorkloadState::Running,
                    primary,
                    ..
                }) => {
                    let on = c.running_on(&HOSTS, &marker(name));
                    if on != [primary.clone()] {
                        pending.push(format!("{name}: record says {primary}, runs on {on:?}"));
                    }
                }
                Ok(other) => pending.push(format!("{name}: {:?}", other.state)),
                Err(e) => pending.push(format!("{name}: {e}")),
            }
        }
        if pending.is_empty() {
            break;
        }
        if settled.elapsed() > bound {
            return Err(format!(
                "not settled {bound:?} after the faults stopped: {pending:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}
