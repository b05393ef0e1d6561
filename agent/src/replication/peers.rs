//! Data-plane connections to other agents, one per peer, opened on first use and reused
//! while they stay open; opening one has a deadline. The revocations the coordinator sent
//! are checked at every handshake, both ways, and a connection to or from a host revoked
//! since it was made is closed.

use std::collections::HashMap;
use std::time::Duration;

use understudy_common::protocol::close;
use understudy_common::tls::identity::peer_identity;
use understudy_common::tls::revoked::{RevokedHost, RevokedList};
use understudy_common::workload::Peer;

/// How long connecting to a peer may take.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// What a connection to or from a revoked host is closed with.
pub const REVOKED_REASON: &[u8] = b"this host's certificate was revoked";

/// The agent's connections to its peers' data planes.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    revoked: RevokedList,
    open: tokio::sync::Mutex<HashMap<String, quinn::Connection>>,
}

impl Peers {
    /// Connections made from `endpoint` with `client`'s TLS settings, whose verifiers
    /// consult `revoked`.
    pub fn new(
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        revoked: RevokedList,
    ) -> Self {
        Peers {
            endpoint,
            client,
            revoked,
            open: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The QUIC endpoint (also this agent's data-plane server).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// The revocations this agent knows.
    pub fn revoked(&self) -> &RevokedList {
        &self.revoked
    }

    /// Takes the coordinator's list of revocations: from now on the data plane refuses
    /// those hosts' certificates, and connections to them are closed (connections from
    /// them close themselves, watching the list: [`closes_when_revoked`]).
    pub async fn add_revoked(&self, hosts: Vec<RevokedHost>) {
        self.revoked.merge(hosts);
        let mut open = self.open.lock().await;
        open.retain(|name, conn| {
            if revoked_peer(&self.revoked, conn).is_none() {
                return true;
            }
            tracing::warn!(peer = %name, "closing the data-plane connection to a host whose certificate was revoked");
            conn.close(close::REVOKED.into(), REVOKED_REASON);
            false
        });
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

/// The name of `conn`'s peer if `revoked` refuses its certificate.
fn revoked_peer(revoked: &RevokedList, conn: &quinn::Connection) -> Option<String> {
    let id = peer_identity(conn)?;
    revoked
        .refusing(&id.name, id.not_before_unix)
        .map(|_| id.name)
}

/// Closes `conn` (a connection a peer made to this agent) as soon as `revoked` refuses
/// its peer's certificate; returns when the connection ends either way.
pub async fn closes_when_revoked(revoked: RevokedList, conn: quinn::Connection) {
    let mut changes = revoked.watch();
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Some(peer) = revoked_peer(&revoked, &conn) {
                    tracing::warn!(%peer, "closing a data-plane connection from a host whose certificate was revoked");
                    conn.close(close::REVOKED.into(), REVOKED_REASON);
                    return;
                }
            }
        }
    }
}
