//! The executable supervisors run from: a copy of the agent binary in [`DIR`], named by
//! its content (`understudy-agent-<blake3 prefix>`). The directory is the same on every
//! host whatever its `data_dir`, because a checkpoint names the file and the shadow
//! restores from that path. A package upgrade
//! replaces `/usr/bin/understudy-agent`; supervisors already running keep executing their
//! copy, which stays in place, so their checkpoints map a file that exists (not a deleted
//! one CRIU would have to save whole in every epoch) and a shadow running the same build
//! has the same path to restore them with. The copies in use and the newest few are kept.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the copies live.
pub const DIR: &str = "/var/lib/understudy-agent/bin";

/// Copies kept besides those in use: enough for a rolling upgrade, where a shadow may
/// restore a tree started by the previous build.
const KEEP: usize = 3;

static INSTALLED: OnceLock<PathBuf> = OnceLock::new();

/// Why the copy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// Reading the running agent's executable.
    #[error("cannot read the agent's own executable {}: {source}", path.display())]
    Read {
        /// `/proc/self/exe`'s target.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the copy.
    #[error("cannot write the supervisor binary {}: {source}", path.display())]
    Write {
        /// The copy.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Makes sure this build's copy exists in [`DIR`], prunes unused old ones, and makes it
/// what [`path`] returns. Call once at start.
pub fn install() -> Result<PathBuf, BinaryError> {
    let path = copy_in(Path::new(DIR))?;
    let _ = INSTALLED.set(path.clone());
    Ok(path)
}

/// This build's copy in `dir`, written if missing; old unused ones pruned.
fn copy_in(dir: &Path) -> Result<PathBuf, BinaryError> {
    let exe = std::env::current_exe().map_err(|source| BinaryError::Read {
        path: "/proc/self/exe".into(),
        source,
    })?;
    // /proc/self/exe opens the running binary even after an upgrade replaced the file.
    let bytes = std::fs::read("/proc/self/exe").map_err(|source| BinaryError::Read {
        path: exe.clone(),
        source,
    })?;
    let hash = blake3::hash(&bytes).to_hex();
    let path = dir.join(format!("understudy-agent-{}", &hash[..16]));
    let write_err = |source| BinaryError::Write {
        path: path.clone(),
        source,
    };
    let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
    if !same {
        std::fs::create_dir_all(dir).map_err(write_err)?;
        let tmp = dir.join(format!(".understudy-agent-{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(write_err(e));
        }
    }
    prune(dir, &path);
    Ok(path)
}

/// The executable to start supervisors from: the installed copy, or the agent's own
/// executable before [`install`] ran (unit tests).
pub fn path() -> PathBuf {
    INSTALLED.get().cloned().unwrap_or_else(|| {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
    })
}

/// Removes copies no process runs, beyond the newest [`KEEP`] and `current`.
fn prune(dir: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("understudy-agent-")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, p)| p != current)
        .collect();
    copies.sort_by_key(|c| std::cmp::Reverse(c.0));
    let in_use = executables_in_use();
    for (_, p) in copies.into_iter().skip(KEEP.saturating_sub(1)) {
        if !in_use.contains(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn executables_in_use() -> Vec<PathBuf> {
    crate::procs::all()
        .into_iter()
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_named_by_content_and_old_unused_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for i in 0..5 {
            std::fs::write(bin.join(format!("understudy-agent-old{i}")), b"x").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let path = copy_in(&bin).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read("/proc/self/exe").unwrap()
        );
        let again = copy_in(&bin).unwrap();
        assert_eq!(path, again, "the same build, the same copy");
        let mut left: Vec<String> = std::fs::read_dir(&bin)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), KEEP, "{left:?}");
        assert!(
            left.contains(&"understudy-agent-old4".to_owned()),
            "{left:?}"
        );
        assert!(
            left.contains(&"understudy-agent-old3".to_owned()),
            "{left:?}"
        );
    }
}
