//! The data-directory part of an epoch manifest: one entry per file, directory and
//! symlink of a workload's declared data directories, with the metadata restored with it.
//!
//! Paths are `<index>/<relative path>`, where `<index>` is the data directory's position
//! in the workload spec. A regular file's content travels under the wire name
//! `data/<path>` (see [`wire_name`]); files whose content the shadow already holds are not
//! sent at all but linked from its previous epoch.

use serde::{Deserialize, Serialize};

/// Prefix of data files' names on the wire and inside epoch directories.
pub const DATA_PREFIX: &str = "data/";

/// Ownership, permissions, times and extended attributes of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Meta {
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataKind {
    /// A directory (listed so empty ones and their metadata travel too).
    Dir,
    /// A symbolic link and its target, as stored.
    Symlink {
        /// The link's target.
        target: String,
    },
    /// A regular file.
    File {
        /// Size in bytes.
        size: u64,
        /// BLAKE3 hash of the content.
        blake3: [u8; 32],
        /// The path in the base epoch holding this file's previous content (the same
        /// path, or the old one of a renamed file): deltas are against it, and unchanged
        /// content is linked from it.
        origin: Option<String>,
    },
}

/// One entry of a data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataEntry {
    /// `<index>/<relative path>`; `<index>` alone is the data directory itself.
    pub path: String,
    /// File, directory or symlink.
    pub kind: DataKind,
    /// Its metadata.
    pub meta: Meta,
}

impl DataEntry {
    /// Size of a regular file's content (0 for others).
    pub fn size(&self) -> u64 {
        match self.kind {
            DataKind::File { size, .. } => size,
            _ => 0,
        }
    }
}

/// The wire and epoch-directory name of a data file's content.
pub fn wire_name(path: &str) -> String {
    format!("{DATA_PREFIX}{path}")
}

/// Checks an entry path from a peer: `<index>/<components>`, each component non-empty
/// and neither `.` nor `..`, so it can never leave the directory it is joined to.
pub fn check_entry_path(path: &str, data_dirs: usize) -> Result<(), String> {
    let mut parts = path.split('/');
    let index_ok = parts
        .next()
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < data_dirs && path.split('/').next() == Some(&i.to_string()));
    let rest_ok = parts.all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if index_ok && rest_ok {
        Ok(())
    } else {
        Err(format!("data path {path:?} is not allowed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_cannot_escape_their_directory() {
        for ok in ["0", "0/a", "1/a/b.txt", "0/.hidden"] {
            assert!(check_entry_path(ok, 2).is_ok(), "{ok}");
        }
        for bad in [
            "", "2/a", "x/a", "0/../etc", "0/./a", "0//a", "0/a/", "/0/a", "00/a",
        ] {
            assert!(check_entry_path(bad, 2).is_err(), "{bad}");
        }
    }
}
