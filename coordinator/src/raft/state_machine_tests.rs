//! The state machine over a real store: committed entries land in the store with their
//! position, a member reopened from its files is where it was, and a snapshot carries every
//! record to another member's store.

use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

use super::state_machine::StateMachine;
use super::Command;
use crate::admin::HostAdmin;
use crate::store::{Op, Replicate, Store};

/// Captures what a store would replicate, applying nothing.
#[derive(Default)]
struct Capture(Mutex<Vec<Vec<Op>>>);

impl Replicate for Capture {
    fn replicate(&self, ops: Vec<Op>) -> Result<(), String> {
        self.0.lock().unwrap().push(ops);
        Ok(())
    }
}

/// The raw writes of cordoning `host`, as a leader's store produces them.
fn cordon_ops(host: &str) -> Vec<Op> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("leader.redb")).unwrap();
    let capture = Arc::new(Capture::default());
    store.replicate_through(capture.clone());
    let admin = HostAdmin {
        host: host.into(),
        cordoned: true,
        ..HostAdmin::default()
    };
    store.save_host_admin(&admin).unwrap();
    // Nothing is applied locally: the log's state machine does that.
    assert!(store.load().unwrap().host_admin.is_empty());
    let mut ops = capture.0.lock().unwrap().clone();
    assert_eq!(ops.len(), 1);
    ops.remove(0)
}

fn entry(index: u64, ops: Vec<Op>) -> Entry<super::TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
        payload: EntryPayload::Normal(Command { ops }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_writes_land_in_the_store_with_their_position_and_travel_in_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.redb");
    {
        let store = Arc::new(Store::open(&path).unwrap());
        let mut sm = StateMachine::open(store.clone()).unwrap();
        sm.apply([entry(1, cordon_ops("web-1")), entry(2, cordon_ops("web-2"))])
            .await
            .unwrap();
        let cordoned: Vec<String> = store
            .load()
            .unwrap()
            .host_admin
            .into_iter()
            .filter(|a| a.cordoned)
            .map(|a| a.host)
            .collect();
        assert_eq!(cordoned, ["web-1", "web-2"]);
    }
    // Reopened from its file, the member is at index 2 with both records.
    let store = Arc::new(Store::open(&path).unwrap());
    let mut sm = StateMachine::open(store.clone()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));

    // A snapshot installed on an empty member gives it the same records and position.
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
    let other_dir = tempfile::tempdir().unwrap();
    let other = Arc::new(Store::open(&other_dir.path().join("new.redb")).unwrap());
    let mut other_sm = StateMachine::open(other.clone()).unwrap();
    other_sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(other.load().unwrap().host_admin.len(), 2);
    let (applied, _) = other_sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_snapshot_is_refused_and_the_store_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("m.redb")).unwrap());
    let mut sm = StateMachine::open(store.clone()).unwrap();
    sm.apply([entry(1, cordon_ops("web-1"))]).await.unwrap();
    let mut snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = snap.snapshot.into_inner();
    bytes[0] = 99; // an unknown format version
    snap.snapshot = Box::new(std::io::Cursor::new(bytes));
    assert!(sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .is_err());
    assert_eq!(store.load().unwrap().host_admin.len(), 1);
}
