//! A workload this host runs as primary: its process tree, its periodic epochs to the
//! shadow, and the transitions a switchover puts it through (final epoch, release,
//! resume), plus restoring a tree from an epoch directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;
use understudy_common::epoch::Manifest;
use understudy_common::workload::{EpochReport, Peer, Probe, Report, WorkloadSpec};

use crate::checkpoint::{self, DumpRequest};
use crate::datadir::capture;
use crate::node::Node;
use crate::replication::send::{send_epoch, Base, BASE_LOST};
use crate::workload::process::{adopt_restored, open_log, Running};
use crate::workload::restart::exit_hook;
use crate::workload::Paths;

/// Said once while a copy is frozen for lack of a lease.
const FROZEN: &str = "frozen for lack of a lease: epochs wait until it is renewed";

/// Mutable state of a primary workload; one epoch or transition at a time holds it.
#[derive(Debug)]
pub struct PrimaryState {
    /// Current generation.
    pub generation: u64,
    /// Where epochs go.
    pub shadow: Option<Peer>,
    /// The live tree, if it runs.
    pub running: Option<Running>,
    /// Number of the next epoch.
    pub next_epoch: u64,
    /// The epoch the shadow last acknowledged.
    pub acked: Option<Base>,
    /// The final dump of a switchover, kept to resume from if the switchover fails.
    pub final_dump: Option<(PathBuf, Manifest)>,
    /// Periodic epochs stop when this changes; bumped by every (re)start of the loop.
    pub loop_id: u64,
    /// The reason last reported for not being protected, to avoid repeating it.
    pub last_unprotected: Option<String>,
    /// When its restart policy last restarted it here (ms since the Unix epoch, oldest first).
    pub restarts_ms: Vec<u64>,
    /// A switchover paused the periodic epochs (a `Checkpoint` order); `Resume` or a new
    /// loop ends the pause.
    pub epochs_paused: bool,
    /// The tree exited and its restart policy's delay is running.
    pub restart_pending: bool,
}

impl PrimaryState {
    /// The state of a tree that runs here, whose next epoch is `next_epoch` and goes
    /// whole to `shadow` (nothing acknowledged yet).
    pub fn running(
        generation: u64,
        shadow: Option<Peer>,
        running: Running,
        next_epoch: u64,
    ) -> Self {
        PrimaryState {
            generation,
            shadow,
            running: Some(running),
            next_epoch,
            acked: None,
            final_dump: None,
            loop_id: 0,
            last_unprotected: None,
            restarts_ms: Vec::new(),
            epochs_paused: false,
            restart_pending: false,
        }
    }
}

/// A workload running here as primary.
#[derive(Debug)]
pub struct Primary {
    /// What it runs.
    pub spec: WorkloadSpec,
    /// Its state.
    pub state: Mutex<PrimaryState>,
    /// Host pid of the tree's root as last started or restored here (0: none), readable
    /// without waiting for an epoch to release the state.
    pub pid: std::sync::atomic::AtomicI32,
    /// Restarts by its restart policy since it started or was restored here.
    pub restarts: std::sync::atomic::AtomicU32,
    /// The generation it runs under, readable while an epoch holds the state (lease
    /// renewals check it): kept equal to the state's.
    pub generation: std::sync::atomic::AtomicU64,
}

/// Wall-clock time, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

impl Primary {
    /// A primary workload with the given starting state.
    pub fn new(spec: WorkloadSpec, state: PrimaryState) -> Arc<Self> {
        let pid = state.running.as_ref().map_or(0, |r| r.pid);
        let generation = state.generation;
        Arc::new(Primary {
            spec,
            state: Mutex::new(state),
            pid: std::sync::atomic::AtomicI32::new(pid),
            restarts: std::sync::atomic::AtomicU32::new(0),
            generation: std::sync::atomic::AtomicU64::new(generation),
        })
    }

    /// Starts (or restarts) the periodic epoch loop.
    pub async fn start_loop(self: &Arc<Self>, node: &Arc<Node>) {
        let id = {
            let mut st = self.state.lock().await;
            st.loop_id += 1;
            st.epochs_paused = false;
            st.loop_id
        };
        let (me, node) = (self.clone(), node.clone());
        tokio::spawn(async move { me.epoch_loop(node, id).await });
    }

    /// Stops the periodic epoch loop.
    pub async fn stop_loop(&self) {
        self.state.lock().await.loop_id += 1;
    }

    async fn epoch_loop(self: Arc<Self>, node: Arc<Node>, id: u64) {
        let interval = Duration::from_millis(self.spec.interval_ms);
        loop {
            tokio::time::sleep(interval).await;
            let mut st = self.state.lock().await;
            if st.loop_id != id {
                return;
            }
            if st.running.is_none() {
                continue;
            }
            if self.frozen().await {
                // Nothing changes in a copy frozen for lack of a lease, and a dump would
                // run CRIU's parasite inside it: its epochs wait for the lease.
                if st.last_unprotected.as_deref() != Some(FROZEN) {
                    tracing::info!(workload = %self.spec.name, "{FROZEN}");
                    st.last_unprotected = Some(FROZEN.to_owned());
                }
                continue;
            }
            let generation = st.generation;
            match self.take_epoch(&node, &mut st, false).await {
                Ok(report) => {
                    st.last_unprotected = None;
                    node.report(Report::EpochCommitted(report));
                }
                Err(reason) => {
                    if st.last_unprotected.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(workload = %self.spec.name, "epoch failed: {reason}");
                        st.last_unprotected = Some(reason.clone());
                        node.report(Report::Unprotected {
                            workload: self.spec.name.clone(),
                            generation,
                            reason,
                        });
                    }
                }
            }
        }
    }

    /// Moves the copy to `generation`: leases for it are passed on from now on.
    pub fn set_generation(&self, st: &mut PrimaryState, generation: u64) {
        st.generation = generation;
        self.generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the workload's supervisor holds it frozen for lack of a lease (`false` when
    /// it cannot say).
    async fn frozen(&self) -> bool {
        let name = self.spec.name.clone();
        let req = crate::supervisor::control::Request::Status;
        tokio::task::spawn_blocking(move || {
            crate::supervisor::control::ask(&name, &req, Duration::from_secs(1))
        })
        .await
        .is_ok_and(|a| a.is_ok_and(|s| s.frozen))
    }

    /// Takes one epoch and sends it to the shadow. A final epoch leaves the tree stopped
    /// (CRIU kills it after a successful dump) and keeps the dump to resume from.
    pub async fn take_epoch(
        &self,
        node: &Arc<Node>,
        st: &mut PrimaryState,
        final_epoch: bool,
    ) -> Result<EpochReport, String> {
        let criu = node.criu.clone().map_err(|e| format!("unprotected: {e}"))?;
        let running = st
            .running
            .clone()
            .ok_or("the workload is not running here")?;
        let shadow = st.shadow.clone().ok_or("no shadow host")?;
        let epoch = st.next_epoch;
        st.next_epoch += 1;
        let dir = Paths::new(&node.data_dir, &self.spec.name)
            .primary_epochs()
            .join(format!("epoch-{epoch}"));
        if final_epoch {
            running.expect_exit();
        }
        let req = DumpRequest {
            workload: self.spec.name.clone(),
            generation: st.generation,
            epoch,
            pid: running.pid,
            stdio_key: running.stdio_key.clone(),
            leave_running: !final_epoch,
            dir: dir.clone(),
            data: self
                .spec
                .data_dirs
                .iter()
                .map(|d| capture::Dir {
                    logical: d.clone(),
                    host: node.data_roots.host_path(d),
                })
                .collect(),
            index: st
                .acked
                .as_ref()
                .map_or_else(Default::default, |b| b.index.clone()),
            sigs: st
                .acked
                .as_ref()
                .map_or_else(Default::default, |b| b.sigs.clone()),
        };
        let dumped = match checkpoint::dump(criu, req).await {
            Ok(d) => d,
            Err(e) => {
                if final_epoch && running.is_alive() {
                    running.unexpect_exit();
                }
                return Err(format!("unprotected: {e}"));
            }
        };
        if final_epoch {
            st.running = None;
            st.final_dump = Some((dumped.dir.clone(), dumped.manifest.clone()));
        }
        let cpu_before = cpu_ms();
        let lagging = |e: String| {
            format!(
                "shadow lagging: {} has not committed epoch {epoch}: {e}",
                shadow.name
            )
        };
        let conn = match node.connect(&shadow).await {
            Ok(c) => c,
            Err(e) => {
                if !final_epoch {
                    checkpoint::remove_dir(&dir);
                }
                return Err(lagging(e));
            }
        };
        let (name, generation) = (self.spec.name.clone(), st.generation);
        let node2 = node.clone();
        let progress = move |sent: u64, total: u64| {
            node2.report(Report::Progress {
                workload: name.clone(),
                generation,
                sent,
                total,
            });
        };
        let send_started = Instant::now();
        let sent = match send_epoch(&conn, &dumped, st.acked.as_ref(), final_epoch, &progress).await
        {
            Ok(s) => s,
            Err(e) => {
                if !final_epoch {
                    checkpoint::remove_dir(&dir);
                }
                if e.starts_with(BASE_LOST) {
                    st.acked = None;
                }
                return Err(lagging(e));
            }
        };
        tracing::debug!(
            workload = %self.spec.name,
            epoch,
            final_epoch,
            dump_ms = dumped.frozen_ms,
            send_ms = send_started.elapsed().as_millis() as u64,
            bytes_sent = sent.bytes_sent,
            "epoch committed on the shadow"
        );
        // The signatures are all the next delta needs; only a final dump is kept, to
        // resume from if the switchover fails.
        if !final_epoch {
            checkpoint::remove_dir(&dir);
        }
        st.acked = Some(Base {
            epoch,
            sigs: Arc::new(sent.sigs),
            index: Arc::new(dumped.index),
        });
        if !final_epoch {
            // A restarted agent takes the tree back from here, numbering on.
            if let Err(e) = node.record_copy(
                &self.spec,
                st.generation,
                Some(&shadow),
                running.pid,
                st.next_epoch,
            ) {
                tracing::warn!(workload = %self.spec.name, "cannot record the epoch's progress: {e}");
            }
        }
        Ok(EpochReport {
            workload: self.spec.name.clone(),
            generation: st.generation,
            epoch,
            shadow: shadow.name,
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
            incremental: false,
        })
    }
}

/// Restores `workload` from the epoch in `dir` as this host's child, checks it is alive
/// (and passes the spec's probe), and returns it running with its output pumped to the
/// workload's log. On a failed check the restored tree is killed.
pub async fn restore_tree(
    node: &Arc<Node>,
    spec: &WorkloadSpec,
    generation: u64,
    dir: PathBuf,
    manifest: &Manifest,
) -> Result<(Running, u64, u64), String> {
    let criu = node.criu.clone()?;
    let paths = Paths::new(&node.data_dir, &spec.name);
    let _ = std::fs::create_dir_all(paths.root());
    // The supervisor goes on appending to this host's log in place of the dumped host's.
    let log = open_log(&paths.output_log())
        .map_err(|e| format!("{}: {e}", paths.output_log().display()))?;
    let started = Instant::now();
    let data_dirs = node.data_host_paths(spec);
    let pid = checkpoint::restore(criu, dir, manifest.stdio_key.clone(), log, data_dirs).await?;
    tracing::debug!(workload = %spec.name, pid, ms = started.elapsed().as_millis() as u64, "CRIU restore done");
    let restore_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let name = spec.name.clone();
    let _ = tokio::task::spawn_blocking(move || crate::workload::place_in_scope(&name, pid)).await;
    let running = adopt_restored(
        pid,
        &paths.output_log(),
        exit_hook(node, &spec.name, generation),
    );
    let started = Instant::now();
    if let Err(e) = liveness(&running, spec.probe.as_ref()).await {
        running.kill();
        return Err(format!("restored workload failed its liveness check: {e}"));
    }
    let check_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((running, restore_ms, check_ms))
}

async fn liveness(running: &Running, probe: Option<&Probe>) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if !running.is_alive() {
        return Err("the restored process tree exited at once".into());
    }
    let Some(probe) = probe else {
        return Ok(());
    };
    // A TCP server may need a moment to accept again after the restore: retry for 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match crate::workload::probes::once(probe, Duration::from_secs(10)).await {
            Ok(_) => return Ok(()),
            Err(e) if matches!(probe, Probe::Command { .. }) || Instant::now() >= deadline => {
                return Err(e)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
