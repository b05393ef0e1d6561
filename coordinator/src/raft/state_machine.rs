//! The replicated state machine is the coordinator's store: each committed entry's writes
//! are applied to it in one transaction together with the entry's log id (and the newest
//! membership), so the store always says exactly which prefix of the log it holds, and a
//! member restarted from its files replays only the entries after it. A snapshot is every
//! record of the store, raw, with that position; installing one replaces the records.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use understudy_common::codec;

use super::{Member, TypeConfig};
use crate::store::{Op, Store};

type Err = StorageError<u64>;

/// Largest snapshot accepted.
const MAX_SNAPSHOT: usize = 256 << 20;
/// Largest encoded log position accepted.
const MAX_POSITION: usize = 64 << 10;
/// Format version of the stored log position and of snapshots.
const FORMAT: u8 = 1;

/// Which prefix of the log the store holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Position {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
}

/// A snapshot's contents.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    position: Position,
    records: Vec<Op>,
}

fn versioned<T: Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    let mut out = vec![FORMAT];
    out.extend(codec::encode(v).map_err(io)?);
    Ok(out)
}

fn unversioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    cap: usize,
    what: &str,
) -> Result<T, std::io::Error> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => codec::decode(body, cap).map_err(io),
        Some((v, _)) => Err(std::io::Error::other(format!(
            "{what}: format version {v} is not supported (this build reads {FORMAT})"
        ))),
        None => Err(std::io::Error::other(format!("{what}: empty"))),
    }
}

type Stored = Option<(SnapshotMeta<u64, Member>, Vec<u8>)>;

/// The state machine: the store, where it is in the log, and the newest snapshot (kept in
/// memory; a restarted member builds a new one when it needs one).
#[derive(Debug, Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    position: Position,
    snapshot: Arc<Mutex<Stored>>,
}

fn slot(s: &Mutex<Stored>) -> std::sync::MutexGuard<'_, Stored> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl StateMachine {
    /// The state machine over `store`, at the position the store records.
    pub fn open(store: Arc<Store>) -> Result<Self, std::io::Error> {
        let position = match store.raft_state().map_err(io)? {
            Some(bytes) => unversioned(&bytes, MAX_POSITION, "store raft position")?,
            None => Position::default(),
        };
        Ok(StateMachine {
            store,
            position,
            snapshot: Arc::new(Mutex::new(None)),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Err> {
        let store = self.store.clone();
        // Records and position come from one read transaction, so they agree even while
        // the state machine goes on applying.
        let built = tokio::task::spawn_blocking(move || -> Result<_, std::io::Error> {
            let (records, position) = store.export().map_err(io)?;
            let position = match position {
                Some(b) => unversioned(&b, MAX_POSITION, "store raft position")?,
                None => Position::default(),
            };
            let bytes = versioned(&Body {
                position: position.clone(),
                records,
            })?;
            Ok((position, bytes))
        })
        .await
        .map_err(io)
        .and_then(|r| r)
        .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let (position, bytes) = built;
        let meta = SnapshotMeta {
            last_log_id: position.applied,
            last_membership: position.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                position.applied.map_or(0, |l| l.leader_id.term),
                position.applied.map_or(0, |l| l.index)
            ),
        };
        *slot(&self.snapshot) = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), Err> {
        Ok((self.position.applied, self.position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut out = Vec::new();
        let mut position = self.position.clone();
        for e in entries {
            position.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => ops.extend(cmd.ops),
                EntryPayload::Membership(m) => {
                    position.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            out.push(());
        }
        if out.is_empty() {
            return Ok(out);
        }
        let state = versioned(&position).map_err(|e| StorageIOError::write_state_machine(&e))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(&ops, Some(&state)).map_err(io))
            .await
            .map_err(io)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.position = position;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let bytes = snapshot.into_inner();
        let bad = |e: std::io::Error| StorageIOError::read_snapshot(Some(meta.signature()), &e);
        let body: Body = unversioned(&bytes, MAX_SNAPSHOT, "snapshot").map_err(bad)?;
        let position = Position {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let state = versioned(&position).map_err(bad)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.import(&body.records, &state).map_err(io))
            .await
            .map_err(io)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.position = position;
        *slot(&self.snapshot) = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Err> {
        Ok(slot(&self.snapshot).clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
