//! Workloads' data directories on this host: which logical paths are allowed, where a
//! logical path lives on this host, capturing them with each epoch ([`capture`]) and
//! putting an epoch's copy in place before a restore ([`materialize`]).
//!
//! A workload declares its data directories by logical path. This host keeps each one at
//! `host_root` + logical path; the workload always sees it at the logical path, bind-mounted
//! in its own mount namespace, which CRIU records as an external mount named
//! [`mount_key`] and re-binds to the restoring host's directory.

pub mod capture;
pub mod mapped;
pub mod materialize;
pub mod meta;
pub mod patch;

use std::path::{Path, PathBuf};

use crate::config::WorkloadDataSection;

/// CRIU's name for a workload's `index`-th data directory mount.
pub fn mount_key(index: usize) -> String {
    format!("understudy-data-{index}")
}

/// This host's data-directory settings.
#[derive(Debug, Clone)]
pub struct DataRoots {
    allowed: Vec<PathBuf>,
    host_root: PathBuf,
}

impl DataRoots {
    /// From the agent config.
    pub fn new(section: &WorkloadDataSection) -> Self {
        DataRoots {
            allowed: section.allowed_roots.clone(),
            host_root: section.host_root.clone(),
        }
    }

    /// Where this host keeps logical path `logical`.
    pub fn host_path(&self, logical: &Path) -> PathBuf {
        match logical.strip_prefix("/") {
            Ok(rel) => self.host_root.join(rel),
            Err(_) => self.host_root.join(logical),
        }
    }

    /// Whether logical paths are the host's own paths.
    pub fn is_identity(&self) -> bool {
        self.host_root == Path::new("/")
    }

    /// Checks that `logical` lies strictly under one of the allowed roots (never the root
    /// itself), and that this host's copy of it, with every symlink on the way resolved,
    /// does too: a parent that is a symlink to `/etc` is refused, naming where it leads.
    pub fn check_allowed(&self, logical: &Path) -> Result<(), String> {
        understudy_common::workload::check_data_dir_path(logical)?;
        let Some(root) = self.allowed.iter().find(|root| logical.starts_with(root)) else {
            let roots: Vec<String> = self
                .allowed
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(format!(
                "data directory {} lies outside this agent's allowed roots ({}; set [workload_data] allowed_roots)",
                logical.display(),
                if roots.is_empty() {
                    "none".to_string()
                } else {
                    roots.join(", ")
                }
            ));
        };
        if logical == root {
            return Err(format!(
                "data directory {} is an allowed root itself; give each workload a directory under it",
                logical.display()
            ));
        }
        let resolved = resolve(&self.host_path(logical))?;
        let base = resolve(&self.host_path(root))?;
        if resolved.starts_with(&base) && resolved != base {
            return Ok(());
        }
        Err(format!(
            "data directory {} resolves to {} on this host (through a symlink), outside the allowed root {}",
            logical.display(),
            resolved.display(),
            root.display()
        ))
    }

    /// Checks a data directory a workload is about to start with: allowed, and an
    /// existing directory on this host.
    pub fn check_existing(&self, logical: &Path) -> Result<PathBuf, String> {
        self.check_allowed(logical)?;
        let host = self.host_path(logical);
        let shown = if self.is_identity() {
            logical.display().to_string()
        } else {
            format!("{} (on this host {})", logical.display(), host.display())
        };
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => Ok(host),
            Ok(_) => Err(format!("data directory {shown} is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("data directory {shown} does not exist"))
            }
            Err(e) => Err(format!("data directory {shown}: {e}")),
        }
    }
}

/// `path` with every symlink resolved, as far as it exists; the part that does not exist
/// yet is appended as it is (it will be created as plain directories).
fn resolve(path: &Path) -> Result<PathBuf, String> {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut real = existing
        .canonicalize()
        .map_err(|e| format!("{}: {e}", existing.display()))?;
    for name in missing.iter().rev() {
        real.push(name);
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(host_root: &str) -> DataRoots {
        DataRoots::new(&WorkloadDataSection {
            allowed_roots: vec!["/srv".into(), "/var/lib/app".into()],
            host_root: host_root.into(),
        })
    }

    #[test]
    fn logical_paths_map_under_the_host_root() {
        assert_eq!(
            roots("/").host_path(Path::new("/srv/db")),
            Path::new("/srv/db")
        );
        assert_eq!(
            roots("/hosts/a").host_path(Path::new("/srv/db")),
            Path::new("/hosts/a/srv/db")
        );
    }

    #[test]
    fn only_paths_under_allowed_roots_are_accepted() {
        let r = roots("/");
        assert!(r.check_allowed(Path::new("/srv/db")).is_ok());
        assert!(r.check_allowed(Path::new("/var/lib/app/x")).is_ok());
        let err = r.check_allowed(Path::new("/srvx/db")).unwrap_err();
        assert!(
            err.contains("/srvx/db") && err.contains("/srv, /var/lib/app"),
            "{err}"
        );
        assert!(r.check_allowed(Path::new("/etc")).is_err());
        assert!(r.check_allowed(Path::new("/srv/../etc")).is_err());
    }

    #[test]
    fn the_allowed_root_itself_and_paths_that_escape_through_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path();
        std::fs::create_dir_all(host.join("srv/ok")).unwrap();
        std::fs::create_dir_all(host.join("elsewhere/db")).unwrap();
        std::os::unix::fs::symlink(host.join("elsewhere"), host.join("srv/x")).unwrap();
        std::os::unix::fs::symlink("/etc", host.join("srv/etc-link")).unwrap();
        let r = DataRoots::new(&WorkloadDataSection {
            allowed_roots: vec!["/srv".into()],
            host_root: host.into(),
        });
        assert!(r.check_allowed(Path::new("/srv/ok")).is_ok());
        assert!(
            r.check_allowed(Path::new("/srv/new/db")).is_ok(),
            "not created yet"
        );
        let e = r.check_allowed(Path::new("/srv")).unwrap_err();
        assert!(e.contains("allowed root itself"), "{e}");
        let e = r.check_allowed(Path::new("/srv/x/db")).unwrap_err();
        assert!(e.contains("elsewhere/db") && e.contains("outside"), "{e}");
        let e = r.check_allowed(Path::new("/srv/etc-link/new")).unwrap_err();
        assert!(e.contains("/etc/new"), "{e}");
        let e = r.check_allowed(Path::new("/srv/x/./db")).unwrap_err();
        assert!(e.contains("normalised"), "{e}");
    }

    #[test]
    fn missing_and_non_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("srv/db")).unwrap();
        std::fs::write(dir.path().join("srv/file"), b"x").unwrap();
        let r = DataRoots::new(&WorkloadDataSection {
            allowed_roots: vec!["/srv".into()],
            host_root: dir.path().into(),
        });
        assert!(r.check_existing(Path::new("/srv/db")).is_ok());
        let e = r.check_existing(Path::new("/srv/file")).unwrap_err();
        assert!(
            e.contains("/srv/file") && e.contains("not a directory"),
            "{e}"
        );
        let e = r.check_existing(Path::new("/srv/none")).unwrap_err();
        assert!(
            e.contains("/srv/none") && e.contains("does not exist"),
            "{e}"
        );
    }
}
