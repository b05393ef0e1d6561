//! What the agent keeps on disk about itself so that a restart forgets nothing that
//! matters: the generation fence ([`fence`]) and the process trees it started ([`copies`]).
//!
//! Each file is magic, a version byte, the encoded value and its BLAKE3 hash; it is written
//! to a temporary file, synced, renamed into place, and the directory synced, so a crash
//! leaves either the old or the new file, never a mix, and a write that returned is on disk.

pub mod copies;
pub mod fence;

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};
use understudy_common::codec;

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A versioned, checksummed state file.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// Four bytes naming the file's kind.
    pub magic: &'static [u8; 4],
    /// The format version this build writes.
    pub version: u8,
    /// The oldest version it reads (with [`Format::read_with`]).
    pub oldest: u8,
    /// The largest encoded value accepted.
    pub max_bytes: usize,
}

impl Format {
    /// Reads the value in `path`; `None` if there is no file.
    pub fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, StateFileError> {
        self.read_with(path, |_, body| codec::decode(body, self.max_bytes))
    }

    /// Reads the value in `path` with `decode`, given the file's version and its body;
    /// `None` if there is no file.
    pub fn read_with<T>(
        &self,
        path: &Path,
        decode: impl Fn(u8, &[u8]) -> Result<T, codec::CodecError>,
    ) -> Result<Option<T>, StateFileError> {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateFileError::Io {
                    path: shown,
                    source,
                })
            }
        };
        let invalid = |reason: String| StateFileError::Invalid {
            path: shown.clone(),
            reason,
        };
        if bytes.len() < 37 || &bytes[..4] != self.magic {
            return Err(invalid("not a state file of this kind".into()));
        }
        let version = bytes[4];
        if !(self.oldest..=self.version).contains(&version) {
            return Err(invalid(format!(
                "format version {version} is not supported (this build reads {} to {})",
                self.oldest, self.version
            )));
        }
        let (body, sum) = bytes[5..].split_at(bytes.len() - 37);
        if blake3::hash(body).as_bytes() != sum {
            return Err(invalid("checksum mismatch".into()));
        }
        decode(version, body)
            .map(Some)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Writes `value` to `path` durably (see the module doc).
    pub fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StateFileError> {
        let shown = path.display().to_string();
        let io = |source| StateFileError::Io {
            path: shown.clone(),
            source,
        };
        let body = codec::encode(value).map_err(|e| StateFileError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut bytes = self.magic.to_vec();
        bytes.push(self.version);
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(blake3::hash(&body).as_bytes());
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}
