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

/// A client to one member, connecting when first needed and again after the connection
/// closed. A connection attempt outlives the call that started it (a handshake may take
/// longer than one heartbeat's deadline), and the next call picks it up.
#[derive(Debug)]
pub struct PeerClient {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: Option<SocketAddr>,
    conn: Option<quinn::Connection>,
    connecting: Option<tokio::task::JoinHandle<Result<quinn::Connection, String>>>,
}

impl PeerClient {
    /// A client for the member at `addr`.
    pub fn new(endpoint: quinn::Endpoint, config: quinn::ClientConfig, addr: SocketAddr) -> Self {
        PeerClient {
            endpoint,
            config,
            addr: Some(addr),
            conn: None,
            connecting: None,
        }
    }

    async fn connection(&mut self, addr: SocketAddr) -> Result<quinn::Connection, PeerError> {
        if let Some(c) = &self.conn {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
            self.conn = None;
        }
        let unreachable = |reason: String| PeerError::Unreachable { addr, reason };
        if self.connecting.is_none() {
            let connecting = self
                .endpoint
                .connect_with(self.config.clone(), addr, COORDINATOR_SAN)
                .map_err(|e| unreachable(e.to_string()))?;
            self.connecting = Some(tokio::spawn(async move {
                connecting.await.map_err(|e| e.to_string())
            }));
        }
        let Some(handle) = self.connecting.as_mut() else {
            return Err(unreachable("no connection attempt".into()));
        };
        // Awaiting the handle by reference leaves it in place if this call times out.
        let r = handle.await;
        self.connecting = None;
        let conn = r
            .map_err(|e| unreachable(e.to_string()))?
            .map_err(unreachable)?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `req` and waits for the answer, at most `limit` in all.
    pub async fn call(
        &mut self,
        req: &PeerRequest,
        limit: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let Some(addr) = self.addr else {
            return Err(PeerError::Unreachable {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: "the member's raft address is not an ip:port".into(),
            });
        };
        let connected = self
            .conn
            .as_ref()
            .is_some_and(|c| c.close_reason().is_none());
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
            Err(_) => Err(PeerError::Timeout { addr, limit }),
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
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: u64, node: &Member) -> PeerClient {
        PeerClient {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            addr: node.raft.parse().ok(),
            conn: None,
            connecting: None,
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

/// When this member last accepted entries or a heartbeat from a leader.
pub type LeaderContact = Arc<std::sync::Mutex<Option<std::time::Instant>>>;

/// Serves peer RPCs arriving at `endpoint` to `raft` until the endpoint closes, noting in
/// `contact` each time a leader's AppendEntries is accepted.
pub async fn serve(
    endpoint: quinn::Endpoint,
    raft: Raft,
    id: u64,
    me: Member,
    contact: LeaderContact,
) {
    let me = Arc::new(me);
    while let Some(incoming) = endpoint.accept().await {
        let raft = raft.clone();
        let me = me.clone();
        let contact = contact.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let raft = raft.clone();
                let me = me.clone();
                let contact = contact.clone();
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
                            let answer = raft.append_entries(r).await;
                            if matches!(
                                answer,
                                Ok(AppendEntriesResponse::Success
                                    | AppendEntriesResponse::PartialSuccess(_)
                                    | AppendEntriesResponse::Conflict)
                            ) {
                                *contact.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(std::time::Instant::now());
                            }
                            PeerResponse::Append(answer)
                        }
                        PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
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
