//! The supervisor's own working directory: `/var/lib/understudy-agent/trees/<workload>`,
//! one per workload and the same path on every host.
//!
//! CRIU's parasite, dumping a tree whose `/proc` belongs to another PID namespace, mounts a
//! procfs of the tree's own at `proc.crtools` in the working directory of the tree's root,
//! and fails the dump if that name is taken. Trees that shared one directory (`/`) could
//! fail each other's dumps whenever two dumped at once, and a directory left there by an
//! interrupted dump failed every tree's. With a directory of its own, only the tree's own
//! dumps use the name. A checkpoint records the directory by path, so the restoring host
//! creates it before CRIU restores the tree ([`ensure`]). The workload's command still runs
//! in the spec's `workdir` (or `/`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the directories live unless `[agent] trees_dir` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/understudy-agent/trees";

static CONFIGURED: OnceLock<PathBuf> = OnceLock::new();

/// Sets where the directories live (`[agent] trees_dir`). Call once at start.
pub fn configure(dir: Option<PathBuf>) {
    let _ = CONFIGURED.set(dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)));
}

/// The supervisor's working directory for `workload` (a validated name: no `/`, no `..`).
pub fn path(workload: &str) -> PathBuf {
    in_dir(
        CONFIGURED
            .get()
            .map_or(Path::new(DEFAULT_DIR), PathBuf::as_path),
        workload,
    )
}

fn in_dir(dir: &Path, workload: &str) -> PathBuf {
    dir.join(workload)
}

/// Creates the directory for `workload` if missing (root only, 0700) and returns it.
pub fn ensure(workload: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path(workload);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_has_a_directory_of_its_own_under_the_fixed_root() {
        let root = Path::new(DEFAULT_DIR);
        assert_eq!(
            in_dir(root, "db-1"),
            PathBuf::from("/var/lib/understudy-agent/trees/db-1")
        );
        assert_ne!(in_dir(root, "a"), in_dir(root, "b"));
    }
}
