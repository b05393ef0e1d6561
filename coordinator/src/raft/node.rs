//! A running group member: its Raft instance over the redb log and the store, its peer
//! endpoint, and the timing every member of a group shares.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use understudy_common::tls::endpoint::{client_config, server_config, EndpointConfigError};
use understudy_common::tls::files::LoadedTls;
use understudy_common::tls::{Refusal, Role};

use super::log_store::LogStore;
use super::network::{self, Network, PeerClient, PeerError, PeerRequest, PeerResponse};
use super::state_machine::StateMachine;
use super::{Member, Raft};
use crate::store::Store;

/// How often the leader sends heartbeats.
pub const HEARTBEAT: Duration = Duration::from_millis(150);
/// A follower that has not heard from a leader for a random time in this range campaigns.
/// A voter that heard from the leader within [`ELECTION_MAX`] (openraft's leader lease)
/// refuses to vote, so such a campaign is refused by the witness; [`prompt_campaign`]
/// campaigns just after the lease instead: a new leader about [`ELECTION_MAX`] after the
/// last heartbeat.
pub const ELECTION_MIN: Duration = Duration::from_millis(300);
/// See [`ELECTION_MIN`].
pub const ELECTION_MAX: Duration = Duration::from_millis(450);
/// How long the campaign guard waits for another voter's answer.
const PROBE_LIMIT: Duration = Duration::from_millis(300);
/// How long a starting member waits to hear from a leader before it may campaign.
pub const ELECT_GRACE: Duration = Duration::from_secs(2);
/// How long the witness goes without a leader, having refused a coordinator whose log is
/// behind its own, before it campaigns itself (see [`witness_rescue`]).
pub const WITNESS_PATIENCE: Duration = Duration::from_secs(1);
/// Idle timeout of peer connections.
const PEER_IDLE: Duration = Duration::from_secs(3);

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// TLS configuration refused.
    #[error(transparent)]
    Endpoint(#[from] EndpointConfigError),
    /// The peer listener could not be bound.
    #[error("cannot listen on cluster.listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The log or the store could not be opened.
    #[error("{0}")]
    Storage(String),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// A running member.
#[derive(Clone)]
pub struct Node {
    /// This member's id.
    pub id: u64,
    /// Its addresses.
    pub me: Member,
    /// The Raft instance.
    pub raft: Raft,
    /// The store the state machine applies to.
    pub store: Arc<Store>,
    /// When a leader's AppendEntries was last accepted here.
    pub contact: network::LeaderContact,
    /// When a candidate whose log is behind this member's was last refused its vote.
    pub behind: network::Seen,
    /// The runtime Raft, its peer endpoint and its timers run on (see [`Node::start`]).
    pub runtime: tokio::runtime::Handle,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    pool: network::Pool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

/// What starting a member needs.
#[derive(Debug)]
pub struct NodeSettings<'a> {
    /// Its id (unique in the group, at least 1).
    pub id: u64,
    /// Where its peer endpoint listens.
    pub listen: SocketAddr,
    /// Its addresses as the others see them.
    pub me: Member,
    /// The Raft log file.
    pub log: &'a Path,
    /// Whether it may campaign (a witness may not).
    pub elect: bool,
}

/// [`NodeSettings`] owned, to move onto the member's runtime.
struct OwnedSettings {
    id: u64,
    listen: SocketAddr,
    me: Member,
    log: PathBuf,
    elect: bool,
}

/// Lets `node` campaign only when a campaign can do good (Raft without pre-vote, as
/// openraft 0.9 is, lets a member that cannot win still raise the term and unseat a working
/// leader): after it has heard from a leader since it started, or [`ELECT_GRACE`] passed
/// (a restarted member's campaign would be refused by the others, who still follow the
/// leader, and would leave openraft's "longer log seen" penalty on its next timeout); and
/// only while enough other voters answer for it to win (a member cut off from the others
/// campaigning in vain would otherwise come back with a term that forces an election).
async fn campaign_guard(node: Node, allowed: Arc<AtomicBool>) {
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(HEARTBEAT * 2).await;
        let heard = node
            .contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let ready = heard || started.elapsed() >= ELECT_GRACE;
        let m = node.raft.metrics().borrow().clone();
        let voters: Vec<(u64, Member)> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != node.id)
            .filter_map(|id| Some((id, m.membership_config.membership().get_node(&id)?.clone())))
            .collect();
        let total = voters.len() + 1;
        let mut answering = 1;
        if ready {
            let probes = voters.iter().filter_map(|(_, member)| {
                let addr: SocketAddr = member.raft.parse().ok()?;
                let n = node.clone();
                Some(async move {
                    matches!(
                        tokio::time::timeout(PROBE_LIMIT, n.hello(addr)).await,
                        Ok(Ok(_))
                    )
                })
            });
            for ok in futures_join(probes).await {
                answering += usize::from(ok);
            }
        }
        let may = ready && answering * 2 > total;
        allowed.store(may, Ordering::SeqCst);
        node.raft.runtime_config().elect(may);
    }
}

/// How long after the leader's lease on the other voters ran out a follower campaigns.
const LEASE_MARGIN: Duration = Duration::from_millis(30);

/// Campaigns as soon as a vote can be granted. A voter refuses votes for [`ELECTION_MAX`]
/// after it last heard from the leader (openraft's leader lease), while openraft's own
/// election timer fires at a random time below that: left alone, the first campaign after a
/// leader dies is refused and the second wins. This campaigns once per silence, just after
/// the lease has run out, when the campaign guard allows it and this member still follows.
async fn prompt_campaign(node: Node, allowed: Arc<AtomicBool>) {
    let mut tried: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !allowed.load(Ordering::SeqCst) {
            continue;
        }
        let last = *node.contact.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = last else { continue };
        if last.elapsed() < ELECTION_MAX + LEASE_MARGIN || tried == Some(last) {
            continue;
        }
        if node.raft.metrics().borrow().state != openraft::ServerState::Follower {
            continue;
        }
        tried = Some(last);
        let _ = node.raft.trigger().elect().await;
    }
}

/// The witness leads only to hand its log on. A write is committed once the witness holds
/// it; a leader lost before the other coordinator received its last entries leaves that
/// coordinator behind the witness, whose vote Raft then refuses it: no coordinator can win.
/// So when the witness has refused a candidate for that reason and heard from no leader for
/// [`WITNESS_PATIENCE`], it campaigns (the coordinator grants it: the witness's log is the
/// longer). It never competes with a coordinator that can win. As leader it sends
/// the coordinators what they lack, and once a coordinator holds its whole log it stops
/// its heartbeats: that coordinator, hearing none, campaigns, and the witness — its leader
/// lease run out, its log no longer ahead — grants it the vote and follows.
async fn witness_rescue(node: Node) {
    let started = std::time::Instant::now();
    let mut tried: Option<std::time::Instant> = None;
    let mut beating = true;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = node.raft.metrics().borrow().clone();
        if m.state == openraft::ServerState::Leader {
            let last = m.last_log_index;
            let caught_up = m.replication.as_ref().is_some_and(|r| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .filter(|id| *id != node.id)
                    .any(|id| r.get(&id).and_then(|l| l.as_ref()).map(|l| l.index) >= last)
            });
            if caught_up == beating {
                beating = !caught_up;
                node.raft.runtime_config().heartbeat(beating);
                if caught_up {
                    tracing::info!(
                        index = ?last,
                        "a coordinator holds the witness's whole log; the witness stops leading"
                    );
                }
            }
            continue;
        }
        if !beating {
            beating = true;
            node.raft.runtime_config().heartbeat(true);
        }
        let heard = *node.contact.lock().unwrap_or_else(|e| e.into_inner());
        let silent = heard.unwrap_or(started).elapsed() >= WITNESS_PATIENCE;
        let refused = *node.behind.lock().unwrap_or_else(|e| e.into_inner());
        let stuck = refused.is_some_and(|t| t.elapsed() < WITNESS_PATIENCE * 3);
        let again = tried.is_none_or(|t| t.elapsed() >= WITNESS_PATIENCE / 2);
        if silent && stuck && again && m.state == openraft::ServerState::Follower {
            tried = Some(std::time::Instant::now());
            tracing::info!(
                "no leader for {WITNESS_PATIENCE:?} and a coordinator behind the witness's log: the witness campaigns to hand it on"
            );
            let _ = node.raft.trigger().elect().await;
        }
    }
}

/// Runs `futs` concurrently and returns their outputs.
async fn futures_join<F: std::future::Future<Output = bool> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or(false));
    }
    out
}

/// The Raft configuration every member uses.
pub fn raft_config(elect: bool) -> Result<Config, NodeError> {
    let cfg = Config {
        cluster_name: "understudy".into(),
        heartbeat_interval: HEARTBEAT.as_millis() as u64,
        election_timeout_min: ELECTION_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_MAX.as_millis() as u64,
        install_snapshot_timeout: 10_000,
        enable_elect: elect,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        // openraft bounds each AppendEntries by the heartbeat interval: small batches keep
        // a lagging member's catch-up within it on a loaded machine.
        max_payload_entries: 16,
        ..Config::default()
    };
    cfg.validate().map_err(|e| NodeError::Raft(e.to_string()))
}

/// Starts the runtime a member's Raft runs on: its own two threads, for the life of the
/// process. The coordinator's request handlers hold its state lock while a write commits;
/// were Raft on their runtime, enough of them waiting for that lock could leave no thread
/// to run the commit (a leader frozen for good, seen as a silent log and an API that no
/// longer answers).
fn own_runtime() -> Result<tokio::runtime::Handle, NodeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("raft")
        .enable_all()
        .build()
        .map_err(|e| NodeError::Raft(format!("cannot start its runtime: {e}")))?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("raft-runtime".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(|e| NodeError::Raft(format!("cannot start its runtime: {e}")))?;
    Ok(handle)
}

impl Node {
    /// Opens the log, puts the state machine over `store` and starts serving peers, all on
    /// a runtime of its own (see [`own_runtime`]).
    pub async fn start(
        s: NodeSettings<'_>,
        tls: &LoadedTls,
        store: Arc<Store>,
    ) -> Result<Node, NodeError> {
        let sink = Arc::new(|reason: Refusal, detail: &str| {
            tracing::warn!(
                reason = reason.label(),
                "refused peer certificate: {detail}"
            );
        });
        let server = server_config(
            tls,
            Role::Coordinator,
            network::PEER_ALPN,
            PEER_IDLE,
            sink,
            None,
        )?;
        let client = client_config(tls, Role::Coordinator, network::PEER_ALPN, PEER_IDLE, None)?;
        let runtime = own_runtime()?;
        let owned = OwnedSettings {
            id: s.id,
            listen: s.listen,
            me: s.me,
            log: s.log.to_owned(),
            elect: s.elect,
        };
        let here = runtime.clone();
        runtime
            .spawn(Self::start_here(owned, server, client, store, here))
            .await
            .map_err(|e| NodeError::Raft(format!("start: {e}")))?
    }

    async fn start_here(
        s: OwnedSettings,
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
        store: Arc<Store>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Node, NodeError> {
        let endpoint =
            quinn::Endpoint::server(server, s.listen).map_err(|source| NodeError::Bind {
                addr: s.listen,
                source,
            })?;
        let log = LogStore::open(&s.log)
            .map_err(|e| NodeError::Storage(format!("raft log {}: {e}", s.log.display())))?;
        let sm = StateMachine::open(store.clone())
            .map_err(|e| NodeError::Storage(format!("store: {e}")))?;
        let pool = network::Pool::default();
        let net = Network {
            endpoint: endpoint.clone(),
            config: client.clone(),
            pool: pool.clone(),
        };
        let raft = Raft::new(s.id, Arc::new(raft_config(s.elect)?), net, log, sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let contact = network::LeaderContact::default();
        let behind = network::Seen::default();
        if s.elect {
            raft.runtime_config().elect(false);
        }
        tokio::spawn(network::serve(
            endpoint.clone(),
            raft.clone(),
            s.id,
            s.me.clone(),
            contact.clone(),
            behind.clone(),
        ));
        let node = Node {
            id: s.id,
            me: s.me,
            raft,
            store,
            contact,
            behind,
            runtime,
            endpoint,
            client,
            pool,
        };
        if s.elect {
            let allowed = Arc::new(AtomicBool::new(false));
            tokio::spawn(campaign_guard(node.clone(), allowed.clone()));
            tokio::spawn(prompt_campaign(node.clone(), allowed));
        } else {
            tokio::spawn(witness_rescue(node.clone()));
        }
        Ok(node)
    }

    /// Asks the member at `addr` for its id and addresses.
    pub async fn hello(&self, addr: SocketAddr) -> Result<(u64, Member), PeerError> {
        let c = PeerClient::new(
            self.endpoint.clone(),
            self.client.clone(),
            addr,
            self.pool.clone(),
        );
        // On the member's runtime: the connection it opens is pooled for Raft's own calls.
        let call = self
            .runtime
            .spawn(async move { c.call(&PeerRequest::Hello, network::HELLO_TIMEOUT).await })
            .await
            .map_err(|e| PeerError::Exchange {
                addr,
                reason: e.to_string(),
            })?;
        match call? {
            PeerResponse::Hello { id, member } => Ok((id, member)),
            _ => Err(PeerError::Exchange {
                addr,
                reason: "unexpected answer to hello".into(),
            }),
        }
    }

    /// The leader and its addresses, if one is known here and (for a follower) was heard
    /// from within `fresh`: a follower whose leader went silent is not sure of it.
    pub fn live_leader(&self, fresh: Duration) -> Option<(u64, Member)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        if id != self.id {
            let last = *self.contact.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() > fresh) {
                return None;
            }
        }
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    /// Stops Raft and the peer endpoint.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.endpoint
            .close(understudy_common::protocol::close::SHUTDOWN.into(), b"bye");
    }
}
