//! Opening a sealed epoch for a restore: the manifest's tag is checked under the workload's
//! data key (the epoch is the one the primary sealed, for this workload, generation and
//! epoch, file for file), then each memory image is opened record by record into a scratch
//! directory that CRIU restores from and that is removed as soon as it has.
//!
//! The scratch directory is on a memory-backed file system (`/dev/shm`) when it has room
//! for the images, so the plaintext never reaches a disk; otherwise it is in the agent's
//! data directory, on this host, which is about to run the workload from that memory.

use std::path::{Path, PathBuf};

use understudy_common::epoch::Manifest;
use understudy_common::seal::{Binding, DataKey, Sealer};

const MEMORY_FS: &str = "/dev/shm";

/// A directory of opened images, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Where the images are.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("{}: {e}", self.dir.display());
        }
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() * st.fragment_size())
}

/// Where to open `bytes` of images for `workload`: memory if it fits with room to spare.
fn scratch_dir(fallback: &Path, workload: &str, bytes: u64) -> PathBuf {
    let name = format!("understudy-restore-{workload}-{}", std::process::id());
    let memory = Path::new(MEMORY_FS);
    match free_bytes(memory) {
        Some(free) if free > bytes.saturating_mul(2) + (64 << 20) => memory.join(name),
        _ => fallback.join(name),
    }
}

/// Checks `manifest`'s seal under `key` and opens its memory images from `dir` into a new
/// scratch directory (beside `fallback` when memory is short).
pub fn open_epoch(
    dir: &Path,
    manifest: &Manifest,
    key: &DataKey,
    fallback: &Path,
) -> Result<Scratch, String> {
    manifest
        .check_seal(key)
        .map_err(|e| format!("refusing to restore epoch {}: {e}", manifest.epoch))?;
    let bytes = manifest.files.iter().map(|f| f.size).sum();
    let scratch = Scratch {
        dir: scratch_dir(fallback, &manifest.workload, bytes),
    };
    let _ = std::fs::remove_dir_all(&scratch.dir);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch.dir)
            .map_err(|e| format!("{}: {e}", scratch.dir.display()))?;
    }
    // Opening is the restore's own cost (a switchover waits for it): every core helps.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for f in &manifest.files {
        let sealer = Sealer::new(
            key,
            &Binding {
                workload: manifest.workload.clone(),
                file: f.name.clone(),
            },
        );
        let from = dir.join(&f.name);
        let to = scratch.dir.join(&f.name);
        let input = std::fs::File::open(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        let output = std::fs::File::create(&to).map_err(|e| format!("{}: {e}", to.display()))?;
        sealer
            .open_file(&input, &output, threads)
            .map_err(|e| format!("{}: {e}", from.display()))?;
    }
    Ok(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::epoch::FileEntry;

    #[test]
    fn a_sealed_epoch_opens_only_under_its_key_and_untouched() {
        let key = DataKey::from_bytes([3; 32]);
        let shadow = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..3 * 4096 + 10).map(|i| (i % 251) as u8).collect();
        let sealer = Sealer::new(
            &key,
            &Binding {
                workload: "w".into(),
                file: "pages-1.img".into(),
            },
        );
        let mut sealed = Vec::new();
        sealer.seal_stream(plain.as_slice(), &mut sealed).unwrap();
        std::fs::write(shadow.path().join("pages-1.img"), &sealed).unwrap();
        let mut m = Manifest {
            workload: "w".into(),
            generation: 1,
            epoch: 4,
            taken_unix_ms: 0,
            stdio_key: None,
            files: vec![FileEntry {
                name: "pages-1.img".into(),
                size: sealed.len() as u64,
                blake3: [0; 32],
            }],
            data: vec![],
            seal: None,
        };
        m.seal_with(&key).unwrap();
        let fallback = tempfile::tempdir().unwrap();
        let opened = open_epoch(shadow.path(), &m, &key, fallback.path()).unwrap();
        assert_eq!(
            std::fs::read(opened.path().join("pages-1.img")).unwrap(),
            plain
        );
        let where_ = opened.path().to_owned();
        drop(opened);
        assert!(!where_.exists(), "scratch left behind");

        let other = DataKey::from_bytes([4; 32]);
        assert!(open_epoch(shadow.path(), &m, &other, fallback.path()).is_err());
        sealed[5000] ^= 1;
        std::fs::write(shadow.path().join("pages-1.img"), &sealed).unwrap();
        let err = open_epoch(shadow.path(), &m, &key, fallback.path()).unwrap_err();
        assert!(err.contains("record 1"), "{err}");
    }
}
