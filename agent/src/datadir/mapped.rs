//! Files the frozen tree has mapped shared and writable (a database's shared-memory
//! index, say). Stores through such a mapping need not move the file's modification
//! time, so a capture copies these files every epoch instead of trusting their metadata.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Paths of shared writable file mappings in one `/proc/PID/maps` text.
pub fn parse_maps(maps: &str) -> Vec<PathBuf> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let perms = fields.nth(1)?;
            let path = fields.nth(3)?.trim_start();
            let shared_writable = perms.as_bytes().get(1) == Some(&b'w') && perms.ends_with('s');
            (shared_writable && path.starts_with('/') && !path.ends_with(" (deleted)"))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// Every process of the tree rooted at `root`, the root first.
fn tree(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&pid) = out.get(i) {
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The entry paths (`<index>/<rel>`) of data files the tree rooted at `root` maps
/// shared and writable; `logical` are the data directories in spec order.
pub fn shared_writable(root: i32, logical: &[PathBuf]) -> HashSet<String> {
    let mut out = HashSet::new();
    for pid in tree(root) {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        for path in parse_maps(&maps) {
            if let Some(p) = entry_path(logical, &path) {
                out.insert(p);
            }
        }
    }
    out
}

/// `path` (as the workload sees it) as an entry path, if it lies in a data directory.
pub fn entry_path(logical: &[PathBuf], path: &Path) -> Option<String> {
    logical.iter().enumerate().find_map(|(i, dir)| {
        let rel = path.strip_prefix(dir).ok()?.to_str()?;
        Some(if rel.is_empty() {
            i.to_string()
        } else {
            format!("{i}/{rel}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shared_writable_file_mappings_count() {
        let maps = "\
7f00-7f01 rw-s 00000000 fe:00 123 /srv/db/app.db-shm
7f01-7f02 r--s 00000000 fe:00 124 /srv/db/ro
7f02-7f03 rw-p 00000000 fe:00 125 /usr/lib/libc.so.6
7f03-7f04 rw-s 00000000 00:01 126 /dev/zero (deleted)
7f04-7f05 rw-p 00000000 00:00 0 [heap]
7f05-7f06 rw-s 00000000 fe:00 127 /srv/db/with space
";
        assert_eq!(
            parse_maps(maps),
            [
                PathBuf::from("/srv/db/app.db-shm"),
                PathBuf::from("/srv/db/with space")
            ]
        );
        let dirs = [PathBuf::from("/srv/x"), PathBuf::from("/srv/db")];
        assert_eq!(
            entry_path(&dirs, Path::new("/srv/db/app.db-shm")).as_deref(),
            Some("1/app.db-shm")
        );
        assert_eq!(entry_path(&dirs, Path::new("/srv/dbx/a")), None);
    }
}
