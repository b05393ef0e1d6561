//! The workload spec as stores and state files written before it had `secret_env` hold it
//! (coordinator store records version 6, agent `copies.bin` version 4): decoded with this
//! layout, then given no secret variables. Binary encodings are positional, so an added
//! field needs the old layout to read old records.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::workload::{FailoverMode, Priority, Probe, RestartPolicy, WorkloadSpec};

/// A [`WorkloadSpec`] without `secret_env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the same fields as WorkloadSpec's
pub struct SpecV6 {
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
    pub priority: Priority,
}

impl SpecV6 {
    /// What a build before `secret_env` would have written for `s` (its secret names
    /// dropped): for tests that read old files.
    pub fn written_by_old_build(s: WorkloadSpec) -> Self {
        let WorkloadSpec {
            name,
            command,
            env,
            workdir,
            interval_ms,
            probe,
            data_dirs,
            restart,
            user,
            group,
            groups,
            stop_signal,
            stop_timeout_ms,
            failover,
            priority,
            secret_env: _,
        } = s;
        SpecV6 {
            name,
            command,
            env,
            workdir,
            interval_ms,
            probe,
            data_dirs,
            restart,
            user,
            group,
            groups,
            stop_signal,
            stop_timeout_ms,
            failover,
            priority,
        }
    }
}

impl From<SpecV6> for WorkloadSpec {
    fn from(s: SpecV6) -> Self {
        let SpecV6 {
            name,
            command,
            env,
            workdir,
            interval_ms,
            probe,
            data_dirs,
            restart,
            user,
            group,
            groups,
            stop_signal,
            stop_timeout_ms,
            failover,
            priority,
        } = s;
        WorkloadSpec {
            name,
            command,
            env,
            workdir,
            interval_ms,
            probe,
            data_dirs,
            restart,
            user,
            group,
            groups,
            stop_signal,
            stop_timeout_ms,
            failover,
            priority,
            secret_env: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn a_spec_written_without_secret_env_reads_back_whole_with_none() {
        let new = WorkloadSpec {
            name: "pg".into(),
            command: vec!["postgres".into()],
            env: vec![("PGPASSWORD".into(), "x".into())],
            user: Some("postgres".into()),
            priority: Priority::Critical,
            ..WorkloadSpec::default()
        };
        let old = SpecV6::written_by_old_build(WorkloadSpec {
            secret_env: vec!["PGPASSWORD".into()],
            ..new.clone()
        });
        // Followed by more of an enclosing record, as in a store: the old layout ends
        // where the old spec did.
        let bytes = codec::encode(&(old, 7u64)).unwrap();
        let (back, next): (SpecV6, u64) = codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!((WorkloadSpec::from(back), next), (new, 7));
    }
}
