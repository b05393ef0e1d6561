//! The coordinator group's replicated log (issue 18, in progress): openraft 0.9 with its
//! log and vote kept durably in redb. Nothing uses it yet.

pub mod log_store;
pub mod state_machine;

#[cfg(test)]
mod log_store_tests;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A change to the coordinator's records, replicated through the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// An opaque record write (to be replaced by the store's write operations).
    Put {
        /// The record's key.
        key: String,
        /// Its encoded value.
        value: Vec<u8>,
    },
}

/// A member of the group: where its QUIC endpoint listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port`.
    pub addr: String,
}

openraft::declare_raft_types!(
    /// The group's Raft types.
    pub TypeConfig:
        D = Command,
        R = (),
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);
