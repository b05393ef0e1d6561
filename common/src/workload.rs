//! Workload specifications and the orders and reports that move workloads between hosts.
//!
//! Every order and report carries the workload's *generation*: agents refuse anything older
//! than the newest generation they have seen, so a delayed or replayed order can never
//! act on a workload that has since moved.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest workload name.
pub const MAX_NAME_LEN: usize = 63;

/// What to run and how to protect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Unique name in the cluster.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (default `/`); must exist on every host it may run on.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Time between checkpoint epochs, milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How to check that a restored workload serves.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// Data directories (absolute logical paths) captured with every epoch and
    /// materialised at the same paths on the host it moves to.
    #[serde(default)]
    pub data_dirs: Vec<PathBuf>,
}

/// Most data directories one workload may declare.
pub const MAX_DATA_DIRS: usize = 16;

fn default_interval_ms() -> u64 {
    5000
}

/// A liveness probe run after a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// A TCP connection to this port on the host's own address succeeds.
    Tcp {
        /// The port.
        port: u16,
    },
    /// This command exits 0.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

impl WorkloadSpec {
    /// Every problem with the spec, as (field, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Err(e) = validate_workload_name(&self.name) {
            out.push(("name".into(), e));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            out.push(("command".into(), "a command to run is required".into()));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            out.push((
                "interval".into(),
                format!("{} ms is outside 100ms..1h", self.interval_ms),
            ));
        }
        if let Some(dir) = &self.workdir {
            if !dir.is_absolute() {
                out.push((
                    "workdir".into(),
                    format!("{} must be absolute", dir.display()),
                ));
            }
        }
        if self.data_dirs.len() > MAX_DATA_DIRS {
            out.push((
                "data_dirs".into(),
                format!(
                    "{} data directories; at most {MAX_DATA_DIRS} are allowed",
                    self.data_dirs.len()
                ),
            ));
        }
        for (i, dir) in self.data_dirs.iter().enumerate() {
            if let Err(e) = check_data_dir_path(dir) {
                out.push(("data_dirs".into(), e));
                continue;
            }
            for other in &self.data_dirs[..i] {
                if dir.starts_with(other) || other.starts_with(dir) {
                    out.push((
                        "data_dirs".into(),
                        format!(
                            "{} and {} overlap; data directories must not contain each other",
                            other.display(),
                            dir.display()
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// Checks that a data directory is an absolute, normalised path other than `/`.
pub fn check_data_dir_path(dir: &std::path::Path) -> Result<(), String> {
    use std::path::Component;
    let text = dir
        .to_str()
        .ok_or_else(|| format!("data directory {} is not valid UTF-8", dir.display()))?;
    if !dir.is_absolute() {
        return Err(format!("data directory {text} must be an absolute path"));
    }
    let normal = dir
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal || text.ends_with('/') || text.contains("//") {
        return Err(format!(
            "data directory {text} must be a normalised path (no '.', '..', '//' or trailing '/')"
        ));
    }
    if dir.parent().is_none() {
        return Err("the root directory / cannot be a data directory".into());
    }
    Ok(())
}

/// Checks a workload name: 1–63 characters of `a-z`, `0-9`, `-`, `_`, `.`, starting with
/// a letter or digit (it becomes a directory name on every host).
pub fn validate_workload_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "workload name {name:?} must be 1-{MAX_NAME_LEN} characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        ))
    }
}

/// Another agent, as the data plane reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Host name (its certificate name).
    pub name: String,
    /// Data-plane address.
    pub addr: SocketAddr,
}

/// An order from the coordinator to an agent, on a stream the coordinator opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Order {
    /// Start the workload here as its primary, shadowed on `shadow` if given.
    Start {
        /// What to run.
        spec: WorkloadSpec,
        /// The workload's generation.
        generation: u64,
        /// Where to send epochs.
        shadow: Option<Peer>,
    },
    /// Accept epochs of the workload from `primary`, for this generation or newer.
    ExpectShadow {
        /// The workload, so the shadow can restore it.
        spec: WorkloadSpec,
        /// Its generation.
        generation: u64,
        /// The host allowed to send epochs.
        primary: String,
    },
    /// Take an epoch now. A final epoch stops the workload after the dump.
    Checkpoint {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Stop the workload after dumping (switchover).
        final_epoch: bool,
    },
    /// Restore the newest committed epoch (shadow side) and become primary.
    Restore {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// The epoch to restore; it must be the newest committed one.
        epoch: u64,
        /// Where the new primary sends its epochs.
        shadow: Option<Peer>,
    },
    /// Switchover done: forget the stopped original and its images.
    Release {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
    },
    /// Switchover failed before the new primary was confirmed: keep serving here,
    /// restoring locally from the final dump if the tree was stopped.
    Resume {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
    },
    /// The workload is deleted: stop it if it runs here and forget every copy of it.
    Remove {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
    },
    /// Send epochs to another shadow from now on (the next one whole).
    SetShadow {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// The new shadow.
        shadow: Peer,
    },
}

impl Order {
    /// The workload and generation the order is for.
    pub fn target(&self) -> (&str, u64) {
        match self {
            Order::Start {
                spec, generation, ..
            }
            | Order::ExpectShadow {
                spec, generation, ..
            } => (&spec.name, *generation),
            Order::Checkpoint {
                workload,
                generation,
                ..
            }
            | Order::Restore {
                workload,
                generation,
                ..
            }
            | Order::Release {
                workload,
                generation,
            }
            | Order::Resume {
                workload,
                generation,
            }
            | Order::SetShadow {
                workload,
                generation,
                ..
            }
            | Order::Remove {
                workload,
                generation,
            } => (workload, *generation),
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Order::Start { .. } => "start",
            Order::ExpectShadow { .. } => "expect-shadow",
            Order::Checkpoint {
                final_epoch: false, ..
            } => "checkpoint",
            Order::Checkpoint {
                final_epoch: true, ..
            } => "final-checkpoint",
            Order::Restore { .. } => "restore",
            Order::Release { .. } => "release",
            Order::Resume { .. } => "resume",
            Order::SetShadow { .. } => "set-shadow",
            Order::Remove { .. } => "remove",
        }
    }
}

/// What an agent answers to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderReply {
    /// Done.
    Done,
    /// An epoch was committed on the shadow.
    Epoch(EpochReport),
    /// The workload was restored and passed its liveness check.
    Restored {
        /// Host pid of the restored tree's root.
        pid: i32,
        /// Time CRIU's restore took, milliseconds.
        restore_ms: u64,
        /// Time the liveness check took, milliseconds.
        check_ms: u64,
    },
    /// The order was refused or failed; nothing it would have changed was changed.
    Failed(String),
    /// The order's input is unusable on this host (e.g. a data directory that does not
    /// exist there); nothing was done, and repeating it will not help.
    Invalid(String),
}

/// One committed epoch, as the primary saw it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochReport {
    /// The workload.
    pub workload: String,
    /// Its generation.
    pub generation: u64,
    /// Epoch number.
    pub epoch: u64,
    /// The shadow that committed it.
    pub shadow: String,
    /// Size of the epoch's files.
    pub bytes_total: u64,
    /// Bytes that went over the wire for it.
    pub bytes_sent: u64,
    /// Bytes of files that differ from the previous epoch (whole changed 4 KiB blocks).
    pub bytes_changed: u64,
    /// Time the workload was frozen for the dump, milliseconds.
    pub frozen_ms: u64,
    /// Of `frozen_ms`, the part spent capturing the data directories.
    pub frozen_disk_ms: u64,
    /// Bytes in the workload's data directories at this epoch.
    pub data_bytes: u64,
    /// Of `bytes_changed`, bytes of the data directories.
    pub data_changed: u64,
    /// Of `bytes_sent`, bytes of data-directory files.
    pub data_sent: u64,
    /// Time the transfer and commit took, milliseconds.
    pub transfer_ms: u64,
    /// Agent CPU time spent on this epoch (dump excluded), milliseconds.
    pub cpu_ms: u64,
    /// When the shadow committed it, milliseconds since the Unix epoch.
    pub committed_unix_ms: u64,
    /// Whether CRIU memory tracking (pre-dumps) was used.
    pub incremental: bool,
}

/// Something an agent tells the coordinator on its own initiative (one per uni stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Report {
    /// A periodic epoch was committed on the shadow.
    EpochCommitted(EpochReport),
    /// Transfer progress of the epoch in flight.
    Progress {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Bytes sent so far.
        sent: u64,
        /// Bytes to send, as far as known.
        total: u64,
    },
    /// Epochs are not being taken or not reaching the shadow.
    Unprotected {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Why, in CRIU's or the network's words.
        reason: String,
    },
    /// The workload's process tree exited on its own.
    Exited {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// How it ended, e.g. "exit status 3" or "killed by signal 9".
        status: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_workload_name("kv-1").is_ok());
        assert!(validate_workload_name("../etc").is_err());
        assert!(validate_workload_name("").is_err());
        assert!(validate_workload_name("A").is_err());
    }
}
