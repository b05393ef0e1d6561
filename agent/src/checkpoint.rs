//! Taking a checkpoint epoch on the primary: a CRIU dump of the tree into a fresh
//! directory, the workload's data directories captured while CRIU still holds the tree
//! frozen (its `post-dump` notification), then a manifest with every file's size and
//! BLAKE3 hash. Restoring maps the data-directory mounts to this host's copies.
//!
//! CRIU calls block, so they run on tokio's blocking pool, never on the async workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criu_sys::{Criu, DumpOptions, NetworkLock, RestoreOptions};
use understudy_common::data_entry::DATA_PREFIX;
use understudy_common::epoch::{FileEntry, Manifest, MANIFEST_FILE};

use crate::clock::now_ms;
use crate::datadir::capture::{self, Index};
use crate::datadir::mapped::shared_writable;
use crate::datadir::mount_key;
use crate::datadir::patch::Patch;
use crate::replication::delta::PageSignature;

/// Deleted-but-open files up to this size are saved in the images (CRIU's default is 1 MiB).
const GHOST_LIMIT: u32 = 64 << 20;

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
    /// Of `frozen_ms`, the time spent capturing data directories.
    pub frozen_disk_ms: u64,
    /// Data-directory bytes copied while frozen.
    pub snapshot_bytes: u64,
    /// What the shadow holds of the data directories once it commits this epoch.
    pub index: Index,
    /// Data files captured as changed pages, by wire name.
    pub patches: HashMap<String, Patch>,
    /// With memory tracking: the pages CRIU wrote while frozen, of all the dump holds.
    pub tracked: Option<crate::tracked::Flattened>,
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
    /// CRIU inherit-fd key of its output log.
    pub stdio_key: String,
    /// Keep the tree running (periodic epoch) or let CRIU stop it (final epoch).
    pub leave_running: bool,
    /// Where to write the images (created; must not exist).
    pub dir: PathBuf,
    /// The workload's data directories, in spec order.
    pub data: Vec<capture::Dir>,
    /// What the shadow holds of them (empty: capture everything).
    pub index: Arc<Index>,
    /// Page signatures of the shadow's files, by wire name.
    pub sigs: Arc<HashMap<String, PageSignature>>,
    /// Track written pages (soft-dirty), so that the next dump can name this one as parent.
    pub track_mem: bool,
    /// The whole previous dump of this tree, taken with tracking: pages not written since
    /// are left in it and copied from it once the tree runs again.
    pub parent: Option<PathBuf>,
}

/// Dumps the tree and builds the manifest. On error the directory is removed.
pub async fn dump(criu: Arc<Criu>, mut req: DumpRequest) -> Result<Dumped, String> {
    tokio::task::spawn_blocking(move || {
        let mut result = dump_blocking(&criu, &req);
        if let Err(first) = &result {
            // A process entering or leaving the tree while CRIU walks it (a short-lived
            // helper, a socket being set up) fails the dump without anything being wrong
            // with the workload: CRIU leaves the tree as it was, so it is tried once more.
            let _ = std::fs::remove_dir_all(&req.dir);
            tracing::warn!(pid = req.pid, "criu dump failed, trying once more: {first}");
            std::thread::sleep(std::time::Duration::from_millis(200));
            let first = first.clone();
            // The failed attempt may have cleared the dirty bits after writing only part of
            // what changed: the parent no longer tells what was written since.
            req.parent = None;
            result =
                dump_blocking(&criu, &req).map_err(|e| format!("{e} (and before that: {first})"));
        }
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&req.dir);
        }
        result
    })
    .await
    .map_err(|e| format!("dump task failed: {e}"))?
}

/// Where CRIU's parasite mounts a procfs of the tree's own when the tree's `/proc` is
/// another PID namespace's: `proc.crtools` in the working directory of the tree's root.
const PARASITE_PROC_DIR: &str = "proc.crtools";

/// Removes the directory an interrupted dump (CRIU killed while its parasite held the
/// tree) left behind: CRIU creates it without tolerating one already there, so one left
/// over fails every later dump of a tree rooted in that directory ("Can't get /proc fd").
/// Only an empty directory goes; a user's file of that name is left alone.
fn remove_leftover_parasite_dir(pid: i32) {
    let dir = PathBuf::from(format!("/proc/{pid}/cwd/{PARASITE_PROC_DIR}"));
    if !dir.is_dir() {
        return;
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => tracing::warn!(
            pid,
            "removed {PARASITE_PROC_DIR} left in the tree's working directory by an interrupted dump"
        ),
        Err(e) => tracing::warn!(
            pid,
            "{PARASITE_PROC_DIR} in the tree's working directory, left by an interrupted dump, could not be removed: {e}"
        ),
    }
}

fn dump_blocking(criu: &Criu, req: &DumpRequest) -> Result<Dumped, String> {
    std::fs::create_dir_all(&req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    remove_leftover_parasite_dir(req.pid);
    let has_data = !req.data.is_empty();
    // A tree with its own mount namespace holds the output log through a mount of the
    // agent's namespace, which CRIU cannot find among the tree's mounts once the tree was
    // restored (its namespace is then CRIU's rebuild): the log is dumped as an external
    // file instead, handed back at restore under the same key, as the path key is.
    let log_keys = if has_data {
        external_log_keys(req.pid, &req.stdio_key)
    } else {
        Vec::new()
    };
    let stdio_key = if log_keys.is_empty() {
        req.stdio_key.clone()
    } else {
        log_keys.join("\n")
    };
    let opts = DumpOptions {
        pid: req.pid,
        images_dir: req.dir.clone(),
        leave_running: req.leave_running,
        tcp_established: true,
        // A client connecting at the instant of the dump (the agent's own TCP probe, too)
        // must not fail the epoch or a switchover: it is reset and connects again.
        tcp_skip_in_flight: true,
        file_locks: true,
        network_lock: NetworkLock::Nftables,
        // Errors and warnings only: level 4 logs every VMA and page run, which slows
        // large dumps, and the failure reason needs only the error lines.
        log_level: 2,
        ext_mounts: req
            .data
            .iter()
            .enumerate()
            .map(|(i, d)| (d.logical.display().to_string(), mount_key(i)))
            .collect(),
        auto_external_mounts: has_data,
        ghost_limit: Some(GHOST_LIMIT),
        external: log_keys,
        track_mem: req.track_mem,
        parent_images: req.parent.as_ref().map(|p| p.display().to_string()),
        ..DumpOptions::default()
    };
    let taken_unix_ms = now_ms();
    let started = Instant::now();
    let mut captured: Option<Result<capture::Capture, String>> = None;
    let mut made_whole: Option<Result<Option<crate::tracked::Flattened>, String>> = None;
    let mut on_notify = |action: &str| {
        // CRIU runs post-dump after the images are written and before it thaws (or
        // kills) the tree: the data directories are cut at the same instant as memory.
        if action != "post-dump" {
            return true;
        }
        if has_data {
            let logical: Vec<PathBuf> = req.data.iter().map(|d| d.logical.clone()).collect();
            let always = shared_writable(req.pid, &logical);
            let result = capture::capture(&req.data, &req.index, &req.sigs, &always, &req.dir);
            let ok = result.is_ok();
            captured = Some(result);
            if !ok {
                return false;
            }
        }
        if req.leave_running {
            return true;
        }
        // A final dump's images are finished while CRIU still holds the tree: if they
        // cannot be, CRIU resumes it rather than kill a tree that has no whole image.
        let result = final_images(req);
        let ok = result.is_ok();
        made_whole = Some(result);
        ok
    };
    let dumped = criu.dump_with_notify(&opts, &mut on_notify);
    let frozen_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let capture = match (dumped, captured, &made_whole) {
        (_, Some(Err(e)), _) => return Err(format!("data directories not captured: {e}")),
        (_, _, Some(Err(e))) => return Err(format!("final dump not finished: {e}")),
        (Err(e), _, _) => return Err(e.to_string()),
        (Ok(()), Some(Ok(c)), _) => Some(c),
        (Ok(()), None, _) if has_data => {
            return Err("CRIU never reported post-dump; data directories not captured".into())
        }
        (Ok(()), None, _) => None,
    };
    if !req.leave_running && made_whole.is_none() {
        return Err("CRIU never reported post-dump; the final dump was not finished".into());
    }
    // The tree runs again: runs left in the parent are copied in.
    let tracked = match (made_whole, &req.parent, req.track_mem) {
        (Some(Ok(t)), _, _) => t,
        (_, Some(parent), _) => Some(
            crate::tracked::flatten(&req.dir, parent)
                .map_err(|e| format!("memory-tracking dump not made whole: {e}"))?,
        ),
        (_, None, true) => Some(
            crate::tracked::flatten(&req.dir, &req.dir)
                .map_err(|e| format!("memory-tracking dump not counted: {e}"))?,
        ),
        (_, None, false) => None,
    };
    let (frozen_disk_ms, snapshot_bytes) = capture
        .as_ref()
        .map_or((0, 0), |c| (c.ms, c.snapshot_bytes));
    let mut manifest = build_manifest(req, &stdio_key, taken_unix_ms)?;
    let mut index = Index::default();
    let mut patches = HashMap::new();
    if let Some(c) = capture {
        let finished = capture::finish(c, &req.dir)?;
        manifest.data = finished.entries;
        index = finished.index;
        patches = finished.patches;
    }
    Ok(Dumped {
        dir: req.dir.clone(),
        manifest,
        frozen_ms,
        frozen_disk_ms,
        snapshot_bytes,
        index,
        patches,
        tracked,
    })
}

/// A post-copy dump of the tree (no data directories): CRIU writes the images without the
/// memory, then serves the memory from a page server on `server` until a `criu lazy-pages`
/// daemon has taken it all. At `post-dump`, while CRIU still holds the tree, the tree is
/// fenced (`crate::postcopy::fence`) and `on_images` gets the images' manifest (with every
/// file's hash). Returns when the transfer is over: `Ok` once every page was taken (CRIU
/// then killed the tree), an error otherwise (the tree is left stopped by the fence, or
/// running if CRIU failed before `post-dump`).
pub fn dump_lazy_blocking(
    criu: &Criu,
    req: &DumpRequest,
    server: criu_sys::PageServer,
    on_images: &mut dyn FnMut(Result<Manifest, String>),
) -> Result<(), String> {
    std::fs::create_dir_all(&req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    remove_leftover_parasite_dir(req.pid);
    let opts = DumpOptions {
        pid: req.pid,
        images_dir: req.dir.clone(),
        leave_running: false,
        tcp_established: true,
        tcp_skip_in_flight: true,
        file_locks: true,
        network_lock: NetworkLock::Nftables,
        log_level: 2,
        ghost_limit: Some(GHOST_LIMIT),
        lazy_pages: Some(server),
        ..DumpOptions::default()
    };
    let taken_unix_ms = now_ms();
    let mut told = false;
    let mut on_notify = |action: &str| {
        if action != "post-dump" {
            return true;
        }
        crate::postcopy::fence(req.pid);
        told = true;
        on_images(
            build_manifest(req, &req.stdio_key, taken_unix_ms).and_then(|mut m| {
                for f in &mut m.files {
                    let path = req.dir.join(&f.name);
                    let bytes =
                        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    f.blake3 = *blake3::hash(&bytes).as_bytes();
                }
                Ok(m)
            }),
        );
        true
    };
    let result = criu
        .dump_with_notify(&opts, &mut on_notify)
        .map_err(|e| e.to_string());
    if !told {
        on_images(Err(match &result {
            Err(e) => e.clone(),
            Ok(()) => "CRIU never reported post-dump".into(),
        }));
    }
    result
}

/// A final dump made whole (with a parent) or counted (tracked), while the tree is frozen.
fn final_images(req: &DumpRequest) -> Result<Option<crate::tracked::Flattened>, String> {
    crate::faults::final_images()?;
    let flattened = match (&req.parent, req.track_mem) {
        (Some(parent), _) => crate::tracked::flatten(&req.dir, parent)
            .map_err(|e| format!("memory-tracking dump not made whole: {e}"))?,
        (None, true) => crate::tracked::flatten(&req.dir, &req.dir)
            .map_err(|e| format!("memory-tracking dump not counted: {e}"))?,
        (None, false) => return Ok(None),
    };
    Ok(Some(flattened))
}

fn build_manifest(
    req: &DumpRequest,
    stdio_key: &str,
    taken_unix_ms: u64,
) -> Result<Manifest, String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(&req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_log(&name) || name == MANIFEST_FILE || DATA_PREFIX.trim_end_matches('/') == name {
            continue;
        }
        // Sizes only: what the shadow checks is the sealed file's digest, computed as the
        // file is sealed (`replication::send`); hashing the plaintext here would cost a
        // pass over every image, inside a final epoch's freeze.
        let size = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?
            .len();
        files.push(FileEntry {
            name,
            size,
            blake3: [0; 32],
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Manifest {
        workload: req.workload.clone(),
        generation: req.generation,
        epoch: req.epoch,
        taken_unix_ms,
        stdio_key: Some(stdio_key.to_owned()),
        files,
        data: Vec::new(),
        seal: None,
    })
}

/// Restores the tree from `dir` as a child of this process, handing it `log` (this host's
/// output log) in place of the dumped host's and binding its data-directory mounts to
/// `data_dirs` (this host's copies, in spec order). Returns the restored root's pid.
pub async fn restore(
    criu: Arc<Criu>,
    dir: PathBuf,
    stdio_key: Option<String>,
    log: std::os::fd::OwnedFd,
    data_dirs: Vec<PathBuf>,
    lazy: bool,
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
            file_locks: true,
            log_level: 2,
            // Restored where the agent's own CRIU runs; the agent then moves the tree into
            // the workload's own scope (workload::scope), never into cgroups recreated
            // behind the service manager's back.
            ignore_cgroups: true,
            lazy_pages: lazy,
            ..RestoreOptions::default()
        };
        if !data_dirs.is_empty() {
            // The tree has its own mount namespace: CRIU rebuilds it on this host's root,
            // with each data directory bound from this host's copy.
            opts.root = Some(PathBuf::from("/"));
            opts.auto_external_mounts = true;
            opts.ext_mounts = data_dirs
                .iter()
                .enumerate()
                .map(|(i, d)| (mount_key(i), d.display().to_string()))
                .collect();
        }
        // One key per line: the log's path, or its external-file keys.
        for key in stdio_key.iter().flat_map(|k| k.lines()) {
            opts.inherit_fds.push((log.as_raw_fd(), key.to_owned()));
        }
        let pid = criu.restore_child(&opts).map_err(|e| e.to_string());
        drop(log);
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

/// CRIU's external-file keys (`file[MNT_ID:INODE]`, in hex) of every descriptor the tree
/// rooted at `root` holds on the output log whose inherit-fd key is `path_key` (its path
/// without the leading `/`).
fn external_log_keys(root: i32, path_key: &str) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let log = Path::new("/").join(path_key);
    let mut keys = Vec::new();
    for pid in crate::workload::stats::pids(root) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).ok().as_deref() != Some(log.as_path()) {
                continue;
            }
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            let mnt_id = std::fs::read_to_string(info).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("mnt_id:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            });
            let ino = std::fs::metadata(fd.path()).map(|m| m.ino());
            if let (Some(mnt_id), Ok(ino)) = (mnt_id, ino) {
                let key = format!("file[{mnt_id:x}:{ino:x}]");
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    keys
}
