//! The coordinator group's replicated log: openraft 0.9 with its log and vote kept in a
//! redb file ([`log_store`]), the coordinator's store as its state machine
//! ([`state_machine`]), QUIC with mutual TLS between members ([`network`]), and the running
//! member ([`node`]).
//!
//! What goes through the log is the store's writes, as raw records ([`crate::store::Op`]):
//! workloads and their switchovers and failovers, host records on registration and loss,
//! what operators said about hosts, and events. Heartbeats and telemetry do not.

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;

#[cfg(test)]
mod log_store_tests;
#[cfg(test)]
mod state_machine_tests;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::store::Op;

/// One replicated write: the raw records of one store transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The writes, applied together.
    pub ops: Vec<Op>,
}

/// A member of the group: where it can be reached. A witness has no control-plane or HTTP
/// address (it serves neither).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `ip:port` of its peer (Raft) QUIC endpoint.
    pub raft: String,
    /// `ip:port` where agents reach it, for a coordinator.
    pub quic: Option<String>,
    /// `ip:port` of its HTTP API, for a coordinator.
    pub http: Option<String>,
}

impl Member {
    /// "witness" or "coordinator".
    pub fn kind(&self) -> &'static str {
        if self.quic.is_none() {
            "witness"
        } else {
            "coordinator"
        }
    }
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

/// The group's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
