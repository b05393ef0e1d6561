//! The workload spec as stores and state files written before it had a `priority` hold it
//! (coordinator store records up to version 5, agent `copies.bin` up to version 3): decoded
//! with this layout, then given the default priority. Binary encodings are positional, so an
//! added field needs the old layout to read old records.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::workload::{FailoverMode, Priority, Probe, RestartPolicy, WorkloadSpec};

/// A [`WorkloadSpec`] without `priority`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the same fields as WorkloadSpec's
pub struct SpecV5 {
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
    pub interval_ms: u64,
    pub probe: Option<Probe>,
    pub data_dirs: Vec<PathBuf>,
    pub restart: RestartPolicy,
    pub user: Option<String>,
    pub group: Option<String>,
    pub groups: Option<Vec<String>>,
    pub stop_signal: String,
    pub stop_timeout_ms: u64,
    pub failover: FailoverMode,
}

impl SpecV5 {
    /// What a build before `priority` would have written for `s` (its priority dropped):
    /// for tests that read old files.
    pub fn written_by_old_build(s: WorkloadSpec) -> Self {
        SpecV5 {
            name: s.name,
            command: s.command,
            env: s.env,
            workdir: s.workdir,
            interval_ms: s.interval_ms,
            probe: s.probe,
            data_dirs: s.data_dirs,
            restart: s.restart,
            user: s.user,
            group: s.group,
            groups: s.groups,
            stop_signal: s.stop_signal,
            stop_timeout_ms: s.stop_timeout_ms,
            failover: s.failover,
        }
    }
}

impl From<SpecV5> for WorkloadSpec {
    fn from(s: SpecV5) -> Self {
        WorkloadSpec {
            name: s.name,
            command: s.command,
            env: s.env,
            workdir: s.workdir,
            interval_ms: s.interval_ms,
            probe: s.probe,
            data_dirs: s.data_dirs,
            restart: s.restart,
            user: s.user,
            group: s.group,
            groups: s.groups,
            stop_signal: s.stop_signal,
            stop_timeout_ms: s.stop_timeout_ms,
            failover: s.failover,
            priority: Priority::Normal,
            secret_env: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn a_spec_written_without_priority_reads_back_whole_with_normal_priority() {
        let new = WorkloadSpec {
            name: "pg".into(),
            command: vec!["postgres".into()],
            env: vec![("A".into(), "1".into())],
            user: Some("postgres".into()),
            data_dirs: vec!["/srv/pg".into()],
            failover: FailoverMode::Manual,
            ..WorkloadSpec::default()
        };
        let old = SpecV5::written_by_old_build(WorkloadSpec {
            priority: Priority::Critical,
            ..new.clone()
        });
        // Followed by more of an enclosing record, as in a store: the old layout ends
        // where the old spec did.
        let bytes = codec::encode(&(old, 7u64)).unwrap();
        let (back, next): (SpecV5, u64) = codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!((WorkloadSpec::from(back), next), (new, 7));
    }
}
