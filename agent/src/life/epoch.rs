//! The I/O of one epoch: ask the supervisor whether the tree is frozen, dump it with CRIU
//! once, connect to each shadow in turn and send it the dump (a delta against the base they
//! all acknowledged), with a deadline on every network wait. It knows nothing of the agent's other workloads; what it
//! needs comes in a [`Job`], what happened goes out in an [`Outcome`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criu_sys::Criu;
use understudy_common::epoch::Manifest;
use understudy_common::seal::DataKey;
use understudy_common::workload::{EpochReport, Peer};

use super::machine::{Delivery, Failure};
use crate::checkpoint::{self, DumpRequest};
use crate::clock::now_ms;
use crate::datadir::capture;
use crate::replication::peers::Peers;
use crate::replication::send::{send_epoch, Base, SendError};
use crate::workload::process::Running;

/// Everything one epoch needs.
pub struct Job {
    /// CRIU, or why it cannot be used.
    pub criu: Result<Arc<Criu>, String>,
    /// The workload's name.
    pub workload: String,
    /// Its generation.
    pub generation: u64,
    /// The epoch's number.
    pub epoch: u64,
    /// A switchover's final epoch: CRIU stops the tree once it is dumped.
    pub final_epoch: bool,
    /// A final epoch by post-copy (`crate::postcopy::source`).
    pub post_copy: bool,
    /// Ordered by the coordinator (a switchover's), not by the timer.
    pub ordered: bool,
    /// The tree.
    pub running: Running,
    /// Where the images go.
    pub dir: PathBuf,
    /// Dump with memory tracking, chaining each dump to the previous one (`crate::tracked`).
    pub track_mem: bool,
    /// The workload's data directories on this host.
    pub data: Vec<capture::Dir>,
    /// What every shadow it goes to acknowledged last, if the delta may be made against it.
    pub base: Option<Base>,
    /// Where the epoch goes.
    pub to: Vec<Peer>,
    /// Connections to other agents.
    pub peers: Arc<Peers>,
    /// The workload's data key, which seals its memory images (none yet: the epoch waits
    /// for it, as it comes with the coordinator's order or lease).
    pub key: Option<Arc<DataKey>>,
    /// Called with (bytes sent, bytes to send) as the transfer goes.
    pub progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("workload", &self.workload)
            .field("generation", &self.generation)
            .field("epoch", &self.epoch)
            .field("final_epoch", &self.final_epoch)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// How one epoch ended.
#[derive(Debug)]
pub struct Outcome {
    /// The epoch's number.
    pub epoch: u64,
    /// A final epoch's dump, kept to resume from (the tree is stopped).
    pub final_dump: Option<(PathBuf, Manifest)>,
    /// A final epoch by post-copy: the transfer under way (the tree is frozen).
    pub post_copy: Option<crate::postcopy::source::Session>,
    /// The base the next delta is made against, when a shadow committed.
    pub base: Option<Base>,
    /// What each shadow committed, or why not.
    pub results: Vec<Delivery>,
}

impl Outcome {
    /// An epoch that reached no shadow, each of `to` failing with `why`.
    pub fn failed(epoch: u64, to: &[Peer], why: &Failure) -> Self {
        Outcome {
            epoch,
            final_dump: None,
            post_copy: None,
            base: None,
            results: to
                .iter()
                .map(|p| Delivery {
                    shadow: p.name.clone(),
                    result: Err(why.clone()),
                })
                .collect(),
        }
    }
}

fn cpu_ms() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            u64::try_from(tv.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(tv.tv_usec()).unwrap_or(0) / 1000
        };
        t(u.user_time()) + t(u.system_time())
    })
}

/// How long an ordered epoch of a copy frozen for lack of a lease waits for the lease. An
/// agent that reconnects after its copy's lease ran out gets a new one with its first
/// heartbeat's answer, or with the order's generation (held until the order comes), and
/// passes it to the supervisor as the order starts the epoch: a few heartbeats at most.
const LEASE_WAIT: Duration = Duration::from_secs(3);

/// Waits up to `limit` while the workload's supervisor holds it frozen for lack of a lease;
/// whether it is still frozen afterwards.
async fn wait_for_lease(workload: &str, limit: Duration) -> bool {
    let started = std::time::Instant::now();
    while frozen(workload).await {
        if started.elapsed() >= limit {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether the workload's supervisor holds it frozen for lack of a lease (`false` when it
/// cannot say).
async fn frozen(workload: &str) -> bool {
    let name = workload.to_owned();
    let req = crate::supervisor::control::Request::Status;
    tokio::task::spawn_blocking(move || {
        crate::supervisor::control::ask(&name, &req, Duration::from_secs(1))
    })
    .await
    .is_ok_and(|a| a.is_ok_and(|s| s.frozen))
}

/// Takes the epoch. The images directory is removed afterwards unless it is a final
/// epoch's dump (kept to resume from if the switchover fails).
pub async fn run(job: Job) -> Outcome {
    let failed = |why: Failure| Outcome::failed(job.epoch, &job.to, &why);
    // Nothing changes in a copy frozen for lack of a lease, and a dump would run CRIU's
    // parasite inside it: its epochs wait for the lease.
    let wait = if job.ordered {
        LEASE_WAIT
    } else {
        Duration::ZERO
    };
    if wait_for_lease(&job.workload, wait).await {
        return failed(Failure::Frozen);
    }
    let Some(key) = job.key.clone() else {
        return failed(Failure::Failed(
            "unprotected: no data key from the coordinator yet to seal the checkpoint with (it comes with the next lease)".into(),
        ));
    };
    let criu = match job.criu.clone() {
        Ok(c) => c,
        Err(e) => return failed(Failure::Failed(format!("unprotected: {e}"))),
    };
    if job.final_epoch && job.post_copy {
        let [target] = job.to.as_slice() else {
            return failed(Failure::Failed(format!(
                "post-copy: the final epoch must go to one shadow, not {}",
                job.to.len()
            )));
        };
        let mut outcome = failed(Failure::Frozen);
        match crate::postcopy::source::freeze(&job, target, criu).await {
            Ok((report, session)) => {
                outcome.post_copy = Some(session);
                outcome.results = vec![Delivery {
                    shadow: target.name.clone(),
                    result: Ok(report),
                }];
            }
            Err(e) => return failed(Failure::Failed(e)),
        }
        return outcome;
    }
    if job.data.is_empty() {
        // Memory-backed scratch space too small for the dump: say so rather than let CRIU
        // fail half-way through it.
        if let Some(parent) = job.dir.parent() {
            let _ = std::fs::create_dir_all(parent);
            if let Err(e) = crate::scratch::check_room(parent, job.running.pid) {
                return failed(Failure::Failed(format!("unprotected: {e}")));
            }
        }
    }
    if job.final_epoch {
        job.running.expect_exit();
    }
    let dump_dir = job.dir.parent().map(PathBuf::from).unwrap_or_default();
    let parent = if job.track_mem {
        crate::tracked::parent(&dump_dir, job.running.pid)
    } else {
        None
    };
    let req = DumpRequest {
        workload: job.workload.clone(),
        generation: job.generation,
        epoch: job.epoch,
        pid: job.running.pid,
        stdio_key: job.running.stdio_key.clone(),
        leave_running: !job.final_epoch,
        dir: job.dir.clone(),
        data: job.data.clone(),
        index: job
            .base
            .as_ref()
            .map_or_else(Default::default, |b| b.index.clone()),
        sigs: job
            .base
            .as_ref()
            .map_or_else(Default::default, |b| b.sigs.clone()),
        track_mem: job.track_mem,
        parent,
    };
    let dumped = match checkpoint::dump(criu, req).await {
        Ok(d) => d,
        Err(e) => {
            // CRIU may have cleared the dirty bits: the chain no longer says what changed.
            crate::tracked::drop_chain(&dump_dir);
            if job.final_epoch && job.running.is_alive() {
                job.running.unexpect_exit();
            }
            return failed(Failure::Failed(format!("unprotected: {e}")));
        }
    };
    let mut outcome = Outcome {
        epoch: job.epoch,
        final_dump: None,
        post_copy: None,
        base: None,
        results: Vec::new(),
    };
    if job.final_epoch {
        outcome.final_dump = Some((dumped.dir.clone(), dumped.manifest.clone()));
        crate::tracked::drop_chain(&dump_dir);
    }
    if let Some(t) = dumped.tracked {
        tracing::debug!(
            workload = %job.workload,
            epoch = job.epoch,
            pages_dumped = t.pages_dumped,
            pages_total = t.pages_total,
            frozen_ms = dumped.frozen_ms,
            "memory tracking: {} of {} pages written while frozen",
            t.pages_dumped,
            t.pages_total
        );
    }
    let chained = dumped.tracked.is_some() && !job.final_epoch;
    let epoch = job.epoch;
    // Every shadow that commits holds the same files (sealing is deterministic), so the
    // first one's signatures are the next delta's base for all of them.
    let mut signatures = None;
    for peer in &job.to {
        let result = send_to(&job, peer, &dumped, &key).await;
        let result = result.map(|(report, sigs)| {
            signatures.get_or_insert(sigs);
            report
        });
        outcome.results.push(Delivery {
            shadow: peer.name.clone(),
            result,
        });
    }
    tracing::debug!(workload = %job.workload, epoch, final_epoch = job.final_epoch, dump_ms = dumped.frozen_ms, "epoch sent to {} shadow(s)", job.to.len());
    outcome.base = signatures.map(|(sigs, seals)| Base {
        epoch,
        sigs: Arc::new(sigs),
        seals: Arc::new(seals),
        index: Arc::new(dumped.index),
    });
    // Sent or not, a tracked dump is what CRIU compared the tree with: it is the next
    // dump's parent. Any other dump is removed, but a final one (kept to resume from).
    if chained {
        if let Err(e) = crate::tracked::keep(&job.dir, &dump_dir, job.running.pid) {
            tracing::warn!(
                "{}: not kept as the next dump's parent: {e}",
                job.dir.display()
            );
            crate::tracked::drop_chain(&dump_dir);
            checkpoint::remove_dir(&job.dir);
        }
    } else if !job.final_epoch {
        checkpoint::remove_dir(&job.dir);
    }
    outcome
}

/// Page signatures and seal fingerprints of an epoch's files, by name.
type Signatures = (
    std::collections::HashMap<String, crate::replication::delta::PageSignature>,
    std::collections::HashMap<String, Vec<u128>>,
);

/// Sends the dumped epoch to `peer`; returns what it committed and the signatures the
/// next delta is made against.
async fn send_to(
    job: &Job,
    peer: &Peer,
    dumped: &checkpoint::Dumped,
    key: &Arc<DataKey>,
) -> Result<(EpochReport, Signatures), Failure> {
    let (epoch, shadow) = (job.epoch, peer.name.clone());
    let lagging =
        |e: String| format!("shadow lagging: {shadow} has not committed epoch {epoch}: {e}");
    let conn = job
        .peers
        .connect(peer)
        .await
        .map_err(|e| Failure::Failed(lagging(e)))?;
    let cpu_before = cpu_ms();
    let progress = job.progress.clone();
    let send_started = Instant::now();
    let sent = send_epoch(
        &conn,
        dumped,
        job.base.as_ref(),
        job.final_epoch,
        key,
        &move |s, t| progress(s, t),
    )
    .await
    .map_err(|e| match e {
        SendError::BaseLost(m) => Failure::BaseLost(lagging(m)),
        SendError::Other(m) => Failure::Failed(lagging(m)),
    })?;
    tracing::debug!(
        workload = %job.workload,
        epoch,
        shadow = %peer.name,
        send_ms = send_started.elapsed().as_millis() as u64,
        bytes_sent = sent.bytes_sent,
        "epoch committed on the shadow"
    );
    let report = EpochReport {
        workload: job.workload.clone(),
        generation: job.generation,
        epoch,
        shadow: peer.name.clone(),
        bytes_total: dumped.manifest.total_bytes(),
        bytes_sent: sent.bytes_sent,
        bytes_changed: sent.bytes_changed,
        frozen_ms: dumped.frozen_ms,
        frozen_disk_ms: dumped.frozen_disk_ms,
        data_bytes: dumped.manifest.data_bytes(),
        data_changed: sent.data_changed,
        data_sent: sent.data_sent,
        transfer_ms: sent.transfer_ms,
        cpu_ms: cpu_ms().saturating_sub(cpu_before),
        committed_unix_ms: now_ms(),
        incremental: dumped
            .tracked
            .is_some_and(|t| t.pages_dumped < t.pages_total),
        // Set by the workload's task, which paces its epochs.
        cadence: None,
    };
    Ok((report, (sent.sigs, sent.seals)))
}
