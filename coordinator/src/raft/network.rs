//! Raft RPCs between members over QUIC with mutual TLS: each member's peer endpoint accepts
//! only coordinator-role certificates (the witness holds one too), and every RPC is one
//! bidirectional stream carrying one framed request and one framed answer, bounded by the
//! deadline openraft gives it. `Hello` asks a member who it is, so membership commands need
//! only its address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::tls::COORDINATOR_SAN;

use super::{Member, Raft, TypeConfig};

/// ALPN protocol name of the peer plane.
pub const PEER_ALPN: &[u8] = b"understudy-raft/1";
/// Version of the peer protocol.
pub const PEER_VERSION: u16 = 1;
/// Largest peer frame either side accepts (openraft sends snapshots in smaller chunks).
pub const MAX_PEER_FRAME: u32 = 32 << 20;
/// The shortest deadline an RPC is given: openraft bounds AppendEntries by the heartbeat
/// interval, which a loaded machine can miss without anything being wrong; a missed
/// deadline drops the connection, so it must mean the member is really not answering.
pub const MIN_DEADLINE: Duration = Duration::from_millis(1000);
/// How long `Hello` may take.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// A request from one member to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Who are you?
    Hello,
    /// Raft AppendEntries.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<u64>),
    /// Raft InstallSnapshot (one chunk).
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The member's id and addresses.
    Hello {
        /// Its node id.
        id: u64,
        /// Its addresses.
        member: Member,
    },
    /// AppendEntries' answer.
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// RequestVote's answer.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// InstallSnapshot's answer.
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made.
    #[error("cannot reach member at {addr}: {reason}")]
    Unreachable {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The call did not finish within its deadline.
    #[error("member at {addr} did not answer within {limit:?}")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// The deadline.
        limit: Duration,
    },
    /// The exchange failed part way.
    #[error("member at {addr}: {reason}")]
    Exchange {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// One member's connection, shared by every client to it: openraft makes a new client
/// after each failure, and a handshake may take longer than one heartbeat's deadline, so
/// the attempt belongs to the pool, not to the call that started it.
#[derive(Debug)]
pub struct Slot {
    conn: tokio::sync::watch::Sender<Option<quinn::Connection>>,
    connecting: bool,
}

/// Connections to members by address.
pub type Pool = Arc<std::sync::Mutex<std::collections::HashMap<SocketAddr, Slot>>>;

/// A client to one member.
#[derive(Debug)]
pub struct PeerClient {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: Option<SocketAddr>,
    pool: Pool,
}

fn alive(c: &Option<quinn::Connection>) -> Option<quinn::Connection> {
    c.as_ref().filter(|c| c.close_reason().is_none()).cloned()
}

impl PeerClient {
    /// A client for the member at `addr`, sharing connections through `pool`.
    pub fn new(
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        addr: SocketAddr,
        pool: Pool,
    ) -> Self {
        PeerClient {
            endpoint,
            config,
            addr: Some(addr),
            pool,
        }
    }

    /// The live connection to `addr`, starting an attempt if none is under way and
    /// waiting for it (the caller bounds the wait).
    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, PeerError> {
        let mut rx = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let slot = pool.entry(addr).or_insert_with(|| Slot {
                conn: tokio::sync::watch::channel(None).0,
                connecting: false,
            });
            if let Some(c) = alive(&slot.conn.borrow()) {
                return Ok(c);
            }
            if !slot.connecting {
                let connecting = self
                    .endpoint
                    .connect_with(self.config.clone(), addr, COORDINATOR_SAN)
                    .map_err(|e| PeerError::Unreachable {
                        addr,
                        reason: e.to_string(),
                    })?;
                slot.connecting = true;
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    let r = connecting.await;
                    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = pool.get_mut(&addr) {
                        slot.connecting = false;
                        match r {
                            Ok(c) => {
                                slot.conn.send_replace(Some(c));
                            }
                            Err(e) => tracing::debug!(%addr, "peer connection failed: {e}"),
                        }
                    }
                });
            }
            slot.conn.subscribe()
        };
        loop {
            if let Some(c) = alive(&rx.borrow_and_update()) {
                return Ok(c);
            }
            rx.changed().await.map_err(|_| PeerError::Unreachable {
                addr,
                reason: "connection pool closed".into(),
            })?;
        }
    }

    /// Sends `req` and waits for the answer, at most `limit` in all.
    pub async fn call(
        &self,
        req: &PeerRequest,
        limit: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let limit = limit.max(MIN_DEADLINE);
        let Some(addr) = self.addr else {
            return Err(PeerError::Unreachable {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: "the member's raft address is not an ip:port".into(),
            });
        };
        let connected = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .is_some_and(|s| alive(&s.conn.borrow()).is_some());
        let attempt = async {
            let conn = self.connection(addr).await?;
            let exchange = |e: String| PeerError::Exchange { addr, reason: e };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| exchange(e.to_string()))?;
            write_frame(&mut send, PEER_VERSION, req)
                .await
                .map_err(|e| exchange(e.to_string()))?;
            let _ = send.finish();
            read_frame(&mut recv, PEER_VERSION, MAX_PEER_FRAME)
                .await
                .map_err(|e| exchange(e.to_string()))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            // Still connecting: the member is not reachable yet (openraft backs off).
            Err(_) if !connected => Err(PeerError::Unreachable {
                addr,
                reason: format!("no connection within {limit:?}"),
            }),
            Err(_) => {
                // A member that stopped answering on an established connection may have
                // restarted (its old connection lingers until the idle timeout): start
                // afresh on the next call.
                if let Some(slot) = self
                    .pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&addr)
                {
                    if let Some(c) = slot.conn.send_replace(None) {
                        c.close(0u32.into(), b"no answer within the deadline");
                    }
                }
                Err(PeerError::Timeout { addr, limit })
            }
        }
    }
}

/// Makes [`PeerClient`]s for openraft.
#[derive(Debug, Clone)]
pub struct Network {
    /// The local QUIC endpoint (the peer listener, used as a client too).
    pub endpoint: quinn::Endpoint,
    /// Client TLS (coordinator certificate, expects coordinators).
    pub config: quinn::ClientConfig,
    /// Connections to the members.
    pub pool: Pool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: u64, node: &Member) -> PeerClient {
        PeerClient {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            addr: node.raft.parse().ok(),
            pool: self.pool.clone(),
        }
    }
}

fn rpc_err<E: std::error::Error>(e: PeerError) -> RPCError<u64, Member, RaftError<u64, E>> {
    match e {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<u64, Member, RaftError<u64, E>> {
    let e = std::io::Error::other(format!("unexpected answer to {what}"));
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self
            .call(&PeerRequest::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Append(Ok(r))) => Ok(r),
            Ok(PeerResponse::Append(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(0, e))),
            Ok(_) => Err(unexpected("append")),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(&PeerRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Snapshot(Ok(r))) => Ok(r),
            Ok(PeerResponse::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(0, e)))
            }
            Ok(_) => Err(unexpected("install_snapshot")),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(Ok(r))) => Ok(r),
            Ok(PeerResponse::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(0, e))),
            Ok(_) => Err(unexpected("vote")),
            Err(e) => Err(rpc_err(e)),
        }
    }
}

/// When something last happened here, if it has.
pub type Seen = Arc<std::sync::Mutex<Option<std::time::Instant>>>;
/// When this member last accepted entries or a heartbeat from a leader.
pub type LeaderContact = Seen;

/// Notes the time in `seen`.
fn mark(seen: &Seen) {
    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
}

/// Serves peer RPCs arriving at `endpoint` to `raft` until the endpoint closes, noting in
/// `contact` each time a leader's AppendEntries is accepted, and in `behind` each time a
/// candidate's vote request is refused because its log is behind this member's.
pub async fn serve(
    endpoint: quinn::Endpoint,
    raft: Raft,
    id: u64,
    me: Member,
    contact: LeaderContact,
    behind: Seen,
) {
    let me = Arc::new(me);
    while let Some(incoming) = endpoint.accept().await {
        let raft = raft.clone();
        let me = me.clone();
        let contact = contact.clone();
        let behind = behind.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let raft = raft.clone();
                let me = me.clone();
                let contact = contact.clone();
                let behind = behind.clone();
                tokio::spawn(async move {
                    let req: PeerRequest =
                        match read_frame(&mut recv, PEER_VERSION, MAX_PEER_FRAME).await {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!("bad peer request: {e}");
                                return;
                            }
                        };
                    let resp = match req {
                        PeerRequest::Hello => PeerResponse::Hello {
                            id,
                            member: (*me).clone(),
                        },
                        PeerRequest::Append(r) => {
                            let from = r.vote.leader_id().voted_for().unwrap_or_default();
                            if crate::faults::refuse_entries(from, !r.entries.is_empty()) {
                                return;
                            }
                            let answer = raft.append_entries(r).await;
                            if matches!(
                                answer,
                                Ok(AppendEntriesResponse::Success
                                    | AppendEntriesResponse::PartialSuccess(_)
                                    | AppendEntriesResponse::Conflict)
                            ) {
                                mark(&contact);
                            }
                            PeerResponse::Append(answer)
                        }
                        PeerRequest::Vote(r) => {
                            let theirs = r.last_log_id;
                            let answer = raft.vote(r).await;
                            if let Ok(v) = &answer {
                                if !v.vote_granted && v.last_log_id > theirs {
                                    mark(&behind);
                                }
                            }
                            PeerResponse::Vote(answer)
                        }
                        PeerRequest::Snapshot(r) => {
                            PeerResponse::Snapshot(raft.install_snapshot(r).await)
                        }
                    };
                    if write_frame(&mut send, PEER_VERSION, &resp).await.is_ok() {
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}
