//! Where the primary's dumps are written: memory-backed scratch space, so that neither a
//! periodic epoch's freeze nor a switchover's waits on the disk.
//!
//! A workload without data directories is dumped into `SCRATCH/WORKLOAD/epoch-N` — by
//! default `/dev/shm/understudy/HOST` when `/dev/shm` is a tmpfs, or the agent's
//! `scratch_dir` — and the images are removed once the shadow has committed them (a
//! switchover's final dump stays until the move is released). A workload with data
//! directories is dumped under the agent's data directory as before: its data files are
//! captured beside the images as copies that share blocks with the originals, which only
//! the file system holding them can make.
//!
//! Before a dump the free space is compared with what the tree holds in memory, so a
//! scratch space too small for it fails the epoch with a reason that says so, rather than
//! CRIU's failing half-way; the workload runs on and the shadow keeps its last epoch.

use std::path::{Path, PathBuf};

/// Room kept free beyond the tree's resident memory (image metadata, page tables).
const MARGIN: u64 = 16 << 20;

/// Why a dump does not fit the scratch space.
#[derive(Debug, thiserror::Error)]
#[error(
    "scratch space {dir} has {free_mib} MiB free, and the workload holds {need_mib} MiB in memory: \
     the dump does not fit (make it larger, or set [agent] scratch_dir)"
)]
pub struct NoRoom {
    /// The scratch directory.
    pub dir: String,
    /// Free space there, MiB.
    pub free_mib: u64,
    /// The tree's resident memory and a margin, MiB.
    pub need_mib: u64,
}

/// The scratch root for `host`: the configured directory, else `/dev/shm/understudy/HOST`
/// when `/dev/shm` is memory-backed, else none (dumps go under the data directory).
pub fn root(configured: Option<&Path>, host: &str) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_owned());
    }
    let shm = Path::new("/dev/shm");
    let memory = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    memory.then(|| shm.join("understudy").join(host))
}

/// Makes sure `root` exists (private when created) and removes what an earlier run left in
/// it (dumps nothing will send or resume from: a restarted agent starts its epochs whole).
/// `root` itself stays: it may be a mount point.
pub fn prepare(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Resident memory of the tree rooted at `pid`, bytes.
fn tree_rss(pid: i32) -> u64 {
    crate::workload::stats::tree(pid).map_or(0, |t| t.rss_bytes)
}

/// Whether a dump of the tree rooted at `pid` fits in `dir`'s file system.
pub fn check_room(dir: &Path, pid: i32) -> Result<(), NoRoom> {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.blocks_available() * st.fragment_size();
    let need = tree_rss(pid) + MARGIN;
    if free >= need {
        return Ok(());
    }
    Err(NoRoom {
        dir: dir.display().to_string(),
        free_mib: free >> 20,
        need_mib: need.div_ceil(1 << 20),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_measured_and_compared_with_the_room_there_is() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(tree_rss(me) > 1 << 20, "this test process holds over 1 MiB");
        let dir = tempfile::tempdir().unwrap();
        // A file system with room for a test process's memory.
        check_room(dir.path(), me).unwrap();
        let err = NoRoom {
            dir: "/x".into(),
            free_mib: 1,
            need_mib: 20,
        };
        assert!(err.to_string().contains("/x has 1 MiB free"), "{err}");
    }

    #[test]
    fn prepare_empties_what_an_earlier_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host-a");
        std::fs::create_dir_all(root.join("w/epoch-3")).unwrap();
        std::fs::write(root.join("w/epoch-3/pages-1.img"), b"x").unwrap();
        prepare(&root).unwrap();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }
}
