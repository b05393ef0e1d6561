//! Control-plane messages between an agent and the coordinator, and the QUIC close codes
//! both sides use.
//!
//! The agent opens one bidirectional stream per connection and speaks first: `Register`,
//! then a `Heartbeat` every interval; the coordinator answers each. Registration and every
//! few heartbeats carry the agent's inventory (what it really runs and keeps), which the
//! coordinator reconciles its records with. Who the agent is comes
//! from its certificate, never from these messages.

use serde::{Deserialize, Serialize};

use crate::inventory::Inventory;
use crate::telemetry::TelemetrySummary;

/// Version of the control protocol this build speaks.
pub const PROTOCOL_VERSION: u16 = 15;
/// Largest control-plane payload either side accepts.
pub const MAX_CONTROL_FRAME: u32 = 1024 * 1024;
/// ALPN protocol name for the agent ⇄ coordinator control plane.
pub const CONTROL_ALPN: &[u8] = b"understudy-control/1";

/// Sent by an agent to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// First message on a new connection.
    Register(Register),
    /// Periodic liveness and telemetry.
    Heartbeat(Heartbeat),
}

/// An agent announcing itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The agent's build version, for operators.
    pub agent_version: String,
    /// Telemetry at the time of registration.
    pub telemetry: TelemetrySummary,
    /// UDP port of the agent's data plane (where shadows receive epochs), if it serves one.
    pub data_port: Option<u16>,
    /// What the agent holds right now.
    pub inventory: Inventory,
    /// The host's failure domain (`[agent] zone`), if configured.
    pub zone: Option<String>,
}

/// A heartbeat with fresh telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases by one per heartbeat on a connection.
    pub seq: u64,
    /// The latest telemetry sample.
    pub telemetry: TelemetrySummary,
    /// What the agent holds right now, on every few heartbeats.
    pub inventory: Option<Inventory>,
}

/// Sent by the coordinator to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// Registration accepted under `host`, the name in the agent's certificate.
    Registered {
        /// The identity the coordinator recorded.
        host: String,
        /// How often the coordinator expects heartbeats, milliseconds.
        heartbeat_interval_ms: u64,
        /// The leader's term in a coordinator group (0: a single coordinator). Orders
        /// and leases on this connection are of this term; an agent that has registered
        /// with a newer term refuses them.
        term: u64,
    },
    /// A heartbeat was recorded.
    HeartbeatAck {
        /// The heartbeat's sequence number.
        seq: u64,
        /// The leases of the workloads this host is the primary of, renewed from now.
        leases: Vec<Lease>,
    },
}

/// Sent by an agent on a bidirectional stream of its own (besides the control stream) when
/// its certificate is two thirds through its lifetime: a certificate request for a new key
/// made on the host. The coordinator signs it for the name and role of the certificate the
/// connection was made with, and answers with a [`RenewAnswer`] on the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// PEM certificate request.
    pub csr: String,
}

/// The coordinator's answer to a [`RenewRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenewAnswer {
    /// The new certificate (PEM).
    Renewed(String),
    /// Why not (no CA key on this coordinator, an unreadable request).
    Refused(String),
}

/// A workload's lease: this host may run it, under this generation, for `valid_ms` from
/// when the agent receives it (`None`: without a bound — its failover is manual, nothing
/// will start another copy by itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The workload.
    pub workload: String,
    /// The generation the lease is for.
    pub generation: u64,
    /// How long it holds, milliseconds.
    pub valid_ms: Option<u64>,
    /// The workload's data key, which the primary seals its epochs with (filled in as the
    /// lease is sent; a restarted agent has it again from its first heartbeat's answer).
    pub data_key: Option<crate::seal::KeyBytes>,
}

/// QUIC application close codes used on every understudy connection.
pub mod close {
    /// Orderly shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// The peer sent something malformed or out of order.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The peer speaks another protocol version.
    pub const UNSUPPORTED_VERSION: u32 = 2;
    /// The peer's identity was refused (no certificate, wrong role).
    pub const REFUSED: u32 = 3;
    /// A newer connection from the same host replaced this one.
    pub const REPLACED: u32 = 4;
    /// The peer stopped sending heartbeats.
    pub const TIMED_OUT: u32 = 5;
    /// This coordinator is not the group's leader; the close reason is the leader's
    /// control-plane address (`ip:port`), or empty while there is none.
    pub const NOT_LEADER: u32 = 6;
    /// The peer's certificate was revoked (`understudy host revoke`).
    pub const REVOKED: u32 = 7;
}
