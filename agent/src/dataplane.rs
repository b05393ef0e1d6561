//! The agent's data-plane server: other agents (primaries) connect with mutual TLS and
//! open one stream per epoch they send. A connection from a host revoked since is closed.

use std::sync::Arc;

use understudy_common::tls::identity::peer_name;

use crate::node::Node;
use crate::replication::peers::closes_when_revoked;
use crate::replication::receive;

/// Accepts data-plane connections until the endpoint closes.
pub async fn serve(node: Arc<Node>) {
    while let Some(incoming) = node.peers.endpoint().accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(%remote, "data-plane handshake failed: {e}");
                    return;
                }
            };
            let Some(peer) = peer_name(&conn) else {
                conn.close(
                    understudy_common::protocol::close::REFUSED.into(),
                    b"a client certificate is required",
                );
                return;
            };
            tokio::spawn(closes_when_revoked(
                node.peers.revoked().clone(),
                conn.clone(),
            ));
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(receive::handle(node.clone(), peer.clone(), send, recv));
            }
        });
    }
}
