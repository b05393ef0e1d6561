//! Generation fencing: the newest generation this agent has seen for each workload,
//! persisted, so that an older order or epoch is refused even after a restart.
//!
//! On disk: magic `USGF`, version byte, the encoded map, and its BLAKE3 hash; written to a
//! temporary file and renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use understudy_common::codec;

const MAGIC: &[u8; 4] = b"USGF";
const VERSION: u8 = 1;
const MAX_BYTES: usize = 1 << 20;

/// The fence of one agent.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    seen: Mutex<BTreeMap<String, u64>>,
}

impl Fence {
    /// Loads the fence from `dir/generations.bin` (empty if absent).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("generations.bin");
        let seen = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Fence {
            path,
            seen: Mutex::new(seen),
        })
    }

    /// The newest generation seen for `workload`.
    pub fn seen(&self, workload: &str) -> Option<u64> {
        self.lock().get(workload).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `generation` for `workload` if it is not older than any seen, recording it.
    pub fn admit(&self, workload: &str, generation: u64) -> Result<(), String> {
        let mut seen = self.lock();
        let current = seen.get(workload).copied();
        if let Some(cur) = current {
            if generation < cur {
                return Err(format!(
                    "stale generation {generation} for workload {workload:?}: this agent has already seen generation {cur}"
                ));
            }
            if generation == cur {
                return Ok(());
            }
        }
        seen.insert(workload.to_owned(), generation);
        let bytes = encode(&seen);
        drop(seen);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

fn encode(map: &BTreeMap<String, u64>) -> Vec<u8> {
    let body = codec::encode(map).unwrap_or_default();
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend_from_slice(&body);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, u64>, String> {
    if bytes.len() < 37 || &bytes[..4] != MAGIC {
        return Err("not a generations file".into());
    }
    if bytes[4] != VERSION {
        return Err(format!("format version {} is not supported", bytes[4]));
    }
    let (body, sum) = bytes[5..].split_at(bytes.len() - 37);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    codec::decode(body, MAX_BYTES).map_err(|e| e.to_string())
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
        let err = f.admit("w", 2).unwrap_err();
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
}
