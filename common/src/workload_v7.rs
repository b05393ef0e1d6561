//! The epoch report as stores written before adaptive cadence hold it (coordinator store
//! records version 7 and older): decoded with this layout, then given no cadence. Binary
//! encodings are positional, so an added field needs the old layout to read old records.

use serde::{Deserialize, Serialize};

use crate::workload::EpochReport;

/// An [`EpochReport`] without `cadence`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[allow(missing_docs)] // the same fields as EpochReport's
pub struct EpochReportV7 {
    pub workload: String,
    pub generation: u64,
    pub epoch: u64,
    pub shadow: String,
    pub bytes_total: u64,
    pub bytes_sent: u64,
    pub bytes_changed: u64,
    pub frozen_ms: u64,
    pub frozen_disk_ms: u64,
    pub data_bytes: u64,
    pub data_changed: u64,
    pub data_sent: u64,
    pub transfer_ms: u64,
    pub cpu_ms: u64,
    pub committed_unix_ms: u64,
    pub incremental: bool,
}

impl EpochReportV7 {
    /// What a build before adaptive cadence would have written for `r` (its cadence
    /// dropped): for tests that read old records.
    pub fn written_by_old_build(r: EpochReport) -> Self {
        let EpochReport {
            workload,
            generation,
            epoch,
            shadow,
            bytes_total,
            bytes_sent,
            bytes_changed,
            frozen_ms,
            frozen_disk_ms,
            data_bytes,
            data_changed,
            data_sent,
            transfer_ms,
            cpu_ms,
            committed_unix_ms,
            incremental,
            cadence: _,
        } = r;
        EpochReportV7 {
            workload,
            generation,
            epoch,
            shadow,
            bytes_total,
            bytes_sent,
            bytes_changed,
            frozen_ms,
            frozen_disk_ms,
            data_bytes,
            data_changed,
            data_sent,
            transfer_ms,
            cpu_ms,
            committed_unix_ms,
            incremental,
        }
    }
}

impl From<EpochReportV7> for EpochReport {
    fn from(r: EpochReportV7) -> Self {
        let EpochReportV7 {
            workload,
            generation,
            epoch,
            shadow,
            bytes_total,
            bytes_sent,
            bytes_changed,
            frozen_ms,
            frozen_disk_ms,
            data_bytes,
            data_changed,
            data_sent,
            transfer_ms,
            cpu_ms,
            committed_unix_ms,
            incremental,
        } = r;
        EpochReport {
            workload,
            generation,
            epoch,
            shadow,
            bytes_total,
            bytes_sent,
            bytes_changed,
            frozen_ms,
            frozen_disk_ms,
            data_bytes,
            data_changed,
            data_sent,
            transfer_ms,
            cpu_ms,
            committed_unix_ms,
            incremental,
            cadence: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::workload::{Cadence, CadenceLimit};

    #[test]
    fn a_report_written_without_cadence_reads_back_whole_with_none() {
        let new = EpochReport {
            workload: "pg".into(),
            epoch: 12,
            frozen_ms: 140,
            committed_unix_ms: 1_800_000_000_000,
            ..EpochReport::default()
        };
        let old = EpochReportV7::written_by_old_build(EpochReport {
            cadence: Some(Cadence {
                interval_ms: 4000,
                limit: CadenceLimit::FreezeBudget,
            }),
            ..new.clone()
        });
        // Followed by more of an enclosing record, as in a store.
        let bytes = codec::encode(&(Some(old), 7u64)).unwrap();
        let (back, next): (Option<EpochReportV7>, u64) = codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!((back.map(EpochReport::from), next), (Some(new), 7));
    }
}
