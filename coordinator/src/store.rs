//! Durable storage of host and workload records in an embedded redb database, so a
//! restarted coordinator still knows every host and workload.
//!
//! Each value is a one-byte format version followed by the encoded record; a value of an
//! unknown version is refused with its key named rather than misread.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use understudy_common::codec;

use serde::{de::DeserializeOwned, Serialize};

use crate::registry::HostRecord;
use crate::workloads::WorkloadRecord;

const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const WORKLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("workloads");
const RECORD_VERSION: u8 = 2;
const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or written.
    #[error("store {}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// A stored record could not be read.
    #[error("store {}: host record {key:?}: {reason}", path.display())]
    Record {
        /// The database file.
        path: PathBuf,
        /// The record's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The coordinator's database: host and workload records.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let store = Store {
            db,
            path: path.to_owned(),
        };
        // Make sure the table exists so that reads on a fresh store succeed.
        let tx = store.db.begin_write().map_err(|e| store.err(e))?;
        tx.open_table(HOSTS).map_err(|e| store.err(e))?;
        tx.open_table(WORKLOADS).map_err(|e| store.err(e))?;
        tx.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// Every stored host record.
    pub fn load_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        self.load(HOSTS)
    }

    /// Writes the given host records in one transaction.
    pub fn save_hosts<'a>(
        &self,
        records: impl IntoIterator<Item = &'a HostRecord>,
    ) -> Result<(), StoreError> {
        self.save(HOSTS, records.into_iter().map(|r| (r.name.as_str(), r)))
    }

    /// Every stored workload record.
    pub fn load_workloads(&self) -> Result<Vec<WorkloadRecord>, StoreError> {
        self.load(WORKLOADS)
    }

    /// Writes one workload record.
    pub fn save_workload(&self, record: &WorkloadRecord) -> Result<(), StoreError> {
        self.save(WORKLOADS, [(record.spec.name.as_str(), record)])
    }

    /// Deletes one workload record.
    pub fn delete_workload(&self, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(WORKLOADS).map_err(|e| self.err(e))?;
            table.remove(name).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn load<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(def).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push(self.decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn save<'a, T: Serialize + 'a>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        records: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(def).map_err(|e| self.err(e))?;
            for (key, record) in records {
                let mut bytes = vec![RECORD_VERSION];
                bytes.extend(codec::encode(record).map_err(|e| StoreError::Record {
                    path: self.path.clone(),
                    key: key.to_owned(),
                    reason: e.to_string(),
                })?);
                table
                    .insert(key, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, value: &[u8]) -> Result<T, StoreError> {
        let bad = |reason: String| StoreError::Record {
            path: self.path.clone(),
            key: key.to_owned(),
            reason,
        };
        match value.split_first() {
            Some((&RECORD_VERSION, body)) => {
                codec::decode(body, MAX_RECORD_BYTES).map_err(|e| bad(e.to_string()))
            }
            Some((v, _)) => Err(bad(format!(
                "record format version {v} is not supported (this build reads {RECORD_VERSION})"
            ))),
            None => Err(bad("empty record".into())),
        }
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_err(&self.path, e)
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        source: Box::new(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let rec = HostRecord {
            name: "host-a".into(),
            address: None,
            connected: true,
            first_seen_unix_ms: 1,
            last_seen_unix_ms: 2,
            agent_version: "0.1.0".into(),
            telemetry: None,
            heartbeats: 3,
            data_port: None,
        };
        Store::open(&path).unwrap().save_hosts([&rec]).unwrap();
        let loaded = Store::open(&path).unwrap().load_hosts().unwrap();
        assert_eq!(loaded, vec![rec]);
    }
}
