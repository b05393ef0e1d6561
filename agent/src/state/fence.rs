//! Generation fencing: the newest generation this agent has seen for each workload,
//! persisted, so that an older order or epoch is refused even after a restart.
//!
//! A new generation is on disk (synced) before [`Fence::admit`] returns, and admissions are
//! serialised: the file never goes back to an older map, and an agent never acts on a
//! generation it could forget. If the write fails, the generation is not admitted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Format, StateFileError};

const FORMAT: Format = Format {
    magic: b"USGF",
    version: 1,
    oldest: 1,
    max_bytes: 1 << 20,
};

/// Why a generation was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The generation is older than one already seen.
    #[error("stale generation {generation} for workload {workload:?}: this agent has already seen generation {seen}")]
    Stale {
        /// The workload.
        workload: String,
        /// The generation offered.
        generation: u64,
        /// The newest seen.
        seen: u64,
    },
    /// The new generation could not be written to disk, so it is not acted on.
    #[error("generation {generation} for workload {workload:?} refused: it could not be recorded durably: {source}")]
    Unrecorded {
        /// The workload.
        workload: String,
        /// The generation offered.
        generation: u64,
        /// Why the write failed.
        source: StateFileError,
    },
}

/// The fence of one agent.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    seen: Mutex<BTreeMap<String, u64>>,
}

impl Fence {
    /// Loads the fence from `dir/generations.bin` (empty if absent).
    pub fn load(dir: &Path) -> Result<Self, StateFileError> {
        let path = dir.join("generations.bin");
        let seen = FORMAT.read(&path)?.unwrap_or_default();
        Ok(Fence {
            path,
            seen: Mutex::new(seen),
        })
    }

    /// The newest generation seen for `workload`.
    pub fn seen(&self, workload: &str) -> Option<u64> {
        self.lock().get(workload).copied()
    }

    /// Every workload's newest generation.
    pub fn all(&self) -> Vec<(String, u64)> {
        self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `generation` for `workload` if it is not older than any seen, recording it
    /// durably before returning.
    pub fn admit(&self, workload: &str, generation: u64) -> Result<(), FenceError> {
        // The lock is held across the write: admissions reach the disk in order.
        let mut seen = self.lock();
        if let Some(&cur) = seen.get(workload) {
            if generation < cur {
                return Err(FenceError::Stale {
                    workload: workload.to_owned(),
                    generation,
                    seen: cur,
                });
            }
            if generation == cur {
                return Ok(());
            }
        }
        let mut next = seen.clone();
        next.insert(workload.to_owned(), generation);
        FORMAT
            .write(&self.path, &next)
            .map_err(|source| FenceError::Unrecorded {
                workload: workload.to_owned(),
                generation,
                source,
            })?;
        *seen = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_generation_refused_naming_both_numbers_even_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::load(dir.path()).unwrap();
        f.admit("w", 3).unwrap();
        f.admit("w", 3).unwrap();
        let f = Fence::load(dir.path()).unwrap();
        let err = f.admit("w", 2).unwrap_err().to_string();
        assert!(
            err.contains("generation 2") && err.contains("generation 3"),
            "{err}"
        );
        f.admit("w", 4).unwrap();
        assert_eq!(f.seen("w"), Some(4));
    }

    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Fence::load(dir.path()).unwrap().admit("w", 1).unwrap();
        let p = dir.path().join("generations.bin");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 40] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(Fence::load(dir.path()).is_err());
    }

    #[test]
    fn concurrent_admissions_leave_the_newest_of_each_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::sync::Arc::new(Fence::load(dir.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for g in 1..=25 {
                        let _ = f.admit(&format!("w{}", t % 4), g * 8 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let reloaded = Fence::load(dir.path()).unwrap();
        for w in 0..4 {
            let name = format!("w{w}");
            assert_eq!(reloaded.seen(&name), f.seen(&name), "{name}");
            assert_eq!(reloaded.seen(&name), Some(25 * 8 + w + 4));
        }
    }

    #[test]
    fn a_generation_that_cannot_be_written_is_not_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::load(dir.path()).unwrap();
        f.admit("w", 1).unwrap();
        // The temporary file's place taken by a directory: the write fails.
        std::fs::create_dir(dir.path().join("generations.tmp")).unwrap();
        let err = f.admit("w", 2).unwrap_err();
        assert!(
            matches!(err, FenceError::Unrecorded { generation: 2, .. }),
            "{err}"
        );
        assert_eq!(f.seen("w"), Some(1), "refused in memory too");
        assert_eq!(Fence::load(dir.path()).unwrap().seen("w"), Some(1));
    }
}
