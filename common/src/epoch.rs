//! Epoch manifests: what one checkpoint epoch consists of, with a BLAKE3 hash per file.
//!
//! On disk a manifest is the magic `USMF`, a format version (u16), the payload length
//! (u32), the encoded manifest, and the BLAKE3 hash of the payload, so a truncated or
//! altered manifest is refused rather than trusted.
//!
//! Version 3 added the [`Manifest::seal`] tag of epochs whose memory images are sealed
//! (`crate::seal`); version 2 manifests (unsealed epochs) are still read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::data_entry::{wire_name, DataEntry, DataKind};

const MAGIC: [u8; 4] = *b"USMF";
/// Format version of manifests written by this build.
pub const MANIFEST_VERSION: u16 = 3;
/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// File name of the manifest inside an epoch directory.
pub const MANIFEST_FILE: &str = "manifest.bin";

/// One file of an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the epoch directory (no directories).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hash of the content.
    pub blake3: [u8; 32],
}

/// One consistent cut of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The workload.
    pub workload: String,
    /// Its generation when the epoch was taken.
    pub generation: u64,
    /// Epoch number, increasing per workload.
    pub epoch: u64,
    /// When the dump was taken, milliseconds since the Unix epoch.
    pub taken_unix_ms: u64,
    /// CRIU key of the pipe carrying the workload's stdout/stderr (e.g. `pipe:[123]`), which
    /// the restoring host replaces with a pipe of its own.
    pub stdio_key: Option<String>,
    /// The files, sorted by name.
    pub files: Vec<FileEntry>,
    /// The data directories' entries, parents before children.
    pub data: Vec<DataEntry>,
    /// Set when the memory images are sealed (`crate::seal`): each file entry's hash is
    /// then the sealed file's digest, and this is the MAC, under the workload's data key,
    /// of the manifest with this field left out.
    pub seal: Option<[u8; 32]>,
}

/// The layout of version 2 manifests (no seal), read as unsealed epochs.
#[derive(Deserialize)]
struct ManifestV2 {
    workload: String,
    generation: u64,
    epoch: u64,
    taken_unix_ms: u64,
    stdio_key: Option<String>,
    files: Vec<FileEntry>,
    data: Vec<DataEntry>,
}

/// Why a manifest could not be read or a file did not match it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// I/O error on the named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manifest is damaged or of an unknown version.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file's content does not match the manifest.
    #[error("{name}: {reason}")]
    Mismatch {
        /// File name.
        name: String,
        /// What differs.
        reason: String,
    },
}

impl Manifest {
    /// Encodes the manifest for disk.
    pub fn to_bytes(&self) -> Result<Vec<u8>, codec::CodecError> {
        let payload = codec::encode(self)?;
        let mut out = Vec::with_capacity(payload.len() + 42);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(blake3::hash(&payload).as_bytes());
        Ok(out)
    }

    /// Decodes a manifest, checking magic, version, length and checksum.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 42 || bytes[..4] != MAGIC {
            return Err("not a manifest (bad magic or too short)".into());
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != MANIFEST_VERSION && version != 2 {
            return Err(format!(
                "manifest format version {version} is not supported (this build reads {MANIFEST_VERSION})"
            ));
        }
        let len = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        if len > MAX_MANIFEST_BYTES || bytes.len() != 10 + len + 32 {
            return Err(format!("manifest length {len} does not match the file"));
        }
        let payload = &bytes[10..10 + len];
        if blake3::hash(payload).as_bytes() != &bytes[10 + len..] {
            return Err("manifest checksum mismatch".into());
        }
        if version == 2 {
            let old: ManifestV2 =
                codec::decode(payload, MAX_MANIFEST_BYTES).map_err(|e| e.to_string())?;
            return Ok(Manifest {
                workload: old.workload,
                generation: old.generation,
                epoch: old.epoch,
                taken_unix_ms: old.taken_unix_ms,
                stdio_key: old.stdio_key,
                files: old.files,
                data: old.data,
                seal: None,
            });
        }
        codec::decode(payload, MAX_MANIFEST_BYTES).map_err(|e| e.to_string())
    }

    /// The bytes the seal tag is computed over: the manifest without its tag.
    fn tag_input(&self) -> Result<Vec<u8>, codec::CodecError> {
        let mut unsealed = self.clone();
        unsealed.seal = None;
        codec::encode(&unsealed)
    }

    /// Marks the manifest sealed, with its tag under `key`.
    pub fn seal_with(&mut self, key: &crate::seal::DataKey) -> Result<(), codec::CodecError> {
        self.seal = None;
        self.seal = Some(crate::seal::tag(key, &self.tag_input()?));
        Ok(())
    }

    /// Checks the seal tag under `key`: the manifest is the one the primary sealed for this
    /// workload, generation and epoch, file for file.
    pub fn check_seal(&self, key: &crate::seal::DataKey) -> Result<(), ManifestError> {
        let bad = |reason: &str| ManifestError::Mismatch {
            name: MANIFEST_FILE.into(),
            reason: reason.into(),
        };
        let Some(given) = self.seal else {
            return Err(bad("the epoch is not sealed"));
        };
        let input = self.tag_input().map_err(|e| bad(&e.to_string()))?;
        if crate::seal::tag_matches(key, &input, &given) {
            Ok(())
        } else {
            Err(bad(
                "the seal tag does not match: altered, or sealed under another key",
            ))
        }
    }

    /// Reads `dir/manifest.bin`.
    pub fn read_from(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ManifestError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|reason| ManifestError::Corrupt {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Total size of the epoch's files, memory images and data files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum::<u64>() + self.data_bytes()
    }

    /// Total size of the data directories' files.
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(DataEntry::size).sum()
    }

    /// The data files as file entries named by their wire names.
    pub fn data_files(&self) -> impl Iterator<Item = FileEntry> + '_ {
        self.data.iter().filter_map(|d| match &d.kind {
            DataKind::File { size, blake3, .. } => Some(FileEntry {
                name: wire_name(&d.path),
                size: *size,
                blake3: *blake3,
            }),
            _ => None,
        })
    }

    /// Checks every file in `dir`, memory images and data files, against the manifest
    /// (size and hash).
    pub fn verify_dir(&self, dir: &Path) -> Result<(), ManifestError> {
        let sealed = self.seal.is_some();
        for f in &self.files {
            check_file(&dir.join(&f.name), f, sealed)?;
        }
        for f in self.data_files() {
            check_file(&dir.join(&f.name), &f, false)?;
        }
        Ok(())
    }

    /// Whether `name` is a memory image of a sealed epoch (hashed as a sealed file).
    pub fn is_sealed_file(&self, name: &str) -> bool {
        self.seal.is_some() && self.files.iter().any(|f| f.name == name)
    }
}

/// Hashes a file (memory-mapped, on all cores: epoch files reach gigabytes).
pub fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok((hasher.count(), *hasher.finalize().as_bytes()))
}

/// Checks one file against its manifest entry (`sealed`: the entry's hash is a sealed
/// file's digest).
pub fn check_file(path: &Path, entry: &FileEntry, sealed: bool) -> Result<(), ManifestError> {
    let hashed = if sealed {
        std::fs::File::open(path)
            .and_then(|f| crate::seal::digest_reader(std::io::BufReader::with_capacity(1 << 20, f)))
    } else {
        hash_file(path)
    };
    let (size, hash) = hashed.map_err(|source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if size != entry.size {
        return Err(ManifestError::Mismatch {
            name: entry.name.clone(),
            reason: format!("size {size}, manifest says {}", entry.size),
        });
    }
    if hash != entry.blake3 {
        return Err(ManifestError::Mismatch {
            name: entry.name.clone(),
            reason: "BLAKE3 hash differs from the manifest".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            workload: "w".into(),
            generation: 2,
            epoch: 7,
            taken_unix_ms: 1,
            stdio_key: Some("pipe:[1]".into()),
            files: vec![FileEntry {
                name: "pages-1.img".into(),
                size: 3,
                blake3: *blake3::hash(b"abc").as_bytes(),
            }],
            data: vec![],
            seal: None,
        }
    }

    #[test]
    fn round_trip_and_any_flipped_byte_is_refused() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), sample());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Manifest::from_bytes(&b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn a_sealed_manifest_checks_under_its_key_only_and_refuses_any_change() {
        let key = crate::seal::DataKey::generate().unwrap();
        let mut m = sample();
        m.seal_with(&key).unwrap();
        let back = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap();
        back.check_seal(&key).unwrap();
        let other = crate::seal::DataKey::generate().unwrap();
        assert!(back.check_seal(&other).is_err());
        let mut moved = back.clone();
        moved.epoch += 1;
        assert!(moved.check_seal(&key).is_err(), "replayed as another epoch");
        let mut renamed = back.clone();
        renamed.files[0].name = "pages-2.img".into();
        assert!(renamed.check_seal(&key).is_err(), "file renamed");
        assert!(sample().check_seal(&key).is_err(), "unsealed accepted");
    }

    #[test]
    fn version_2_manifests_are_read_as_unsealed() {
        let m = sample();
        let payload = codec::encode(&(
            &m.workload,
            m.generation,
            m.epoch,
            m.taken_unix_ms,
            &m.stdio_key,
            &m.files,
            &m.data,
        ))
        .unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&2u16.to_be_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn verify_dir_finds_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pages-1.img"), b"abc").unwrap();
        sample().verify_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("pages-1.img"), b"abd").unwrap();
        let err = sample().verify_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("pages-1.img"));
    }
}
