//! The agent's control connection to the coordinator group: connect, register, heartbeat,
//! and reconnect with capped backoff whenever the connection is lost.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use understudy_common::frame::{read_frame, write_frame, FrameError};
use understudy_common::protocol::{
    close, AgentMessage, CoordinatorMessage, Heartbeat, Register, MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
};
use understudy_common::tls::COORDINATOR_SAN;

use crate::backoff::Backoff;
use crate::telemetry::Sampler;

/// How long to wait for the coordinator to answer a message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("coordinator did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from coordinator: {0}")]
    Unexpected(String),
}

enum Outcome {
    /// Shutdown was requested; the connection was closed cleanly.
    Stopped,
}

/// Keeps the agent connected to a coordinator until `stop` turns true.
pub async fn run(
    endpoint: quinn::Endpoint,
    addresses: Vec<SocketAddr>,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let mut sampler = Sampler::new();
    let mut next = 0;
    loop {
        let addr = addresses[next % addresses.len()];
        next += 1;
        match session(&endpoint, addr, &mut sampler, &mut backoff, &mut stop).await {
            Ok(Outcome::Stopped) => return,
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(coordinator = %addr, "{e}; retrying in {wait:?}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

async fn answer(recv: &mut quinn::RecvStream) -> Result<CoordinatorMessage, SessionError> {
    tokio::time::timeout(
        ANSWER_TIMEOUT,
        read_frame(recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME),
    )
    .await
    .map_err(|_| SessionError::Timeout(ANSWER_TIMEOUT))?
    .map_err(SessionError::from)
}

async fn session(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    sampler: &mut Sampler,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, SessionError> {
    let conn = endpoint.connect(addr, COORDINATOR_SAN)?.await?;
    let result = registered_session(&conn, sampler, backoff, stop).await;
    match &result {
        Ok(Outcome::Stopped) => conn.close(close::SHUTDOWN.into(), b"agent shutting down"),
        Err(SessionError::Frame(FrameError::Io(_))) | Err(SessionError::Connection(_)) => {
            // The connection itself failed; its close reason says why.
            if let Some(reason) = conn.close_reason() {
                return Err(SessionError::Connection(reason));
            }
        }
        Err(e) => {
            conn.close(close::PROTOCOL_ERROR.into(), e.to_string().as_bytes());
        }
    }
    result
}

async fn registered_session(
    conn: &quinn::Connection,
    sampler: &mut Sampler,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, SessionError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let register = AgentMessage::Register(Register {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        telemetry: sampler.sample(),
        data_port: None,
    });
    write_frame(&mut send, PROTOCOL_VERSION, &register).await?;
    let interval = match answer(&mut recv).await? {
        CoordinatorMessage::Registered {
            host,
            heartbeat_interval_ms,
        } => {
            tracing::info!(coordinator = %conn.remote_address(), "registered as {host}");
            Duration::from_millis(heartbeat_interval_ms.clamp(100, 60_000))
        }
        other => return Err(SessionError::Unexpected(format!("{other:?}"))),
    };
    backoff.reset();

    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(Outcome::Stopped),
        }
        seq += 1;
        let hb = AgentMessage::Heartbeat(Heartbeat {
            seq,
            telemetry: sampler.sample(),
        });
        write_frame(&mut send, PROTOCOL_VERSION, &hb).await?;
        match answer(&mut recv).await? {
            CoordinatorMessage::HeartbeatAck { seq: acked } if acked == seq => {}
            other => return Err(SessionError::Unexpected(format!("{other:?}"))),
        }
    }
}
