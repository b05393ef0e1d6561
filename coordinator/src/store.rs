//! Durable storage of the coordinator's records in an embedded redb database, so a
//! restarted coordinator still knows every host, every workload, every switchover in flight
//! (with its phase), every deleted workload's last generation, what operators said about
//! hosts (cordons, drains, maintenance windows) and the newest events.
//!
//! Each value is a one-byte format version followed by the encoded record; a value of an
//! unknown version, or one that does not decode, is refused naming the record's kind and
//! key rather than misread. [`salvage`] copies every readable record of a damaged store into
//! a new one, so an operator can start again without the unreadable ones.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use understudy_common::codec;
use understudy_common::seal::KeyBytes;
use understudy_common::workload::{EpochReport, WorkloadSpec};

use serde::{de::DeserializeOwned, Serialize};
use understudy_common::workload_v5::SpecV5;
use understudy_common::workload_v6::SpecV6;
use understudy_common::workload_v7::EpochReportV7;

use crate::admin::HostAdmin;
use crate::events::{Event, MAX_EVENTS};
use crate::registry::HostRecord;
use crate::revocation::Revocation;
use crate::tokens::JoinToken;
use crate::workloads::migration::Migration;
use crate::workloads::{Tombstone, WorkloadRecord};

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// One kind of record: its table and the name errors give it.
#[derive(Clone, Copy)]
struct Kind {
    table: Table,
    name: &'static str,
    /// The oldest format version this build still reads for it.
    oldest: u8,
}

const HOSTS: Kind = Kind {
    table: TableDefinition::new("hosts"),
    name: "host",
    // Host records have not changed since version 2.
    oldest: 2,
};
// Version 4 added the spec's user, groups and stop settings; 5 its failover mode, the
// lost state, failovers and their recovery points; 6 its priority; 7 its secret_env
// (version 5 and 6 records are read with the spec's old layouts, `workload_v5`, `_v6`);
// 8 the recovery point's cadence (version 7 and older records are read with the epoch
// report's old layout, `workload_v7`); 9 shadows beyond the first (older records are read
// without them: one shadow).
const WORKLOADS: Kind = Kind {
    table: TableDefinition::new("workloads"),
    name: "workload",
    oldest: 5,
};
const MIGRATIONS: Kind = Kind {
    table: TableDefinition::new("migrations"),
    name: "migration",
    oldest: 5,
};
const TOMBSTONES: Kind = Kind {
    table: TableDefinition::new("tombstones"),
    name: "tombstone",
    oldest: 3,
};
const HOST_ADMIN: Kind = Kind {
    table: TableDefinition::new("host_admin"),
    name: "host admin",
    oldest: 5,
};
const EVENTS: Kind = Kind {
    table: TableDefinition::new("events"),
    name: "event",
    oldest: 5,
};
// Since version 7: host certificates revoked (`understudy host revoke`).
const REVOCATIONS: Kind = Kind {
    table: TableDefinition::new("revocations"),
    name: "revocation",
    oldest: 7,
};
// Since version 7 too (a table an older build does not have): join tokens (`understudy
// token create`), by id, with the hash of their secret.
const TOKENS: Kind = Kind {
    table: TableDefinition::new("join_tokens"),
    name: "join token",
    oldest: 7,
};
// Since version 7 too: each workload's data key, which seals its checkpoints (written
// once: a replicated write for a key that exists changes nothing, so two coordinators
// that each made one agree on the first).
const DATA_KEYS: Kind = Kind {
    table: TableDefinition::new("data_keys"),
    name: "data key",
    oldest: 7,
};
const KINDS: [Kind; 9] = [
    HOSTS,
    WORKLOADS,
    MIGRATIONS,
    TOMBSTONES,
    HOST_ADMIN,
    EVENTS,
    REVOCATIONS,
    TOKENS,
    DATA_KEYS,
];

/// The name of record table `kind` (an [`Op`]'s kind), if there is one.
pub fn kind_name(kind: u8) -> Option<&'static str> {
    KINDS.get(usize::from(kind)).map(|k| k.name)
}

/// The format version of records this build writes.
pub const RECORD_VERSION: u8 = 10;
const MAX_RECORD_BYTES: usize = 256 * 1024;
/// How many tombstones are kept (the oldest go first).
const MAX_TOMBSTONES: usize = 10_000;

/// A kind of record, decoded from the body of a given format version.
trait Record: DeserializeOwned {
    fn decode_version(_version: u8, body: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(body, MAX_RECORD_BYTES)
    }
}

impl Record for HostRecord {
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, codec::CodecError> {
        if version <= 9 {
            let old: crate::registry::HostRecordV9 = codec::decode(body, MAX_RECORD_BYTES)?;
            return Ok(old.into());
        }
        codec::decode(body, MAX_RECORD_BYTES)
    }
}
impl Record for Tombstone {}
impl Record for HostAdmin {}
impl Record for Event {}
impl Record for Revocation {}
impl Record for JoinToken {}
impl Record for KeyBytes {}

impl Record for WorkloadRecord {
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, codec::CodecError> {
        match version {
            ..=5 => {
                let old: WorkloadRecord<SpecV5, EpochReportV7, ()> =
                    codec::decode(body, MAX_RECORD_BYTES)?;
                Ok(old
                    .map_spec(Into::into)
                    .map_epoch(Into::into)
                    .with_one_shadow())
            }
            6 => {
                let old: WorkloadRecord<SpecV6, EpochReportV7, ()> =
                    codec::decode(body, MAX_RECORD_BYTES)?;
                Ok(old
                    .map_spec(Into::into)
                    .map_epoch(Into::into)
                    .with_one_shadow())
            }
            7 => {
                let old: WorkloadRecord<WorkloadSpec, EpochReportV7, ()> =
                    codec::decode(body, MAX_RECORD_BYTES)?;
                Ok(old.map_epoch(Into::into).with_one_shadow())
            }
            8 => {
                let old: WorkloadRecord<WorkloadSpec, EpochReport, ()> =
                    codec::decode(body, MAX_RECORD_BYTES)?;
                Ok(old.with_one_shadow())
            }
            _ => codec::decode(body, MAX_RECORD_BYTES),
        }
    }
}

impl Record for Migration {
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, codec::CodecError> {
        match version {
            ..=5 => {
                let old: Migration<SpecV5> = codec::decode(body, MAX_RECORD_BYTES)?;
                Ok(old.map_spec(Into::into))
            }
            6 => {
                let old: Migration<SpecV6> = codec::decode(body, MAX_RECORD_BYTES)?;
                Ok(old.map_spec(Into::into))
            }
            _ => codec::decode(body, MAX_RECORD_BYTES),
        }
    }
}

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
    /// A write could not be committed through the coordinator group.
    #[error("store {}: write not committed by the coordinator group: {reason}", path.display())]
    Replication {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A stored record could not be read.
    #[error("store {}: {kind} record {key:?}: {reason} (see `understudy store salvage` in docs/operations.md)", path.display())]
    Record {
        /// The database file.
        path: PathBuf,
        /// The kind of record: host, workload, migration or tombstone.
        kind: &'static str,
        /// The record's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the store holds, as loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Host records.
    pub hosts: Vec<HostRecord>,
    /// Workload records.
    pub workloads: Vec<WorkloadRecord>,
    /// Switchovers in flight (or finished, until their workload's next one).
    pub migrations: Vec<Migration>,
    /// Deleted workloads.
    pub tombstones: Vec<Tombstone>,
    /// What operators said about hosts.
    pub host_admin: Vec<HostAdmin>,
    /// The newest events.
    pub events: Vec<Event>,
    /// Revoked host certificates.
    pub revocations: Vec<Revocation>,
}

/// Where a store's writes go when the coordinator runs as a group: through the replicated
/// log, whose state machine applies them here with [`Store::apply`].
pub trait Replicate: Send + Sync {
    /// Commits `ops` through the group, returning once they are applied locally.
    fn replicate(&self, ops: Vec<Op>) -> Result<(), String>;
}

/// One raw write: a record's encoded bytes (format version first) put under `key` in the
/// table of `kind` (an index into the store's record kinds), or the key removed. Writes are
/// replicated in this form, so the log carries exactly the bytes the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Op {
    /// Which table.
    pub kind: u8,
    /// The record's key.
    pub key: String,
    /// Its bytes; `None` removes it.
    pub value: Option<Vec<u8>>,
}

/// The coordinator's database.
pub struct Store {
    db: Database,
    path: PathBuf,
    replicator: std::sync::RwLock<Option<std::sync::Arc<dyn Replicate>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The replicated log's position in the state a store holds (version byte first).
const RAFT_STATE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("raft_state");

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Its directory, where `validate` noted it missing: the service makes it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| db_err(path, redb::StorageError::Io(e)))?;
        }
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let store = Store {
            db,
            path: path.to_owned(),
            replicator: std::sync::RwLock::new(None),
        };
        // Make sure the tables exist so that reads on a fresh store succeed.
        let tx = store.db.begin_write().map_err(|e| store.err(e))?;
        for kind in KINDS {
            tx.open_table(kind.table).map_err(|e| store.err(e))?;
        }
        tx.open_table(RAFT_STATE).map_err(|e| store.err(e))?;
        tx.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// Every record, refusing the first one that cannot be read.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        Ok(Loaded {
            hosts: self.load_kind(HOSTS)?,
            workloads: self.load_kind(WORKLOADS)?,
            migrations: self.load_kind(MIGRATIONS)?,
            tombstones: self.load_kind(TOMBSTONES)?,
            host_admin: self.load_kind(HOST_ADMIN)?,
            events: self.load_kind(EVENTS)?,
            revocations: self.load_kind(REVOCATIONS)?,
        })
    }

    /// Writes what operators said about one host (an empty record is removed).
    pub fn save_host_admin(&self, admin: &HostAdmin) -> Result<(), StoreError> {
        self.write(|w| {
            if admin.is_empty() {
                w.remove(HOST_ADMIN, &admin.host)
            } else {
                w.put(HOST_ADMIN, &admin.host, admin)
            }
        })
    }

    /// Writes a host's revocation (replacing an earlier one).
    pub fn save_revocation(&self, r: &Revocation) -> Result<(), StoreError> {
        self.write(|w| w.put(REVOCATIONS, &r.host, r))
    }

    /// Every join token (spent and expired ones until they are forgotten).
    pub fn tokens(&self) -> Result<Vec<JoinToken>, StoreError> {
        self.load_kind(TOKENS)
    }

    /// Writes `token` and forgets the tokens in `forget` (by id), in one transaction.
    pub fn save_token(&self, token: &JoinToken, forget: &[String]) -> Result<(), StoreError> {
        self.write(|w| {
            for id in forget {
                w.remove(TOKENS, id)?;
            }
            w.put(TOKENS, &token.id, token)
        })
    }

    /// Forgets token `id`; whether there was one.
    pub fn forget_token(&self, id: &str) -> Result<bool, StoreError> {
        let known = self.tokens()?.iter().any(|t| t.id == id);
        if known {
            self.write(|w| w.remove(TOKENS, id))?;
        }
        Ok(known)
    }

    /// Appends an event, dropping the one `MAX_EVENTS` before it.
    pub fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        self.write(|w| {
            w.put(EVENTS, &event_key(event.seq), event)?;
            if let Some(old) = event.seq.checked_sub(MAX_EVENTS as u64) {
                w.remove(EVENTS, &event_key(old))?;
            }
            Ok(())
        })
    }

    /// Writes the given host records in one transaction.
    pub fn save_hosts<'a>(
        &self,
        records: impl IntoIterator<Item = &'a HostRecord>,
    ) -> Result<(), StoreError> {
        self.write(|w| {
            for r in records {
                w.put(HOSTS, &r.name, r)?;
            }
            Ok(())
        })
    }

    /// Writes one workload record and, in the same transaction, its switchover's state.
    pub fn save_workload(
        &self,
        record: &WorkloadRecord,
        migration: Option<&Migration>,
    ) -> Result<(), StoreError> {
        self.write(|w| {
            w.put(WORKLOADS, &record.spec.name, record)?;
            if let Some(m) = migration {
                w.put(MIGRATIONS, m.workload(), m)?;
            }
            Ok(())
        })
    }

    /// Deletes one workload record and its switchover, leaving `tombstone` (keeping at
    /// most [`MAX_TOMBSTONES`], oldest dropped first).
    pub fn delete_workload(&self, name: &str, tombstone: &Tombstone) -> Result<(), StoreError> {
        let old: Vec<Tombstone> = self.load_kind(TOMBSTONES)?;
        self.write(|w| {
            w.remove(WORKLOADS, name)?;
            w.remove(MIGRATIONS, name)?;
            w.remove(DATA_KEYS, name)?;
            w.put(TOMBSTONES, &tombstone.name, tombstone)?;
            if old.len() >= MAX_TOMBSTONES {
                let mut by_age: Vec<&Tombstone> =
                    old.iter().filter(|t| t.name != tombstone.name).collect();
                by_age.sort_by_key(|t| t.deleted_unix_ms);
                for t in by_age.iter().take(old.len() + 1 - MAX_TOMBSTONES) {
                    w.remove(TOMBSTONES, &t.name)?;
                }
            }
            Ok(())
        })
    }

    /// Workload `name`'s data key, made (and replicated) on first use.
    pub fn data_key(&self, name: &str) -> Result<KeyBytes, StoreError> {
        if let Some(k) = self.stored_key(name)? {
            return Ok(k);
        }
        let fresh = KeyBytes::generate().map_err(|_| StoreError::Record {
            path: self.path.clone(),
            kind: DATA_KEYS.name,
            key: name.to_owned(),
            reason: "the system's random number generator failed".into(),
        })?;
        self.write(|w| w.put(DATA_KEYS, name, &fresh))?;
        // Another coordinator's key, if it was first, is the one kept.
        self.stored_key(name)?.ok_or_else(|| StoreError::Record {
            path: self.path.clone(),
            kind: DATA_KEYS.name,
            key: name.to_owned(),
            reason: "written but not found".into(),
        })
    }

    fn stored_key(&self, name: &str) -> Result<Option<KeyBytes>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(DATA_KEYS.table).map_err(|e| self.err(e))?;
        let Some(v) = table.get(name).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        self.decode(DATA_KEYS, name, v.value()).map(Some)
    }

    /// Forgets the tombstone of `name` (a new workload took the name).
    pub fn remove_tombstone(&self, name: &str) -> Result<(), StoreError> {
        self.write(|w| w.remove(TOMBSTONES, name))
    }

    fn load_kind<T: Record>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for (key, value) in self.raw(kind)? {
            out.push(self.decode(kind, &key, &value)?);
        }
        Ok(out)
    }

    fn raw(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(kind.table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Whether writes go through a coordinator group's log.
    pub fn is_replicated(&self) -> bool {
        self.replicator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Sends this store's writes through `r` from now on.
    pub fn replicate_through(&self, r: std::sync::Arc<dyn Replicate>) {
        *self.replicator.write().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }

    fn write(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut w = Writer {
            store: self,
            ops: Vec::new(),
        };
        f(&mut w)?;
        let replicator = self
            .replicator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match replicator {
            Some(r) => r
                .replicate(w.ops)
                .map_err(|reason| StoreError::Replication {
                    path: self.path.clone(),
                    reason,
                }),
            None => self.apply(&w.ops, None),
        }
    }

    /// Applies raw writes in one transaction, with the replicated log's position when
    /// they come from it.
    pub fn apply(&self, ops: &[Op], raft_state: Option<&[u8]>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        self.apply_in(&tx, ops, raft_state)?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn apply_in(
        &self,
        tx: &redb::WriteTransaction,
        ops: &[Op],
        raft_state: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        for op in ops {
            let Some(kind) = KINDS.get(usize::from(op.kind)) else {
                return Err(StoreError::Record {
                    path: self.path.clone(),
                    kind: "replicated write",
                    key: op.key.clone(),
                    reason: format!("unknown table {}", op.kind),
                });
            };
            let mut table = tx.open_table(kind.table).map_err(|e| self.err(e))?;
            if kind.name == DATA_KEYS.name && op.value.is_some() {
                let exists = table
                    .get(op.key.as_str())
                    .map_err(|e| self.err(e))?
                    .is_some();
                if exists {
                    continue;
                }
            }
            match &op.value {
                Some(v) => table.insert(op.key.as_str(), v.as_slice()).map(|_| ()),
                None => table.remove(op.key.as_str()).map(|_| ()),
            }
            .map_err(|e| self.err(e))?;
        }
        if let Some(state) = raft_state {
            let mut t = tx.open_table(RAFT_STATE).map_err(|e| self.err(e))?;
            t.insert("applied", state).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The replicated log's position this store's records are at (as stored by
    /// [`Store::apply`]), if any.
    pub fn raft_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(RAFT_STATE).map_err(|e| self.err(e))?;
        let v = t.get("applied").map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Every record as raw writes, with the replicated log's position they are at, read in
    /// one transaction (a snapshot of the state).
    pub fn export(&self) -> Result<(Vec<Op>, Option<Vec<u8>>), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for (i, kind) in KINDS.iter().enumerate() {
            let table = tx.open_table(kind.table).map_err(|e| self.err(e))?;
            for row in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                out.push(Op {
                    kind: u8::try_from(i).unwrap_or(u8::MAX),
                    key: k.value().to_owned(),
                    value: Some(v.value().to_vec()),
                });
            }
        }
        let t = tx.open_table(RAFT_STATE).map_err(|e| self.err(e))?;
        let state = t.get("applied").map_err(|e| self.err(e))?;
        Ok((out, state.map(|v| v.value().to_vec())))
    }

    /// Replaces every record with `ops` (a snapshot), in one transaction.
    pub fn import(&self, ops: &[Op], raft_state: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        for kind in KINDS {
            let keys: Vec<String> = {
                let t = tx.open_table(kind.table).map_err(|e| self.err(e))?;
                let mut keys = Vec::new();
                for row in t.iter().map_err(|e| self.err(e))? {
                    let (k, _) = row.map_err(|e| self.err(e))?;
                    keys.push(k.value().to_owned());
                }
                keys
            };
            let mut t = tx.open_table(kind.table).map_err(|e| self.err(e))?;
            for k in keys {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
        }
        self.apply_in(&tx, ops, Some(raft_state))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn decode<T: Record>(&self, kind: Kind, key: &str, value: &[u8]) -> Result<T, StoreError> {
        let bad = |reason: String| StoreError::Record {
            path: self.path.clone(),
            kind: kind.name,
            key: key.to_owned(),
            reason,
        };
        match value.split_first() {
            Some((&v, body)) if (kind.oldest..=RECORD_VERSION).contains(&v) => {
                T::decode_version(v, body).map_err(|e| bad(e.to_string()))
            }
            Some((v, _)) => Err(bad(format!(
                "record format version {v} is not supported (this build reads {} to {RECORD_VERSION})",
                kind.oldest
            ))),
            None => Err(bad("empty record".into())),
        }
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_err(&self.path, e)
    }
}

/// The raw writes of one transaction, being gathered.
struct Writer<'a> {
    store: &'a Store,
    ops: Vec<Op>,
}

fn kind_index(kind: Kind) -> u8 {
    KINDS
        .iter()
        .position(|k| k.name == kind.name)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

impl Writer<'_> {
    fn put<T: Serialize>(&mut self, kind: Kind, key: &str, record: &T) -> Result<(), StoreError> {
        let mut bytes = vec![RECORD_VERSION];
        bytes.extend(codec::encode(record).map_err(|e| StoreError::Record {
            path: self.store.path.clone(),
            kind: kind.name,
            key: key.to_owned(),
            reason: e.to_string(),
        })?);
        self.ops.push(Op {
            kind: kind_index(kind),
            key: key.to_owned(),
            value: Some(bytes),
        });
        Ok(())
    }

    fn remove(&mut self, kind: Kind, key: &str) -> Result<(), StoreError> {
        self.ops.push(Op {
            kind: kind_index(kind),
            key: key.to_owned(),
            value: None,
        });
        Ok(())
    }
}

/// Events are kept in number order.
fn event_key(seq: u64) -> String {
    format!("{seq:020}")
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        source: Box::new(e.into()),
    }
}

/// One record as [`check`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// host, workload, migration, tombstone, host admin or event.
    pub kind: &'static str,
    /// Its key.
    pub key: String,
    /// Why it cannot be read, if it cannot.
    pub problem: Option<String>,
}

/// Every record of the store at `path` by kind and key, with why it cannot be read, if it
/// cannot (read-only; the coordinator must not be running on it).
pub fn check(path: &Path) -> Result<Vec<Checked>, StoreError> {
    let store = Store::open(path)?;
    let mut out = Vec::new();
    for kind in KINDS {
        for (key, value) in store.raw(kind)? {
            let problem = store.readable(kind, &key, &value).err();
            out.push(Checked {
                kind: kind.name,
                key,
                problem,
            });
        }
    }
    Ok(out)
}

/// What [`salvage`] did.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Records copied, by kind.
    pub kept: Vec<(&'static str, String)>,
    /// Records left behind, by kind, with why.
    pub dropped: Vec<(&'static str, String, String)>,
    /// Where the damaged store was moved.
    pub moved_to: PathBuf,
}

impl Store {
    /// Whether one raw record decodes as its kind; the reason if not.
    /// Every record of a backup that this build cannot use, as (kind, key, why): an
    /// unknown table, a removal (a backup only holds records), or bytes that do not decode.
    pub fn unusable(&self, records: &[Op]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for op in records {
            let Some(kind) = KINDS.get(usize::from(op.kind)) else {
                out.push((
                    format!("table {}", op.kind),
                    op.key.clone(),
                    "unknown table".into(),
                ));
                continue;
            };
            let problem = match &op.value {
                None => Err("a removal, not a record".to_owned()),
                Some(v) => self.readable(*kind, &op.key, v),
            };
            if let Err(why) = problem {
                out.push((kind.name.to_owned(), op.key.clone(), why));
            }
        }
        out
    }

    /// How many workloads and switchovers in flight this store holds.
    pub fn workload_count(&self) -> Result<(usize, usize), StoreError> {
        Ok((self.raw(WORKLOADS)?.len(), self.raw(MIGRATIONS)?.len()))
    }

    /// Writes a backup's records (through the group's log when replicated), in one write.
    pub fn restore(&self, records: &[Op]) -> Result<(), StoreError> {
        self.write(|w| {
            w.ops.extend_from_slice(records);
            Ok(())
        })
    }

    fn readable(&self, kind: Kind, key: &str, value: &[u8]) -> Result<(), String> {
        let result = match kind.name {
            "host" => self.decode::<HostRecord>(kind, key, value).map(|_| ()),
            "workload" => self.decode::<WorkloadRecord>(kind, key, value).map(|_| ()),
            "migration" => self.decode::<Migration>(kind, key, value).map(|_| ()),
            "host admin" => self.decode::<HostAdmin>(kind, key, value).map(|_| ()),
            "event" => self.decode::<Event>(kind, key, value).map(|_| ()),
            "revocation" => self.decode::<Revocation>(kind, key, value).map(|_| ()),
            "join token" => self.decode::<JoinToken>(kind, key, value).map(|_| ()),
            "data key" => self.decode::<KeyBytes>(kind, key, value).map(|_| ()),
            _ => self.decode::<Tombstone>(kind, key, value).map(|_| ()),
        };
        result.map_err(|e| match e {
            StoreError::Record { reason, .. } => reason,
            other => other.to_string(),
        })
    }
}

/// Copies every readable record of the store at `path` into a fresh store at `path`,
/// after moving the damaged file aside to `path.damaged-UNIXMS` (never deleted).
pub fn salvage(path: &Path, now_ms: u64) -> Result<Salvaged, StoreError> {
    let old = Store::open(path)?;
    let mut rows = Vec::new();
    for kind in KINDS {
        for (key, value) in old.raw(kind)? {
            rows.push((kind, key, value));
        }
    }
    drop(old);
    let moved_to = PathBuf::from(format!("{}.damaged-{now_ms}", path.display()));
    std::fs::rename(path, &moved_to).map_err(|e| db_err(path, redb::Error::Io(e)))?;
    let new = Store::open(path)?;
    let mut out = Salvaged {
        moved_to,
        ..Salvaged::default()
    };
    for (kind, key, value) in rows {
        match new.readable(kind, &key, &value) {
            Ok(()) => {
                // Kept as it was, with its own format version (which this build reads).
                new.apply(
                    &[Op {
                        kind: kind_index(kind),
                        key: key.clone(),
                        value: Some(value),
                    }],
                    None,
                )?;
                out.kept.push((kind.name, key));
            }
            Err(reason) => out.dropped.push((kind.name, key, reason)),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
