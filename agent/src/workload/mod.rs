//! Workloads on this host: starting and supervising their process trees, and where their
//! files live in the agent's data directory.

pub mod adopt;
pub mod precheck;
pub mod probes;
pub mod process;
pub mod scope;
pub mod stats;

/// Moves the tree rooted at host pid `root` into `workload`'s own systemd scope where
/// systemd manages the host ([`scope`]); a failure is logged, and the tree runs on where
/// it is.
pub fn place_in_scope(workload: &str, root: i32) {
    match scope::place(workload, root) {
        Ok(Some(unit)) => tracing::debug!(workload, unit, "in its own scope"),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            workload,
            "left in the agent's cgroup (an agent restart with KillMode=control-group would stop it): {e}"
        ),
    }
}

use std::path::{Path, PathBuf};

use understudy_common::workload::WorkloadSpec;

use crate::datadir::DataRoots;

/// Each data directory's copy on this host (under `roots`), bound at its logical path.
pub fn binds(roots: &DataRoots, spec: &WorkloadSpec) -> Result<Vec<process::Bind>, String> {
    spec.data_dirs
        .iter()
        .map(|d| {
            roots.check_existing(d).map(|host| process::Bind {
                host,
                logical: d.clone(),
            })
        })
        .collect()
}

/// Where one workload's files live under the agent's data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// Paths for `workload` under `data_dir`.
    pub fn new(data_dir: &Path, workload: &str) -> Self {
        Paths {
            root: data_dir.join("workloads").join(workload),
        }
    }

    /// The workload's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The workload's stdout and stderr, as written on this host.
    pub fn output_log(&self) -> PathBuf {
        self.root.join("output.log")
    }

    /// Epochs this host took as primary.
    pub fn primary_epochs(&self) -> PathBuf {
        self.root.join("primary")
    }

    /// Epochs this host holds as shadow.
    pub fn shadow_epochs(&self) -> PathBuf {
        self.root.join("shadow")
    }
}
