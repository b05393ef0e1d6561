//! Cluster identity and mutual TLS.
//!
//! Every certificate is issued by the cluster CA and names one host (subject CN and a DNS
//! SAN) and one role (subject OU). A peer's identity is read from its verified certificate;
//! nothing a peer says in a message can change it. Coordinators also carry the shared name
//! [`COORDINATOR_SAN`], so agents can verify any member of the coordinator group without
//! knowing its host name.

pub mod ca;
pub mod endpoint;
pub mod files;
pub mod https;
pub mod identity;
pub mod verify;

pub use identity::{PeerIdentity, Role};
pub use verify::Refusal;

/// DNS name every coordinator certificate carries and agents verify.
pub const COORDINATOR_SAN: &str = "coordinator.understudy";
