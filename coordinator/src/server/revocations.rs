//! Telling agents which hosts' certificates are revoked, so that their data planes refuse
//! those hosts too: the whole list on a unidirectional stream, to each agent when it
//! registers and to every connected agent after a revocation.

use std::sync::Arc;
use std::time::Duration;

use understudy_common::frame::write_frame;
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::tls::revoked::Revocations;

use super::Shared;

/// How long sending the list to one agent may take.
const SEND_LIMIT: Duration = Duration::from_secs(10);

/// Sends every revocation to the agent on `conn`, in the background; nothing when there
/// is none (an agent's list only grows, so an empty one would tell it nothing).
pub fn tell(shared: &Shared, conn: quinn::Connection) {
    let list = list(shared);
    if !list.hosts.is_empty() {
        tokio::spawn(async move { send(&conn, &list).await });
    }
}

/// Sends every revocation to every connected agent, in the background.
pub fn tell_all(shared: &Arc<Shared>) {
    let list = list(shared);
    for conn in shared.connections() {
        let list = list.clone();
        tokio::spawn(async move { send(&conn, &list).await });
    }
}

fn list(shared: &Shared) -> Revocations {
    Revocations {
        hosts: shared
            .revocations()
            .iter()
            .map(|r| r.for_agents())
            .collect(),
    }
}

async fn send(conn: &quinn::Connection, list: &Revocations) {
    let sent = tokio::time::timeout(SEND_LIMIT, async {
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        write_frame(&mut s, PROTOCOL_VERSION, list)
            .await
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())
    })
    .await;
    let failed = match sent {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => format!("not sent within {SEND_LIMIT:?}"),
    };
    tracing::warn!(remote = %conn.remote_address(), "could not send the revocations: {failed}");
}
