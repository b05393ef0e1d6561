//! Taking a checkpoint epoch on the primary: a CRIU dump of the tree into a fresh
//! directory, then a manifest with every file's size and BLAKE3 hash.
//!
//! CRIU calls block, so they run on tokio's blocking pool, never on the async workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use criu_sys::{Criu, DumpOptions, NetworkLock, RestoreOptions};
use understudy_common::epoch::{hash_file, FileEntry, Manifest, MANIFEST_FILE};

/// CRIU's own log files in an images directory: never part of an epoch.
pub fn is_log(name: &str) -> bool {
    name.ends_with(".log")
}

/// A dump that was taken, not yet sent.
#[derive(Debug)]
pub struct Dumped {
    /// The images directory.
    pub dir: PathBuf,
    /// What it holds.
    pub manifest: Manifest,
    /// How long the tree was frozen, milliseconds.
    pub frozen_ms: u64,
}

/// What to dump.
#[derive(Debug, Clone)]
pub struct DumpRequest {
    /// The workload.
    pub workload: String,
    /// Its generation.
    pub generation: u64,
    /// The epoch number to give the dump.
    pub epoch: u64,
    /// Root of the tree.
    pub pid: i32,
    /// Key of its stdout/stderr pipe.
    pub stdio_key: String,
    /// Keep the tree running (periodic epoch) or let CRIU stop it (final epoch).
    pub leave_running: bool,
    /// Where to write the images (created; must not exist).
    pub dir: PathBuf,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Dumps the tree and builds the manifest. On error the directory is removed.
pub async fn dump(criu: Arc<Criu>, req: DumpRequest) -> Result<Dumped, String> {
    tokio::task::spawn_blocking(move || {
        let result = dump_blocking(&criu, &req);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&req.dir);
        }
        result
    })
    .await
    .map_err(|e| format!("dump task failed: {e}"))?
}

fn dump_blocking(criu: &Criu, req: &DumpRequest) -> Result<Dumped, String> {
    std::fs::create_dir_all(&req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    let opts = DumpOptions {
        pid: req.pid,
        images_dir: req.dir.clone(),
        leave_running: req.leave_running,
        tcp_established: true,
        network_lock: NetworkLock::Nftables,
        // Errors and warnings only: level 4 logs every VMA and page run, which slows
        // large dumps, and the failure reason needs only the error lines.
        log_level: 2,
        ..DumpOptions::default()
    };
    let taken_unix_ms = now_ms();
    let started = Instant::now();
    criu.dump(&opts).map_err(|e| e.to_string())?;
    let frozen_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let manifest = build_manifest(req, taken_unix_ms)?;
    Ok(Dumped {
        dir: req.dir.clone(),
        manifest,
        frozen_ms,
    })
}

fn build_manifest(req: &DumpRequest, taken_unix_ms: u64) -> Result<Manifest, String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(&req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_log(&name) || name == MANIFEST_FILE {
            continue;
        }
        let (size, blake3) =
            hash_file(&entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        files.push(FileEntry { name, size, blake3 });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest {
        workload: req.workload.clone(),
        generation: req.generation,
        epoch: req.epoch,
        taken_unix_ms,
        stdio_key: Some(req.stdio_key.clone()),
        files,
    })
}

/// Restores the tree from `dir` as a child of this process, handing it `stdio_write` in
/// place of the dumped pipe. Returns the restored root's pid.
pub async fn restore(
    criu: Arc<Criu>,
    dir: PathBuf,
    stdio_key: Option<String>,
    stdio_write: std::os::fd::OwnedFd,
) -> Result<i32, String> {
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let mut opts = RestoreOptions {
            images_dir: dir,
            tcp_established: true,
            // Established connections belonged to the old host's address: restore them
            // closed, so clients reconnect, while listeners come back as they were.
            tcp_close: true,
            network_lock: NetworkLock::Nftables,
            log_level: 2,
            ..RestoreOptions::default()
        };
        if let Some(key) = stdio_key {
            opts.inherit_fds.push((stdio_write.as_raw_fd(), key));
        }
        let pid = criu.restore_child(&opts).map_err(|e| e.to_string());
        drop(stdio_write);
        pid
    })
    .await
    .map_err(|e| format!("restore task failed: {e}"))?
}

/// Removes `dir` if it exists; errors are logged, not returned.
pub fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}
