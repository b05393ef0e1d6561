//! The agent's control connection to the coordinator group: connect, register (with the
//! agent's inventory), heartbeat (with the inventory every few beats), and reconnect with
//! capped backoff whenever the connection is lost.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use understudy_common::frame::{read_frame, write_frame, FrameError};
use understudy_common::protocol::{
    close, AgentMessage, CoordinatorMessage, Heartbeat, Register, MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
};
use understudy_common::tls::revoked::Revocations;
use understudy_common::tls::COORDINATOR_SAN;
use understudy_common::workload::{OrderEnvelope, OrderReply, Report};

use crate::backoff::Backoff;
use crate::hostmetrics::cgroup_memory::MemoryCgroup;
use crate::node::Node;
use crate::telemetry::Sampler;

/// How long to wait for the coordinator to answer a message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a coordinator's handshake may take before the next address is tried (a dead
/// member must not hold the agent long when the group has another).
const CONNECT_LIMIT: Duration = Duration::from_secs(2);
/// Every how many heartbeats the inventory goes along (it also goes with registration).
const INVENTORY_EVERY: u64 = 5;

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
    #[error("this coordinator leads term {term}, but this host has seen term {seen}: refused")]
    StaleTerm { term: u64, seen: u64 },
}

enum Outcome {
    /// Shutdown was requested; the connection was closed cleanly.
    Stopped,
}

/// What a control session needs besides the connection.
#[derive(Debug)]
pub struct Control {
    /// The agent's shared state (orders act on it).
    pub node: Arc<Node>,
    /// Client config for coordinator connections.
    pub client: quinn::ClientConfig,
    /// Data-plane port to announce.
    pub data_port: u16,
    /// Reports waiting to be sent.
    pub reports: mpsc::Receiver<Report>,
    /// This host's failure domain, announced at registration.
    pub zone: Option<String>,
    /// The memory cgroup standing for the host's memory, if configured.
    pub memory: Option<MemoryCgroup>,
    /// Renews this host's certificate when it is due.
    pub renewer: Arc<crate::renew::Renewer>,
}

/// Keeps the agent connected to a coordinator until `stop` turns true.
pub async fn run(
    mut ctl: Control,
    addresses: Vec<SocketAddr>,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let mut sampler = Sampler::new(ctl.memory.clone());
    let mut next = 0;
    let mut redirected: Option<SocketAddr> = None;
    let mut redirects_in_row = 0;
    loop {
        let addr = redirected.take().unwrap_or_else(|| {
            next += 1;
            addresses[(next - 1) % addresses.len()]
        });
        match session(&mut ctl, addr, &mut sampler, &mut backoff, &mut stop).await {
            Ok(Outcome::Stopped) => return,
            Err(e) => {
                if let Some(leader) = leader_named(&e).filter(|_| redirects_in_row < 3) {
                    redirects_in_row += 1;
                    // A group member that does not lead says who does: go there at once.
                    tracing::info!(coordinator = %addr, leader = %leader, "redirected to the group's leader");
                    redirected = Some(leader);
                    continue;
                }
                redirects_in_row = 0;
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

async fn answer(
    recv: &mut quinn::RecvStream,
    limit: Duration,
) -> Result<CoordinatorMessage, SessionError> {
    tokio::time::timeout(limit, read_frame(recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME))
        .await
        .map_err(|_| SessionError::Timeout(limit))?
        .map_err(SessionError::from)
}

/// `(connection's term, newest term seen)` when the connection's is older.
fn stale(node: &Node, conn_term: &std::sync::atomic::AtomicU64) -> Option<(u64, u64)> {
    older_term(
        conn_term.load(Ordering::SeqCst),
        node.term.load(Ordering::SeqCst),
    )
}

/// `(term, seen)` when orders of leader term `term` must be refused by a host that has
/// registered with term `seen`; a single coordinator's term 0 is never refused by a host
/// that has only known single coordinators.
fn older_term(term: u64, seen: u64) -> Option<(u64, u64)> {
    (term < seen).then_some((term, seen))
}

/// The leader's address a group member closed the connection with, if it named one.
fn leader_named(e: &SessionError) -> Option<SocketAddr> {
    let SessionError::Connection(quinn::ConnectionError::ApplicationClosed(c)) = e else {
        return None;
    };
    if c.error_code != quinn::VarInt::from_u32(close::NOT_LEADER) {
        return None;
    }
    std::str::from_utf8(&c.reason).ok()?.parse().ok()
}

/// Waits for `step` (a write, a stream) at most [`ANSWER_TIMEOUT`].
async fn within<T, E: Into<SessionError>>(
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    tokio::time::timeout(ANSWER_TIMEOUT, step)
        .await
        .map_err(|_| SessionError::Timeout(ANSWER_TIMEOUT))?
        .map_err(Into::into)
}

async fn session(
    ctl: &mut Control,
    addr: SocketAddr,
    sampler: &mut Sampler,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, SessionError> {
    let connecting =
        ctl.node
            .peers
            .endpoint()
            .connect_with(ctl.client.clone(), addr, COORDINATOR_SAN)?;
    let conn = tokio::time::timeout(CONNECT_LIMIT, connecting)
        .await
        .map_err(|_| SessionError::Timeout(CONNECT_LIMIT))??;
    let term = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let orders = tokio::spawn(serve_orders(ctl.node.clone(), conn.clone(), term.clone()));
    let revocations = tokio::spawn(serve_revocations(ctl.node.clone(), conn.clone()));
    let result = registered_session(&conn, ctl, sampler, backoff, stop, &term).await;
    orders.abort();
    revocations.abort();
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
    ctl: &mut Control,
    sampler: &mut Sampler,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
    conn_term: &std::sync::atomic::AtomicU64,
) -> Result<Outcome, SessionError> {
    let (mut send, mut recv) = within(conn.open_bi()).await?;
    let register = AgentMessage::Register(Register {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        telemetry: with_health(&ctl.node, sampler.sample()),
        data_port: Some(ctl.data_port),
        inventory: crate::inventory::build(&ctl.node).await,
        zone: ctl.zone.clone(),
    });
    within(write_frame(&mut send, PROTOCOL_VERSION, &register)).await?;
    let interval = match answer(&mut recv, ANSWER_TIMEOUT).await? {
        CoordinatorMessage::Registered {
            host,
            heartbeat_interval_ms,
            term,
        } => {
            let seen = ctl.node.term.fetch_max(term, Ordering::SeqCst);
            if term < seen {
                return Err(SessionError::StaleTerm { term, seen });
            }
            conn_term.store(term, Ordering::SeqCst);
            tracing::info!(coordinator = %conn.remote_address(), term, "registered as {host}");
            Duration::from_millis(heartbeat_interval_ms.clamp(100, 60_000))
        }
        other => return Err(SessionError::Unexpected(format!("{other:?}"))),
    };
    backoff.reset();

    // A coordinator that stops answering heartbeats is given up on within two beats (at
    // least a second), so that a group's leader change costs one quick reconnect.
    let hb_limit = (interval * 2).clamp(Duration::from_secs(1), ANSWER_TIMEOUT);
    // The first beat goes at once: its answer renews the leases, which a leader change may
    // have left close to running out.
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        let report = tokio::select! {
            _ = tick.tick() => None,
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(Outcome::Stopped);
                }
                continue;
            }
            Some(report) = ctl.reports.recv() => Some(report),
        };
        if let Some(report) = report {
            send_report(conn, &report).await?;
            continue;
        }
        if ctl.renewer.claim_if_due() {
            tokio::spawn(ctl.renewer.clone().renew(conn.clone()));
        }
        seq += 1;
        let inventory = if seq.is_multiple_of(INVENTORY_EVERY) {
            Some(crate::inventory::build(&ctl.node).await)
        } else {
            None
        };
        let hb = AgentMessage::Heartbeat(Heartbeat {
            seq,
            telemetry: with_health(&ctl.node, sampler.sample()),
            inventory,
        });
        within(write_frame(&mut send, PROTOCOL_VERSION, &hb)).await?;
        match answer(&mut recv, hb_limit).await? {
            CoordinatorMessage::HeartbeatAck { seq: acked, leases } if acked == seq => {
                let (term, seen) = (
                    conn_term.load(Ordering::SeqCst),
                    ctl.node.term.load(Ordering::SeqCst),
                );
                if term < seen {
                    return Err(SessionError::StaleTerm { term, seen });
                }
                // Off the heartbeat's path: a slow supervisor must not delay the next beat.
                crate::lease::renew(&ctl.node, leases);
            }
            other => return Err(SessionError::Unexpected(format!("{other:?}"))),
        }
    }
}

async fn send_report(conn: &quinn::Connection, report: &Report) -> Result<(), SessionError> {
    let mut s = within(conn.open_uni()).await?;
    within(write_frame(&mut s, PROTOCOL_VERSION, report)).await?;
    let _ = s.finish();
    Ok(())
}

/// Serves the coordinator's orders: one bidirectional stream per order.
async fn serve_orders(
    node: Arc<Node>,
    conn: quinn::Connection,
    conn_term: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let node = node.clone();
        let conn_term = conn_term.clone();
        tokio::spawn(async move {
            let order = tokio::time::timeout(
                ANSWER_TIMEOUT,
                read_frame::<_, OrderEnvelope>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME),
            )
            .await
            .map(|read| {
                read.map(|OrderEnvelope { order, data_key }| {
                    // Kept for the order's workload only (checked against the order by
                    // `orders::handle` before anything else uses it).
                    if let (Some(k), false) = (data_key, order.problem().is_some()) {
                        node.set_key(order.target().0, k.0);
                    }
                    order
                })
            });
            let reply = match order {
                Err(_) => OrderReply::Failed(format!("no whole order within {ANSWER_TIMEOUT:?}")),
                Ok(Ok(order)) if stale(&node, &conn_term).is_some() => {
                    let (term, seen) = stale(&node, &conn_term).unwrap_or_default();
                    tracing::warn!(
                        order = order.kind(),
                        term,
                        seen,
                        "refused an order from an older coordinator term"
                    );
                    OrderReply::Failed(format!(
                        "{} order of leader term {term} refused: this host has seen term {seen}",
                        order.kind()
                    ))
                }
                Ok(Ok(order)) => {
                    let kind = order.kind();
                    let reply = crate::orders::handle(&node, order).await;
                    crate::faults::before_reply(kind).await;
                    reply
                }
                Ok(Err(e)) => OrderReply::Failed(format!("unreadable order: {e}")),
            };
            if let Err(e) = within(write_frame(&mut send, PROTOCOL_VERSION, &reply)).await {
                tracing::warn!("could not answer an order: {e}");
            }
            let _ = send.finish();
        });
    }
}

/// Takes the revocations the coordinator sends, each list on a unidirectional stream of
/// its own: the data plane refuses those hosts from then on and closes their connections.
async fn serve_revocations(node: Arc<Node>, conn: quinn::Connection) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let list = tokio::time::timeout(
            ANSWER_TIMEOUT,
            read_frame::<_, Revocations>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME),
        )
        .await;
        match list {
            Ok(Ok(list)) => {
                let hosts: Vec<&str> = list.hosts.iter().map(|h| h.host.as_str()).collect();
                if !hosts.is_empty() {
                    tracing::info!(
                        ?hosts,
                        "revoked hosts' certificates are refused by the data plane"
                    );
                }
                node.peers.add_revoked(list.hosts).await;
            }
            Ok(Err(e)) => tracing::warn!("unreadable list of revocations: {e}"),
            Err(_) => tracing::warn!("no whole list of revocations within {ANSWER_TIMEOUT:?}"),
        }
    }
}

/// Adds the newest health assessment and probe reports to a telemetry sample.
fn with_health(
    node: &crate::node::Node,
    mut t: understudy_common::telemetry::TelemetrySummary,
) -> understudy_common::telemetry::TelemetrySummary {
    t.health = node.health();
    t.probes = node.probes();
    t
}

#[cfg(test)]
mod term_tests {
    use super::older_term;

    #[test]
    fn orders_of_an_older_leader_term_are_refused_and_of_the_same_or_newer_kept() {
        assert_eq!(older_term(3, 4), Some((3, 4)));
        assert_eq!(older_term(4, 4), None);
        assert_eq!(older_term(5, 4), None);
        assert_eq!(older_term(0, 0), None);
    }
}
