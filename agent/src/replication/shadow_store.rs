//! Epochs a shadow holds on disk for one workload: committed epochs as `epoch-N`
//! directories (the newest three are kept), and at most one `.staging-N` directory being
//! received. A commit is all or nothing: files and manifest are synced (one `syncfs`),
//! then the staging directory is renamed into place and the parent synced.

use std::fs::File;
use std::path::{Path, PathBuf};

use understudy_common::epoch::{Manifest, MANIFEST_FILE};

/// Committed epochs kept per workload.
pub const KEEP: usize = 3;

/// Removes the staging directories of every workload under `data_dir` (`workloads/*/`):
/// what transfers left when an earlier run of this agent was killed during them. A
/// half-applied delta can be as large as the workload's memory; committed epochs are
/// untouched. Returns how many workloads had one.
pub fn discard_all_staging(data_dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(data_dir.join("workloads"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let store = ShadowStore::new(crate::workload::Paths::new(data_dir, &name).shadow_epochs());
        if store.discard_staging() {
            n += 1;
        }
    }
    n
}

/// One workload's shadow directory.
#[derive(Debug, Clone)]
pub struct ShadowStore {
    dir: PathBuf,
}

impl ShadowStore {
    /// The store in `dir` (created on first commit).
    pub fn new(dir: PathBuf) -> Self {
        ShadowStore { dir }
    }

    /// Committed epoch numbers, oldest first.
    pub fn committed(&self) -> Vec<u64> {
        let mut out: Vec<u64> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("epoch-")?.parse().ok())
            .collect();
        out.sort_unstable();
        out
    }

    /// Bytes free for this store's epochs: on its directory's file system, or that of its
    /// nearest existing parent before the first epoch; `None` if it cannot be told.
    pub fn available(&self) -> Option<u64> {
        let mut dir = self.dir.as_path();
        loop {
            if dir.exists() {
                let st = nix::sys::statvfs::statvfs(dir).ok()?;
                return Some(st.blocks_available().saturating_mul(st.fragment_size()));
            }
            dir = dir.parent()?;
        }
    }

    /// The newest committed epoch.
    pub fn newest(&self) -> Option<u64> {
        self.committed().last().copied()
    }

    /// Directory of committed epoch `n`.
    pub fn epoch_dir(&self, n: u64) -> PathBuf {
        self.dir.join(format!("epoch-{n}"))
    }

    /// A fresh staging directory for epoch `n`, after discarding any earlier staging.
    pub fn begin(&self, n: u64) -> std::io::Result<PathBuf> {
        self.discard_staging();
        let staging = self.dir.join(format!(".staging-{n}"));
        std::fs::create_dir_all(&staging)?;
        Ok(staging)
    }

    /// Removes every staging directory (an interrupted transfer's leftovers); whether there
    /// was one.
    pub fn discard_staging(&self) -> bool {
        let mut found = false;
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                found = true;
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        found
    }

    /// Commits a verified staging directory as its epoch and prunes old epochs. With
    /// `durable`, files and directories are synced first, so a crash cannot leave a
    /// committed epoch with missing data.
    pub fn commit(
        &self,
        staging: &Path,
        manifest: &Manifest,
        durable: bool,
    ) -> std::io::Result<PathBuf> {
        let bytes = manifest
            .to_bytes()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::write(staging.join(MANIFEST_FILE), bytes)?;
        if durable {
            // One syncfs for every staged file and directory: per-file fsyncs would each
            // commit the filesystem's journal, hundreds of times for a data directory.
            let dir = File::open(staging)?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))?;
        }
        let target = self.epoch_dir(manifest.epoch);
        std::fs::rename(staging, &target)?;
        if durable {
            File::open(&self.dir)?.sync_all()?;
        }
        let committed = self.committed();
        if committed.len() > KEEP {
            for old in &committed[..committed.len() - KEEP] {
                let _ = std::fs::remove_dir_all(self.epoch_dir(*old));
            }
        }
        Ok(target)
    }

    /// Removes everything (the workload left this host).
    pub fn clear(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(epoch: u64) -> Manifest {
        Manifest {
            workload: "w".into(),
            generation: 1,
            epoch,
            taken_unix_ms: 0,
            stdio_key: None,
            files: vec![],
            data: vec![],
            seal: None,
        }
    }

    #[test]
    fn keeps_the_newest_three_and_discards_staging() {
        let dir = tempfile::tempdir().unwrap();
        let s = ShadowStore::new(dir.path().join("shadow"));
        for n in 1..=5 {
            let st = s.begin(n).unwrap();
            s.commit(&st, &manifest(n), true).unwrap();
        }
        assert_eq!(s.committed(), vec![3, 4, 5]);
        let st = s.begin(6).unwrap();
        std::fs::write(st.join("x"), b"partial").unwrap();
        s.discard_staging();
        assert!(!st.exists());
        assert_eq!(s.newest(), Some(5));
        Manifest::read_from(&s.epoch_dir(5)).unwrap();
    }
}
