//! The Raft log and vote in a redb file: entries keyed by index, the vote, the committed
//! and the last purged log id in a meta table. redb commits are durable when they return
//! (`Durability::Immediate`), so an append's callback is called after its commit, and a
//! saved vote is on disk before `save_vote` returns. The blocking redb work runs on
//! tokio's blocking threads.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableTable, TableDefinition};
use understudy_common::codec;

use super::TypeConfig;

const LOG: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("raft_meta");
/// Largest encoded entry or meta value accepted.
const MAX_ENTRY: usize = 16 << 20;

type Err = StorageError<u64>;

/// The log store; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

/// Format version of every stored value (the first byte).
const FORMAT: u8 = 1;

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, codec::CodecError> {
    let mut out = vec![FORMAT];
    out.extend(codec::encode(v)?);
    Ok(out)
}

fn dec<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => codec::decode(body, MAX_ENTRY).map_err(io),
        Some((v, _)) => Err(std::io::Error::other(format!(
            "raft log value of format version {v} (this build reads {FORMAT})"
        ))),
        None => Err(std::io::Error::other("empty raft log value")),
    }
}

fn io(e: impl std::error::Error + 'static) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl LogStore {
    /// Opens (creating) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, std::io::Error> {
        let at = |e: redb::Error| std::io::Error::other(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| at(e.into()))?;
        let tx = db.begin_write().map_err(|e| at(e.into()))?;
        tx.open_table(LOG).map_err(|e| at(e.into()))?;
        tx.open_table(META).map_err(|e| at(e.into()))?;
        tx.commit().map_err(|e| at(e.into()))?;
        Ok(LogStore { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, std::io::Error> + Send + 'static,
    ) -> Result<T, std::io::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io)?
    }

    async fn meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, std::io::Error> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(META).map_err(io)?;
            match t.get(key).map_err(io)? {
                None => Ok(None),
                Some(v) => dec(v.value()).map(Some),
            }
        })
        .await
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), std::io::Error> {
        let bytes = enc(value).map_err(io)?;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            tx.open_table(META)
                .map_err(io)?
                .insert(key, bytes.as_slice())
                .map_err(io)?;
            tx.commit().map_err(io)
        })
        .await
    }

    /// Removes the entries in `range` of indexes.
    async fn remove(&self, from: u64, to_inclusive: u64) -> Result<(), std::io::Error> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(LOG).map_err(io)?;
                t.retain_in(from..=to_inclusive, |_, _| false).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Err> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => Some(i - 1),
            Bound::Unbounded => None,
        };
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(LOG).map_err(io)?;
            let rows = match end {
                Some(e) if e < start => return Ok(Vec::new()),
                Some(e) => t.range(start..=e),
                None => t.range(start..),
            }
            .map_err(io)?;
            rows.map(|r| {
                let (_, v) = r.map_err(io)?;
                dec(v.value())
            })
            .collect()
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Err> {
        let purged: Option<Option<LogId<u64>>> = self
            .meta("last_purged")
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let purged = purged.flatten();
        let last = self
            .blocking(|db| {
                let tx = db.begin_read().map_err(io)?;
                let t = tx.open_table(LOG).map_err(io)?;
                let last = match t.last().map_err(io)? {
                    None => None,
                    Some((_, v)) => {
                        let e: Entry<TypeConfig> = dec(v.value())?;
                        Some(e.log_id)
                    }
                };
                Ok(last)
            })
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Err> {
        self.put_meta("vote", vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Err> {
        self.meta("vote")
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), Err> {
        self.put_meta("committed", &committed)
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, Err> {
        let c: Option<Option<LogId<u64>>> = self
            .meta("committed")
            .await
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(c.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| enc(&e).map(|b| (e.log_id.index, b)))
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        let result = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(io)?;
                {
                    let mut t = tx.open_table(LOG).map_err(io)?;
                    for (i, b) in &rows {
                        t.insert(*i, b.as_slice()).map_err(io)?;
                    }
                }
                tx.commit().map_err(io)
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        self.remove(log_id.index, u64::MAX)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        // The purge point is recorded first, so a crash in between leaves no gap unknown.
        self.put_meta("last_purged", &Some(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.remove(0, log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
