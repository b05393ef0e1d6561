//! Capturing a workload's data directories for one epoch.
//!
//! [`capture`] runs while CRIU holds the process tree frozen, so it does as little as it
//! can: one `lstat` per entry, compared with what the shadow last acknowledged
//! ([`Index`]); only files whose inode, size or modification time changed (or whose
//! timestamps were too recent to trust, see [`RACY_NS`]) are copied into the epoch's
//! directory (`copy_file_range`, a reflink on filesystems that have them). [`finish`] runs
//! after the thaw and hashes the copies. Unchanged files are never read: their hash and
//! page signature come from the previous epoch, and the shadow links them from its copy.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use understudy_common::data_entry::{wire_name, DataEntry, DataKind, Meta};
use understudy_common::epoch::hash_file;

use super::meta;
use super::patch::{self, Patch, PATCH_MIN_BYTES};
use crate::replication::delta::PageSignature;

/// A file whose modification time is this close to the capture (or after it) is "racy":
/// a write right after the thaw could leave size and mtime unchanged within the
/// filesystem's timestamp granularity, so the next capture copies and hashes it again
/// instead of trusting its metadata (git's racy-clean rule).
pub const RACY_NS: i64 = 100_000_000;

/// What `lstat` says about a regular file, as far as change detection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: u64,
    /// Size.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Status-change time, ns (owner, mode, xattrs, links, renames).
    pub ctime_ns: i64,
}

impl Stat {
    fn of(md: &std::fs::Metadata) -> Self {
        Stat {
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        }
    }
}

/// One entry the shadow holds.
#[derive(Debug, Clone)]
pub struct Known {
    /// The file's stat when captured (None for directories and symlinks).
    pub stat: Option<Stat>,
    /// Its timestamps were too recent to trust at capture time.
    pub racy: bool,
    /// The manifest entry.
    pub entry: DataEntry,
}

/// The data-directory entries of the epoch the shadow last acknowledged, by path.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: HashMap<String, Known>,
}

impl Index {
    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Known> {
        self.entries.get(path)
    }

    /// The hash of the file at `path`, for deciding what the shadow already has.
    pub fn file_hash(&self, path: &str) -> Option<[u8; 32]> {
        match self.get(path)?.entry.kind {
            DataKind::File { blake3, .. } => Some(blake3),
            _ => None,
        }
    }
}

/// What to do with a regular file found by a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed: reuse the known entry as it is.
    Reuse,
    /// Same content as the known file at `origin` (a rename, chmod, chown, xattr change):
    /// reuse its hash, read the metadata again.
    SameContent {
        /// Where the content was.
        origin: String,
    },
    /// Copy it now and hash it after the thaw; deltas go against `origin`, if any.
    Snapshot {
        /// The base epoch's file holding its previous content.
        origin: Option<String>,
    },
}

/// Decides what a capture does with the file at `path` whose stat is `now`; `by_ino` maps
/// the index's inode numbers to their paths.
pub fn decide(path: &str, now: &Stat, index: &Index, by_ino: &HashMap<u64, String>) -> Decision {
    let same_path = index
        .get(path)
        .filter(|k| k.stat.is_some_and(|s| s.ino == now.ino));
    let candidate = same_path.or_else(|| by_ino.get(&now.ino).and_then(|p| index.get(p)));
    if let Some(k) = candidate {
        if let Some(prev) = k.stat {
            let content_same =
                prev.ino == now.ino && prev.size == now.size && prev.mtime_ns == now.mtime_ns;
            if content_same && !k.racy {
                if k.entry.path == path && prev.ctime_ns == now.ctime_ns {
                    return Decision::Reuse;
                }
                return Decision::SameContent {
                    origin: k.entry.path.clone(),
                };
            }
        }
        return Decision::Snapshot {
            origin: Some(k.entry.path.clone()),
        };
    }
    let replaced = index
        .get(path)
        .filter(|k| matches!(k.entry.kind, DataKind::File { .. }));
    Decision::Snapshot {
        origin: replaced.map(|_| path.to_owned()),
    }
}

#[derive(Debug)]
enum Item {
    Ready(Known),
    Patched {
        path: String,
        stat: Stat,
        meta: Meta,
        origin: String,
        patch: Patch,
    },
    Snapshot {
        path: String,
        stat: Stat,
        meta: Meta,
        origin: Option<String>,
    },
}

/// A capture taken while the tree was frozen, to be finished after the thaw.
#[derive(Debug)]
pub struct Capture {
    items: Vec<Item>,
    captured_at_ns: i64,
    /// Bytes copied while frozen.
    pub snapshot_bytes: u64,
    /// Time the capture took (all of it while frozen), milliseconds.
    pub ms: u64,
}

/// One data directory to capture.
#[derive(Debug, Clone)]
pub struct Dir {
    /// The path the workload sees (for messages).
    pub logical: PathBuf,
    /// Where it is on this host.
    pub host: PathBuf,
}

/// Test-only fault injection: `UNDERSTUDY_FAULT_UNREADABLE=TEXT` makes reading any data
/// file whose path contains TEXT fail with "permission denied", as it would for an agent
/// without the rights (the agent runs as root, which reads everything).
fn injected_unreadable(rel: &str) -> bool {
    std::env::var("UNDERSTUDY_FAULT_UNREADABLE").is_ok_and(|t| !t.is_empty() && rel.contains(&t))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

struct Walk<'a> {
    index: &'a Index,
    sigs: &'a HashMap<String, PageSignature>,
    always: &'a HashSet<String>,
    by_ino: HashMap<u64, String>,
    snap_root: &'a Path,
    items: Vec<Item>,
    snapshot_bytes: u64,
}

impl Walk<'_> {
    fn dir(&mut self, host: &Path, logical: &Path, path: &str) -> Result<(), String> {
        let shown = |p: &Path| logical.join(p).display().to_string();
        let mut children: Vec<_> = std::fs::read_dir(host)
            .map_err(|e| format!("cannot read data directory {}: {e}", logical.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read data directory {}: {e}", logical.display()))?;
        children.sort_by_key(std::fs::DirEntry::file_name);
        for child in children {
            let name = child.file_name();
            let Some(name) = name.to_str() else {
                return Err(format!(
                    "{}: file names must be valid UTF-8",
                    shown(Path::new(&name))
                ));
            };
            let child_path = format!("{path}/{name}");
            let host_child = child.path();
            let logical_child = logical.join(name);
            let err = |e: std::io::Error| {
                format!("cannot read data file {}: {e}", logical_child.display())
            };
            let md = std::fs::symlink_metadata(&host_child).map_err(err)?;
            let ft = md.file_type();
            if ft.is_dir() {
                let meta = meta::read(&host_child, &md).map_err(err)?;
                self.ready(child_path.clone(), None, DataKind::Dir, meta);
                self.dir(&host_child, &logical_child, &child_path)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host_child).map_err(err)?;
                let target = target.to_str().ok_or_else(|| {
                    format!(
                        "{}: symlink target is not valid UTF-8",
                        logical_child.display()
                    )
                })?;
                let meta = meta::read(&host_child, &md).map_err(err)?;
                let kind = DataKind::Symlink {
                    target: target.to_owned(),
                };
                self.ready(child_path, None, kind, meta);
            } else if ft.is_file() {
                self.file(&host_child, &logical_child, child_path, &md)?;
            } else {
                tracing::debug!(
                    "skipping {} (not a file, directory or symlink)",
                    logical_child.display()
                );
            }
        }
        Ok(())
    }

    fn ready(&mut self, path: String, stat: Option<Stat>, kind: DataKind, meta: Meta) {
        self.items.push(Item::Ready(Known {
            stat,
            racy: false,
            entry: DataEntry { path, kind, meta },
        }));
    }

    fn file(
        &mut self,
        host: &Path,
        logical: &Path,
        path: String,
        md: &std::fs::Metadata,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot read data file {}: {e}", logical.display());
        let stat = Stat::of(md);
        let mut decision = decide(&path, &stat, self.index, &self.by_ino);
        if self.always.contains(&path) && !matches!(decision, Decision::Snapshot { .. }) {
            decision = Decision::Snapshot {
                origin: Some(path.clone()),
            };
        }
        match decision {
            Decision::Reuse => {
                if let Some(k) = self.index.get(&path) {
                    let mut known = k.clone();
                    // Its content is the base's file at this very path now.
                    if let DataKind::File { origin, .. } = &mut known.entry.kind {
                        *origin = Some(path.clone());
                    }
                    self.items.push(Item::Ready(known));
                }
            }
            Decision::SameContent { origin } => {
                let meta = meta::read(host, md).map_err(err)?;
                let mut known = self.index.get(&origin).cloned().ok_or("index changed")?;
                known.stat = Some(stat);
                if let DataKind::File { origin: o, .. } = &mut known.entry.kind {
                    *o = Some(origin.clone());
                }
                known.entry.path = path;
                known.entry.meta = meta;
                self.items.push(Item::Ready(known));
            }
            Decision::Snapshot { origin } => {
                if injected_unreadable(&path) {
                    return Err(err(std::io::Error::from(nix::errno::Errno::EACCES)));
                }
                let meta = meta::read(host, md).map_err(err)?;
                let dst = self.snap_root.join(wire_name(&path));
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("snapshot {}: {e}", parent.display()))?;
                }
                let base_sig = origin
                    .as_ref()
                    .filter(|_| stat.size >= PATCH_MIN_BYTES)
                    .and_then(|o| self.sigs.get(&wire_name(o)));
                if let (Some(o), Some(sig)) = (origin.clone(), base_sig) {
                    let patch = patch::capture(host, &patch_path(&dst), sig).map_err(err)?;
                    self.snapshot_bytes += patch.stored_bytes();
                    self.items.push(Item::Patched {
                        path,
                        stat: Stat {
                            size: patch.size,
                            ..stat
                        },
                        meta,
                        origin: o,
                        patch,
                    });
                    return Ok(());
                }
                let copied = std::fs::copy(host, &dst).map_err(err)?;
                self.snapshot_bytes += copied;
                self.items.push(Item::Snapshot {
                    path,
                    stat: Stat {
                        size: copied,
                        ..stat
                    },
                    meta,
                    origin,
                });
            }
        }
        Ok(())
    }
}

/// Where a file captured as changed pages keeps them, beside its would-be copy.
pub fn patch_path(copy: &Path) -> PathBuf {
    let mut name = copy.as_os_str().to_owned();
    name.push(".patch");
    PathBuf::from(name)
}

/// Captures `dirs` against `index` (what the shadow holds; empty for a whole epoch),
/// saving changed files, and the entry paths in `always` (files mapped shared and
/// writable), under `snap_root/data/`: as the pages that differ from the shadow's copy
/// when `sigs` has its page signature (by wire name), else as a copy. Call while the tree
/// is frozen.
pub fn capture(
    dirs: &[Dir],
    index: &Index,
    sigs: &HashMap<String, PageSignature>,
    always: &HashSet<String>,
    snap_root: &Path,
) -> Result<Capture, String> {
    let started = Instant::now();
    let captured_at_ns = now_ns();
    let by_ino = index
        .entries
        .values()
        .filter_map(|k| Some((k.stat?.ino, k.entry.path.clone())))
        .collect();
    let mut walk = Walk {
        index,
        sigs,
        always,
        by_ino,
        snap_root,
        items: Vec::new(),
        snapshot_bytes: 0,
    };
    for (i, dir) in dirs.iter().enumerate() {
        let path = i.to_string();
        let md = std::fs::symlink_metadata(&dir.host)
            .map_err(|e| format!("data directory {}: {e}", dir.logical.display()))?;
        if !md.is_dir() {
            return Err(format!(
                "data directory {} is not a directory",
                dir.logical.display()
            ));
        }
        let meta = meta::read(&dir.host, &md)
            .map_err(|e| format!("data directory {}: {e}", dir.logical.display()))?;
        walk.ready(path.clone(), None, DataKind::Dir, meta);
        walk.dir(&dir.host, &dir.logical, &path)?;
    }
    Ok(Capture {
        items: walk.items,
        captured_at_ns,
        snapshot_bytes: walk.snapshot_bytes,
        ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// What [`finish`] returns.
#[derive(Debug, Default)]
pub struct Finished {
    /// The manifest's data entries.
    pub entries: Vec<DataEntry>,
    /// What the shadow holds once it commits them.
    pub index: Index,
    /// Files captured as changed pages, by wire name.
    pub patches: HashMap<String, Patch>,
}

/// Hashes the copies (after the thaw) and returns the manifest entries, the index the
/// shadow will hold once it commits them, and the files captured as patches.
pub fn finish(capture: Capture, snap_root: &Path) -> Result<Finished, String> {
    let mut entries = Vec::with_capacity(capture.items.len());
    let mut index = Index::default();
    let mut patches = HashMap::new();
    for item in capture.items {
        let known = match item {
            Item::Ready(k) => k,
            Item::Patched {
                path,
                stat,
                meta,
                origin,
                patch,
            } => {
                let racy = stat.mtime_ns >= capture.captured_at_ns - RACY_NS;
                let entry = DataEntry {
                    path,
                    kind: DataKind::File {
                        size: patch.size,
                        blake3: patch.blake3,
                        origin: Some(origin),
                    },
                    meta,
                };
                patches.insert(wire_name(&entry.path), patch);
                Known {
                    stat: Some(stat),
                    racy,
                    entry,
                }
            }
            Item::Snapshot {
                path,
                stat,
                meta,
                origin,
            } => {
                let copy = snap_root.join(wire_name(&path));
                let (size, blake3) =
                    hash_file(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
                let racy = stat.mtime_ns >= capture.captured_at_ns - RACY_NS;
                Known {
                    stat: Some(stat),
                    racy,
                    entry: DataEntry {
                        path,
                        kind: DataKind::File {
                            size,
                            blake3,
                            origin,
                        },
                        meta,
                    },
                }
            }
        };
        entries.push(known.entry.clone());
        index.entries.insert(known.entry.path.clone(), known);
    }
    Ok(Finished {
        entries,
        index,
        patches,
    })
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
