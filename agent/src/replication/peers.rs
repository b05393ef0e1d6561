//! Data-plane connections to other agents, one per peer, opened on first use and reused
//! while they stay open; opening one has a deadline.

use std::collections::HashMap;
use std::time::Duration;

use understudy_common::workload::Peer;

/// How long connecting to a peer may take.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The agent's connections to its peers' data planes.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    open: tokio::sync::Mutex<HashMap<String, quinn::Connection>>,
}

impl Peers {
    /// Connections made from `endpoint` with `client`'s TLS settings.
    pub fn new(endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Self {
        Peers {
            endpoint,
            client,
            open: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The QUIC endpoint (also this agent's data-plane server).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// A live connection to `peer`, reusing an open one.
    pub async fn connect(&self, peer: &Peer) -> Result<quinn::Connection, String> {
        let mut open = self.open.lock().await;
        if let Some(c) = open.get(&peer.name) {
            if c.close_reason().is_none() && c.remote_address() == peer.addr {
                return Ok(c.clone());
            }
        }
        let conn = self
            .endpoint
            .connect_with(self.client.clone(), peer.addr, &peer.name)
            .map_err(|e| format!("shadow {} at {}: {e}", peer.name, peer.addr))?;
        let conn = tokio::time::timeout(CONNECT_LIMIT, conn)
            .await
            .map_err(|_| format!("shadow {} at {}: connect timed out", peer.name, peer.addr))?
            .map_err(|e| format!("shadow {} at {}: {e}", peer.name, peer.addr))?;
        open.insert(peer.name.clone(), conn.clone());
        Ok(conn)
    }
}
