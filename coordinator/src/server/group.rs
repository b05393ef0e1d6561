//! `understudy serve` as a member of a coordinator group (`[cluster]` in its config).
//!
//! Every member runs Raft over the store; only the leader acts. When this member becomes
//! leader — and has applied everything committed before its term — it loads the store into
//! a fresh [`Shared`], exactly as a restarted coordinator does (switchovers in flight are
//! resumed from their recorded phase), and serves agents and the API from it. Its writes go
//! through the log ([`RaftWriter`]). When it stops leading, or cannot confirm its
//! leadership with a majority within [`LEASE_CHECK`], or a write fails to commit, it fences
//! that state at once (no order leaves it: [`Shared::fenced`]), closes every agent
//! connection telling the agent where the leader is, and drops the state. A follower
//! answers agents with the leader's address and the API with a redirect to the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use understudy_common::protocol::close;

use super::http::ErrorBody;
use super::Shared;
use crate::raft::node::Node;
use crate::raft::{Command, Member, Raft};
use crate::store::{Op, Replicate, Store};

/// How long a replicated write may take before it counts as failed (and fences the term).
pub const WRITE_LIMIT: Duration = Duration::from_secs(2);
/// How long the leader may go without confirming its leadership with a majority before it
/// stops acting; checked every [`LEASE_EVERY`].
pub const LEASE_CHECK: Duration = Duration::from_millis(1000);
/// See [`LEASE_CHECK`].
pub const LEASE_EVERY: Duration = Duration::from_millis(250);

/// Sends the store's writes through the log; a write that fails fences the term.
struct RaftWriter {
    raft: Raft,
    handle: tokio::runtime::Handle,
    fence: Mutex<Arc<AtomicBool>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Replicate for RaftWriter {
    fn replicate(&self, ops: Vec<Op>) -> Result<(), String> {
        let fence = self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if fence.load(Ordering::SeqCst) {
            return Err("this coordinator is not the group's leader".into());
        }
        let raft = self.raft.clone();
        let write = async move {
            tokio::time::timeout(WRITE_LIMIT, raft.client_write(Command { ops })).await
        };
        // Callers hold the coordinator's locks while they persist (what the store says is
        // what the driver does), so the write is waited for here, off the async workers,
        // and driven (with its deadline) by the member's own runtime, which those locks
        // can never block.
        let r = tokio::task::block_in_place(|| self.handle.block_on(write));
        let failed = match r {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not committed within {WRITE_LIMIT:?}"),
        };
        fence.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        Err(failed)
    }
}

/// One term of leadership: the state it acts from and what it runs.
struct Term {
    term: u64,
    shared: Arc<Shared>,
    app: Router,
    stop: tokio::sync::watch::Sender<bool>,
}

/// This member's view of the group, shared by its listeners.
pub struct Group {
    node: Node,
    leading: RwLock<Option<Arc<Term>>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("id", &self.node.id).finish()
    }
}

/// A follower that heard from its leader within this long sends clients there.
const FRESH: Duration = Duration::from_millis(600);
/// How long a follower holds an agent's connection while no leader is known (an election is
/// under way), before closing it without a leader's address.
const HOLD: Duration = Duration::from_millis(1500);

impl Group {
    /// The leader as far as this member can tell right now: itself only while it holds a
    /// confirmed term, another member only if heard from within [`FRESH`].
    fn leader(&self) -> Option<(u64, Member)> {
        let l = self.node.live_leader(FRESH)?;
        if l.0 == self.node.id && self.term().is_none() {
            return None;
        }
        Some(l)
    }

    /// The leader's state while this member leads.
    pub fn leading_shared(&self) -> Option<Arc<Shared>> {
        self.term().map(|t| t.shared.clone())
    }

    fn term(&self) -> Option<Arc<Term>> {
        self.leading
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Starts the group machinery around a started member; returns the group and the task
/// that makes this member act while it leads.
pub fn start(
    node: Node,
    store: Arc<Store>,
    build: impl Fn(Arc<Store>) -> Result<Arc<Shared>, String> + Send + Sync + 'static,
    run: impl Fn(Arc<Shared>, tokio::sync::watch::Receiver<bool>) + Send + Sync + 'static,
) -> (Arc<Group>, tokio::task::JoinHandle<()>) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let writer = Arc::new(RaftWriter {
        raft: node.raft.clone(),
        handle: node.runtime.clone(),
        fence: Mutex::new(Arc::new(AtomicBool::new(true))),
        wake: wake.clone(),
    });
    store.replicate_through(writer.clone());
    let group = Arc::new(Group {
        node,
        leading: RwLock::new(None),
    });
    let g = group.clone();
    let task = tokio::spawn(async move {
        let mut metrics = g.node.raft.metrics();
        let mut failures = 0u32;
        let mut last_check = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(LEASE_EVERY) => {}
                _ = wake.notified() => {}
            }
            let m = metrics.borrow().clone();
            let caught_up = m.state == ServerState::Leader
                && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term);
            let current = g.term();
            let fenced = current
                .as_ref()
                .is_some_and(|t| t.shared.fenced() || t.term != m.current_term);
            // A leader that keeps failing to reach a majority (cut off from the others)
            // checks every few seconds rather than every beat.
            let due = failures < 4 || last_check.elapsed() >= Duration::from_secs(2);
            if caught_up && !fenced && current.is_none() && !due {
                continue;
            }
            last_check = std::time::Instant::now();
            let confirmed = caught_up
                && !fenced
                && matches!(
                    tokio::time::timeout(LEASE_CHECK, g.node.raft.ensure_linearizable()).await,
                    Ok(Ok(_))
                );
            failures = if confirmed || !caught_up {
                0
            } else {
                failures + 1
            };
            match (current, confirmed) {
                (Some(t), false) if crate::faults::stale_leader() && t.term == m.current_term => {
                    tracing::warn!(term = t.term, "fault hook: acting on without a majority");
                }
                (Some(t), false) => step_down(&g, &t),
                (None, true) => {
                    match build(store.clone()) {
                        Ok(shared) => {
                            shared.set_term(m.current_term);
                            // The new state's fence is the one the write path sets.
                            let fence_of = shared.fence();
                            *writer.fence.lock().unwrap_or_else(|e| e.into_inner()) = fence_of;
                            let (stop, stop_rx) = tokio::sync::watch::channel(false);
                            let app = super::http::router(shared.clone());
                            run(shared.clone(), stop_rx);
                            tracing::info!(
                                term = m.current_term,
                                id = g.node.id,
                                "leading the coordinator group"
                            );
                            *g.leading.write().unwrap_or_else(|e| e.into_inner()) =
                                Some(Arc::new(Term {
                                    term: m.current_term,
                                    shared,
                                    app,
                                    stop,
                                }));
                        }
                        Err(e) => tracing::error!("cannot load the store to lead: {e}"),
                    }
                }
                _ => {}
            }
        }
    });
    (group, task)
}

fn step_down(g: &Group, t: &Term) {
    t.shared.fence().store(true, Ordering::SeqCst);
    let _ = t.stop.send(true);
    let to = g
        .leader()
        .filter(|(id, _)| *id != g.node.id)
        .and_then(|(_, m)| m.quic)
        .unwrap_or_default();
    t.shared.close_all(close::NOT_LEADER, to.as_bytes());
    *g.leading.write().unwrap_or_else(|e| e.into_inner()) = None;
    tracing::warn!(term = t.term, "no longer leading the coordinator group");
}

/// Serves agents arriving at `endpoint`: the leader's state takes them; a follower tells
/// them where the leader is, holding them while an election is under way (if this member
/// wins it, it serves them itself).
pub async fn accept_loop(endpoint: quinn::Endpoint, group: Arc<Group>) {
    while let Some(incoming) = endpoint.accept().await {
        if let Some(t) = group.term() {
            tokio::spawn(super::control::handle(t.shared.clone(), incoming));
            continue;
        }
        let group = group.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let held = std::time::Instant::now();
            loop {
                if let Some(t) = group.term() {
                    super::control::serve_connection(t.shared.clone(), conn).await;
                    return;
                }
                let leader = group.leader().filter(|(id, _)| *id != group.node.id);
                if let Some(to) = leader.and_then(|(_, m)| m.quic) {
                    conn.close(close::NOT_LEADER.into(), to.as_bytes());
                    return;
                }
                if held.elapsed() > HOLD || conn.close_reason().is_some() {
                    conn.close(close::NOT_LEADER.into(), b"");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
}

/// The API: cluster routes served by every member, everything else by the leader's state
/// or redirected to the leader.
pub fn router(group: Arc<Group>) -> Router {
    Router::new()
        .route("/v1/cluster", get(status))
        .route("/v1/cluster/init", post(init))
        .route("/v1/cluster/join", post(join))
        .route("/v1/cluster/remove", post(remove))
        .route_layer(axum::middleware::from_fn(super::auth::guard_unaudited))
        .fallback(to_leader)
        .with_state(group)
}

fn error(status: StatusCode, msg: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: msg,
            unsettled: false,
        }),
    )
        .into_response()
}

/// A redirect to the leader's API for `path`, or 503 while there is none.
fn redirect(group: &Group, path_and_query: &str) -> Response {
    match group.leader() {
        Some((id, m)) if id != group.node.id => match m.http {
            Some(http) => {
                let url = format!("https://{http}{path_and_query}");
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, url.clone())],
                    Json(ErrorBody {
                        error: format!(
                            "member {} is not the leader; the leader is {id} at {url}",
                            group.node.id
                        ),
                        unsettled: false,
                    }),
                )
                    .into_response()
            }
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the leader, member {id}, has no API address"),
            ),
        },
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no leader yet (member {}, term {}); retry shortly",
                group.node.id,
                group.node.raft.metrics().borrow().current_term
            ),
        ),
    }
}

/// Serves a request from the leader's state, or redirects it. A request that may change
/// something, during which this member stopped leading (every failed write fences the
/// term; a restored backup's deliberate fence does not count), is answered 500 and marked [`ErrorBody::unsettled`] whatever the handler said:
/// its writes may not have committed, or orders it sent may have been carried out, and the
/// new leader settles the outcome from the hosts' reports. Not 503, which tells the CLI
/// that nothing was acted on and it may ask again.
async fn to_leader(State(group): State<Arc<Group>>, req: Request<Body>) -> Response {
    match group.term() {
        Some(t) => {
            let changes = !matches!(req.method().as_str(), "GET" | "HEAD");
            let what = format!("{} {}", req.method(), req.uri().path());
            let answer = match t.app.clone().oneshot(req).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            if changes && t.shared.lost_leadership() {
                tracing::warn!(
                    request = %what,
                    "stopped leading the coordinator group while acting on a request; its outcome is left to the new leader"
                );
                return unsettled(group.node.id, &what);
            }
            answer
        }
        None => {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            redirect(&group, &pq)
        }
    }
}

/// The answer to a request this member stopped leading in the middle of.
fn unsettled(id: u64, what: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(ErrorBody {
            error: format!(
                "member {id} stopped leading the coordinator group while it acted on {what}: what it started may or may not stand, and the group's new leader settles it from what the hosts report; look (understudy workload show, understudy events) before you ask again"
            ),
            unsettled: true,
        }),
    )
        .into_response()
}

/// One member as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: u64,
    /// "coordinator" or "witness".
    pub kind: String,
    /// "leader", "voter" or "learner".
    pub role: String,
    /// Its peer address.
    pub raft: String,
    /// Its API address, for a coordinator.
    pub http: Option<String>,
    /// How many entries it is behind the leader's log (known to the leader only).
    pub lag: Option<u64>,
}

/// Body of `GET /v1/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The member that answered.
    pub answered_by: u64,
    /// Its Raft state: Leader, Follower, Candidate or Learner.
    pub state: String,
    /// The leader it knows of: itself only while it holds a confirmed term, another member
    /// only if heard from recently.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The index of its newest log entry.
    pub last_log_index: Option<u64>,
    /// The index of its newest applied entry.
    pub last_applied: Option<u64>,
    /// Every member.
    pub members: Vec<MemberStatus>,
}

async fn status(State(group): State<Arc<Group>>) -> Json<ClusterStatus> {
    let m = group.node.raft.metrics().borrow().clone();
    let leader = group.leader().map(|(id, _)| id);
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index;
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let lag = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|matched| {
                    last.unwrap_or(0)
                        .saturating_sub(matched.map_or(0, |l| l.index))
                });
            MemberStatus {
                id: *id,
                kind: node.kind().into(),
                role: if leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
                raft: node.raft.clone(),
                http: node.http.clone(),
                lag,
            }
        })
        .collect();
    Json(ClusterStatus {
        answered_by: group.node.id,
        state: match (m.state, group.term().is_some()) {
            (ServerState::Leader, false) => "Leader (unconfirmed: no majority reached)".into(),
            (s, _) => format!("{s:?}"),
        },
        leader,
        term: m.current_term,
        last_log_index: last,
        last_applied: m.last_applied.map(|l| l.index),
        members,
    })
}

/// Body of `POST /v1/cluster/init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Peer addresses of the other members (this one is included by itself).
    pub peers: Vec<SocketAddr>,
}

/// Body of `POST /v1/cluster/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Peer address of the member to add.
    pub peer: SocketAddr,
}

/// Body of `POST /v1/cluster/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// Id of the member to remove.
    pub id: u64,
}

/// Answer of the membership calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipAnswer {
    /// What was done.
    pub done: String,
}

async fn init(State(group): State<Arc<Group>>, Json(req): Json<InitRequest>) -> Response {
    let mut members = BTreeMap::new();
    members.insert(group.node.id, group.node.me.clone());
    for peer in req.peers {
        match group.node.hello(peer).await {
            Ok((id, member)) => {
                if members.insert(id, member).is_some() {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("peers: member id {id} (at {peer}) is used twice"),
                    );
                }
            }
            Err(e) => return error(StatusCode::BAD_GATEWAY, format!("peers: {e}")),
        }
    }
    let ids: Vec<String> = members.keys().map(u64::to_string).collect();
    match group.node.raft.initialize(members).await {
        Ok(()) => Json(MembershipAnswer {
            done: format!("group initialised with members {}", ids.join(", ")),
        })
        .into_response(),
        Err(e) => error(StatusCode::CONFLICT, format!("cannot initialise: {e}")),
    }
}

async fn join(State(group): State<Arc<Group>>, Json(req): Json<JoinRequest>) -> Response {
    if group.term().is_none() {
        return redirect(&group, "/v1/cluster/join");
    }
    let (id, member) = match group.node.hello(req.peer).await {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("peer: {e}")),
    };
    let raft = &group.node.raft;
    if let Err(e) = raft.add_learner(id, member, true).await {
        return error(
            StatusCode::CONFLICT,
            format!("cannot add member {id} as a learner: {e}"),
        );
    }
    let mut voters: BTreeSet<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    voters.insert(id);
    match raft.change_membership(voters, false).await {
        Ok(_) => Json(MembershipAnswer {
            done: format!(
                "member {id} at {} added as a learner, then made a voter",
                req.peer
            ),
        })
        .into_response(),
        Err(e) => error(
            StatusCode::CONFLICT,
            format!("member {id} is a learner; making it a voter failed: {e}"),
        ),
    }
}

async fn remove(State(group): State<Arc<Group>>, Json(req): Json<RemoveRequest>) -> Response {
    if group.term().is_none() {
        return redirect(&group, "/v1/cluster/remove");
    }
    let raft = &group.node.raft;
    let membership = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    if membership.get_node(&req.id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("id: {} is not a member", req.id),
        );
    }
    let voters: BTreeSet<u64> = membership.voter_ids().filter(|v| *v != req.id).collect();
    if voters.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "id: the last voter cannot be removed".into(),
        );
    }
    match raft.change_membership(voters, false).await {
        Ok(_) => Json(MembershipAnswer {
            done: format!("member {} removed", req.id),
        })
        .into_response(),
        Err(e) => error(
            StatusCode::CONFLICT,
            format!("cannot remove member {}: {e}", req.id),
        ),
    }
}
