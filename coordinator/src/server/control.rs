//! One agent's control connection: identity check, registration, heartbeats.

use std::sync::Arc;
use std::time::Duration;

use understudy_common::frame::{read_frame, write_frame, FrameError};
use understudy_common::protocol::{
    close, AgentMessage, CoordinatorMessage, RenewAnswer, RenewRequest, MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
};
use understudy_common::tls::identity::peer_identity;
use understudy_common::tls::Refusal;
use understudy_common::tls::Role;

use understudy_common::workload::Report;

use super::{reconciler, workloads, Shared};

/// How long a new connection may take to open its stream and register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("no stream opened within {0:?}")]
    Timeout(Duration),
}

fn kind(msg: &AgentMessage) -> &'static str {
    match msg {
        AgentMessage::Register(_) => "Register",
        AgentMessage::Heartbeat(_) => "Heartbeat",
    }
}

/// Accepts one incoming connection and serves it until it ends.
pub async fn handle(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Certificate refusals were already logged and counted by the verifier.
            tracing::info!(%remote, "handshake failed: {e}");
            return;
        }
    };
    serve_connection(shared, conn).await;
}

/// Serves one established connection until it ends.
pub async fn serve_connection(shared: Arc<Shared>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some(id) = peer_identity(&conn) else {
        shared.metrics.refused(Refusal::NoCertificate);
        tracing::warn!(%remote, "refused connection: no client certificate");
        conn.close(close::REFUSED.into(), b"a client certificate is required");
        return;
    };
    let name = id.name;
    if let Some(r) = shared.refused_by_revocation(&name, id.not_before_unix) {
        tracing::warn!(host = %name, %remote, by = %r.by, "refused connection: certificate revoked");
        conn.close(
            close::REVOKED.into(),
            b"this host's certificate was revoked; issue it a new one",
        );
        return;
    }
    let mut conn_id = None;
    let result = session(&shared, &conn, &name, &mut conn_id).await;
    if let Err(e) = &result {
        refuse(&shared, &conn, &name, e);
    }
    if let Some(id) = conn_id {
        // Closed from this side (a leader stepping down, a refusal): no event.
        let why = match conn.close_reason() {
            Some(quinn::ConnectionError::LocallyClosed) => None,
            Some(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code == quinn::VarInt::from_u32(close::SHUTDOWN) =>
            {
                Some("stopped (it said it was shutting down)")
            }
            _ => Some("lost its connection"),
        };
        shared.disconnected(&name, id, why);
    }
}

async fn session(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    name: &str,
    conn_id: &mut Option<u64>,
) -> Result<(), SessionError> {
    let (mut send, mut recv) = tokio::time::timeout(REGISTER_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| SessionError::Timeout(REGISTER_TIMEOUT))??;
    let reg = match read_frame(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME).await? {
        AgentMessage::Register(reg) => reg,
        other => {
            return Err(SessionError::Unexpected {
                expected: "Register",
                got: kind(&other),
            })
        }
    };
    let id = shared.register(
        conn,
        name,
        reg.agent_version.clone(),
        reg.telemetry,
        reg.data_port,
        reg.zone.clone(),
    );
    *conn_id = Some(id);
    tokio::spawn(read_reports(shared.clone(), conn.clone(), name.to_owned()));
    tokio::spawn(serve_renewals(
        shared.clone(),
        conn.clone(),
        name.to_owned(),
    ));
    // What the host really holds: the records follow it (a restarted agent has also
    // forgotten which workloads it shadows, and is told again).
    reconciler::on_inventory(shared, name, &reg.inventory);
    tracing::info!(host = name, remote = %conn.remote_address(), version = %reg.agent_version, "agent registered");
    let hb_ms = u64::try_from(shared.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    let reply = CoordinatorMessage::Registered {
        host: name.to_owned(),
        heartbeat_interval_ms: hb_ms,
        term: shared.term(),
    };
    write_frame(&mut send, PROTOCOL_VERSION, &reply).await?;
    super::revocations::tell(shared, conn.clone());

    loop {
        let msg = match read_frame(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME).await {
            Ok(m) => m,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match msg {
            AgentMessage::Heartbeat(hb) => {
                if !shared.heartbeat(name, id, hb.telemetry) {
                    // Replaced by a newer connection or timed out: this one is finished.
                    return Ok(());
                }
                if let Some(inventory) = &hb.inventory {
                    reconciler::on_inventory(shared, name, inventory);
                }
                let ack = CoordinatorMessage::HeartbeatAck {
                    seq: hb.seq,
                    leases: shared.leases_for(name),
                };
                write_frame(&mut send, PROTOCOL_VERSION, &ack).await?;
            }
            other => {
                return Err(SessionError::Unexpected {
                    expected: "Heartbeat",
                    got: kind(&other),
                })
            }
        }
    }
}

/// Reads the agent's reports: one frame per unidirectional stream.
async fn read_reports(shared: Arc<Shared>, conn: quinn::Connection, name: String) {
    while let Ok(mut recv) = conn.accept_uni().await {
        match read_frame::<_, Report>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME).await {
            Ok(report) => workloads::on_report(&shared, &name, report),
            Err(e) => tracing::warn!(host = %name, "unreadable report: {e}"),
        }
    }
}

/// Answers the agent's certificate renewals: one bidirectional stream each, opened by the
/// agent after the control stream.
async fn serve_renewals(shared: Arc<Shared>, conn: quinn::Connection, name: String) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let read = tokio::time::timeout(
            REGISTER_TIMEOUT,
            read_frame::<_, RenewRequest>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME),
        )
        .await;
        let answer = match read {
            Ok(Ok(req)) => match super::join::renew(&shared, &name, Role::Agent, &req.csr) {
                Ok((cert, _)) => RenewAnswer::Renewed(cert),
                Err(why) => {
                    let why = why.to_string();
                    tracing::warn!(host = %name, "refused a certificate renewal: {why}");
                    RenewAnswer::Refused(why)
                }
            },
            Ok(Err(e)) => RenewAnswer::Refused(format!("unreadable renewal request: {e}")),
            Err(_) => RenewAnswer::Refused("no whole renewal request in time".into()),
        };
        let _ = write_frame(&mut send, PROTOCOL_VERSION, &answer).await;
        let _ = send.finish();
    }
}

/// Closes the connection with a reason the peer can read whatever protocol version it
/// speaks: QUIC close reasons are outside our framing.
fn refuse(shared: &Shared, conn: &quinn::Connection, name: &str, err: &SessionError) {
    let code = match err {
        SessionError::Frame(FrameError::Io(_) | FrameError::Closed)
        | SessionError::Connection(_) => {
            tracing::info!(host = name, "connection ended: {err}");
            return;
        }
        SessionError::Frame(FrameError::UnsupportedVersion { .. }) => close::UNSUPPORTED_VERSION,
        _ => close::PROTOCOL_ERROR,
    };
    shared.metrics.protocol_errors.inc();
    tracing::warn!(host = name, remote = %conn.remote_address(), "closing connection: {err}");
    let reason = err.to_string();
    conn.close(code.into(), &reason.as_bytes()[..reason.len().min(512)]);
}
