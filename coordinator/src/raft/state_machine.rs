//! The replicated state machine, for now the smallest one openraft accepts: it applies
//! [`Command`]s to a map in memory and keeps the applied log id and membership; a snapshot is
//! all of it, encoded. (Issue 18 will apply commands to the coordinator's store instead.)

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use understudy_common::codec;

use super::{Command, Member, TypeConfig};

type Err = StorageError<u64>;

/// Largest snapshot accepted.
const MAX_SNAPSHOT: usize = 256 << 20;

/// What the state machine holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The newest entry applied.
    pub applied: Option<LogId<u64>>,
    /// The newest membership applied.
    pub membership: StoredMembership<u64, Member>,
    /// The records.
    pub records: BTreeMap<String, Vec<u8>>,
}

type Stored = Option<(SnapshotMeta<u64, Member>, Vec<u8>)>;

/// The state machine with its newest snapshot (shared with the snapshot builders it hands
/// out, which take a copy of the state: a snapshot they build becomes the current one).
#[derive(Debug, Clone, Default)]
pub struct StateMachine {
    /// Its state.
    pub state: State,
    snapshot: Arc<Mutex<Stored>>,
    built: Arc<AtomicU64>,
}

fn slot(s: &Mutex<Stored>) -> std::sync::MutexGuard<'_, Stored> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Err> {
        let bytes =
            codec::encode(&self.state).map_err(|e| StorageIOError::read_state_machine(&io(e)))?;
        let built = self.built.fetch_add(1, Ordering::Relaxed) + 1;
        let meta = SnapshotMeta {
            last_log_id: self.state.applied,
            last_membership: self.state.membership.clone(),
            snapshot_id: format!("{}-{}", self.state.applied.map_or(0, |l| l.index), built),
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
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.state.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Command::Put { key, value }) => {
                    self.state.records.insert(key, value);
                }
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            out.push(());
        }
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
        let state: State = codec::decode(&bytes, MAX_SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &io(e)))?;
        self.state = state;
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
