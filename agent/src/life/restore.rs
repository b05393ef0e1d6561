//! Restoring a workload's tree from an epoch directory as this process's child: CRIU's
//! restore, the tree placed in the workload's scope, then a liveness check (alive after a
//! moment, and the spec's probe answering) with a deadline. A tree that fails the check is
//! killed, and gone before the restore returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criu_sys::Criu;
use understudy_common::epoch::Manifest;
use understudy_common::seal::DataKey;
use understudy_common::workload::{Probe, WorkloadSpec};

use crate::workload::process::{adopt_restored, open_log, ExitHook, Running};
use crate::workload::Paths;

/// How long a restored TCP server may take to accept again.
const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// How long a tree that failed its check may take to be gone once killed.
const GONE_LIMIT: Duration = Duration::from_secs(10);

/// A tree restored and checked.
#[derive(Debug)]
pub struct Restored {
    /// The tree.
    pub running: Running,
    /// How long CRIU's restore took, milliseconds.
    pub restore_ms: u64,
    /// How long the liveness check took, milliseconds.
    pub check_ms: u64,
}

/// Restores `spec`'s workload from the epoch in `dir` (its output going on to this host's
/// log under `data_dir`, its data directories at `data_dirs`); `hook` hears of an exit
/// nobody asked for. A sealed epoch is opened with `key` first (`super::unseal`). With
/// `lazy`, the images hold no memory: a `criu lazy-pages` daemon already running on `dir`
/// feeds it (`crate::postcopy::target`).
pub async fn restore_tree(
    criu: Result<Arc<Criu>, String>,
    data_dir: &Path,
    spec: &WorkloadSpec,
    (dir, manifest, key): (PathBuf, &Manifest, Option<Arc<DataKey>>),
    data_dirs: Vec<PathBuf>,
    hook: ExitHook,
    lazy: bool,
) -> Result<Restored, String> {
    let criu = criu?;
    let paths = Paths::new(data_dir, &spec.name);
    let _ = std::fs::create_dir_all(paths.root());
    // The supervisor goes on appending to this host's log in place of the dumped host's.
    let log = open_log(&paths.output_log())
        .map_err(|e| format!("{}: {e}", paths.output_log().display()))?;
    let scratch = match (&manifest.seal, key) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(format!(
                "epoch {} is sealed and this host has no data key for {:?}",
                manifest.epoch, spec.name
            ))
        }
        (Some(_), Some(key)) => {
            let (d, m, fallback) = (dir.clone(), manifest.clone(), paths.root().to_owned());
            let opened = tokio::task::spawn_blocking(move || {
                super::unseal::open_epoch(&d, &m, &key, &fallback)
            })
            .await
            .map_err(|e| e.to_string())??;
            Some(opened)
        }
    };
    let images = scratch.as_ref().map_or(dir, |s| s.path().to_owned());
    // The tree's root is restored in its own working directory, which must exist here.
    crate::supervisor::home::ensure(&spec.name).map_err(|e| {
        format!(
            "{}: {e}",
            crate::supervisor::home::path(&spec.name).display()
        )
    })?;
    let started = Instant::now();
    let restored = crate::checkpoint::restore(
        criu,
        images,
        manifest.stdio_key.clone(),
        log,
        data_dirs,
        lazy,
    )
    .await;
    drop(scratch);
    let pid = restored?;
    let restore_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(workload = %spec.name, pid, restore_ms, "CRIU restore done");
    let name = spec.name.clone();
    let _ = tokio::task::spawn_blocking(move || crate::workload::place_in_scope(&name, pid)).await;
    let running = adopt_restored(pid, &paths.output_log(), hook);
    let started = Instant::now();
    if let Err(e) = liveness(&running, spec).await {
        running.kill();
        // Gone before anything else is restored in its place (an older epoch in a
        // failover): a dying tree could still hold its listening sockets.
        let deadline = Instant::now() + GONE_LIMIT;
        while running.is_alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return Err(format!("restored workload failed its liveness check: {e}"));
    }
    let check_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(Restored {
        running,
        restore_ms,
        check_ms,
    })
}

async fn liveness(running: &Running, spec: &WorkloadSpec) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if !running.is_alive() {
        return Err("the restored process tree exited at once".into());
    }
    let Some(probe) = spec.probe.as_ref() else {
        return Ok(());
    };
    // A command probe runs in the restored workload's namespaces, as its user.
    let within = crate::workload::probes::InWorkload {
        pid: running.pid,
        setpriv: crate::supervisor::account::of_spec(spec).map(|a| {
            if a.uid == 0 {
                Vec::new()
            } else {
                a.setpriv()
            }
        })?,
    };
    // A TCP server may need a moment to accept again after the restore: retry a while.
    let deadline = Instant::now() + PROBE_LIMIT;
    loop {
        match crate::workload::probes::once(probe, Duration::from_secs(10), Some(&within)).await {
            Ok(_) => return Ok(()),
            Err(e) if matches!(probe, Probe::Command { .. }) || Instant::now() >= deadline => {
                return Err(e)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
