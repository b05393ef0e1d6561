//! The backup file `understudy backup` writes and `understudy restore` reads: every record
//! of a coordinator's store, raw and versioned as the store keeps them, behind a magic, a
//! format version and a BLAKE3 checksum of the body. A file that is not a backup, of
//! another format, damaged or larger than [`MAX_BACKUP`] is refused whole.

use serde::{Deserialize, Serialize};
use understudy_common::codec::{self, CodecError};

use crate::store::Op;

/// What every backup file starts with.
pub const MAGIC: &[u8; 8] = b"USBACKUP";
/// The format this build writes and reads.
pub const FORMAT: u8 = 1;
/// Largest backup accepted (the same bound as a group's snapshot).
pub const MAX_BACKUP: usize = 256 << 20;
const HEADER: usize = MAGIC.len() + 1 + 32;

/// A backup's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// When it was taken, ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Every record, as the store holds it.
    pub records: Vec<Op>,
}

/// Why bytes are not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// It does not start with [`MAGIC`].
    #[error("not an understudy backup (no USBACKUP header)")]
    NotABackup,
    /// Another format version.
    #[error("backup format version {found} is not supported (this build reads {FORMAT})")]
    Version {
        /// The version found.
        found: u8,
    },
    /// Over [`MAX_BACKUP`].
    #[error("backup of {size} bytes is larger than the {cap}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        cap: usize,
    },
    /// The body does not match its checksum (damaged or truncated).
    #[error("backup damaged: its checksum does not match its contents")]
    Checksum,
    /// The body does not decode.
    #[error("backup body: {0}")]
    Codec(#[from] CodecError),
}

/// The file's bytes for `backup`.
pub fn encode(backup: &Backup) -> Result<Vec<u8>, BackupError> {
    let body = codec::encode(backup)?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a backup file's bytes, refusing anything but a whole backup of this format.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    if bytes.len() > MAX_BACKUP {
        return Err(BackupError::TooLarge {
            size: bytes.len(),
            cap: MAX_BACKUP,
        });
    }
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(BackupError::NotABackup);
    };
    let Some((&version, rest)) = rest.split_first() else {
        return Err(BackupError::Checksum);
    };
    if version != FORMAT {
        return Err(BackupError::Version { found: version });
    }
    if rest.len() < 32 {
        return Err(BackupError::Checksum);
    }
    let (sum, body) = rest.split_at(32);
    if blake3::hash(body).as_bytes().as_slice() != sum {
        return Err(BackupError::Checksum);
    }
    Ok(codec::decode(body, MAX_BACKUP)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            taken_unix_ms: 1_700_000_000_000,
            records: vec![
                Op {
                    kind: 1,
                    key: "web".into(),
                    value: Some(vec![6, 1, 2, 3]),
                },
                Op {
                    kind: 0,
                    key: "host-a".into(),
                    value: Some(vec![6, 9]),
                },
            ],
        }
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn any_damaged_byte_of_the_body_is_refused() {
        let bytes = encode(&sample()).unwrap();
        for i in HEADER..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                matches!(decode(&bad), Err(BackupError::Checksum)),
                "byte {i} flipped"
            );
        }
    }

    #[test]
    fn a_truncated_backup_is_refused() {
        let bytes = encode(&sample()).unwrap();
        for len in [0, 5, MAGIC.len(), MAGIC.len() + 1, HEADER, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "{len} bytes accepted");
        }
    }

    #[test]
    fn another_format_or_file_is_refused_by_name() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[MAGIC.len()] = 9;
        let e = decode(&bytes).unwrap_err();
        assert!(matches!(e, BackupError::Version { found: 9 }), "{e}");
        assert!(e.to_string().contains("version 9"));
        let e = decode(b"[tls]\nca = \"x\"\n").unwrap_err();
        assert!(matches!(e, BackupError::NotABackup), "{e}");
    }
}
