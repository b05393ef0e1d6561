//! openraft's own storage test suite over the redb log store (each case on a fresh file).

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::TypeConfig;

struct Fresh;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
        let store = crate::store::Store::open(&dir.path().join("store.redb")).unwrap();
        let sm = StateMachine::open(std::sync::Arc::new(store)).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_redb_log_store_passes_openrafts_storage_suite() {
    Suite::test_all(Fresh).unwrap();
}

#[tokio::test]
async fn the_vote_and_the_log_survive_reopening_the_file() {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, LogId, Vote};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let vote = Vote::new_committed(3, 1);
    {
        let mut log = LogStore::open(&path).unwrap();
        log.save_vote(&vote).await.unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(2, 1), 7))
            .await
            .unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(7));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(7));
}
