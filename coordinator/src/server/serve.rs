//! `understudy serve`: wires config → store → QUIC listener, HTTP API and the heartbeat
//! sweeper, then waits for a signal and drains under a deadline.

use std::sync::Arc;
use std::time::Duration;

use understudy_common::protocol::{close, CONTROL_ALPN};
use understudy_common::shutdown::wait_for_signal;
use understudy_common::systemd;
use understudy_common::tls::endpoint::{server_config, EndpointConfigError};
use understudy_common::tls::files::{TlsFileError, TlsFiles};
use understudy_common::tls::{Refusal, Role};

use super::{control, group, http, switchover, Shared};
use crate::config::CoordinatorConfig;
use crate::raft::node::{Node, NodeError, NodeSettings};
use crate::raft::Member;
use crate::store::{Store, StoreError};

/// How long a shutdown waits for connections to close.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// How often last-seen times and telemetry are written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    /// TLS configuration refused.
    #[error(transparent)]
    Endpoint(#[from] EndpointConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// "quic.listen" or "http.listen".
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The group member could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Signal handling could not be set up.
    #[error("signal setup: {0}")]
    Signal(std::io::Error),
}

impl understudy_common::exit::Coded for ServeError {
    /// Unusable certificate files are the operator's to fix: restarting would fail the
    /// same way.
    fn exit_code(&self) -> i32 {
        match self {
            ServeError::Tls(_) => understudy_common::exit::CONFIG,
            _ => understudy_common::exit::SOFTWARE,
        }
    }
}

/// Tells systemd the service is up and, while `alive` answers, alive; returns the
/// watchdog task to stop when the service stops.
fn notify_ready(
    status: String,
    alive: impl Fn() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    systemd::ready(&status);
    systemd::spawn_watchdog(alive)
}

/// Tells systemd the service is stopping and stops the watchdog's pings.
fn notify_stopping(watchdog: Option<tokio::task::JoinHandle<()>>) {
    systemd::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
}

/// Runs the coordinator until SIGTERM/SIGINT.
pub async fn serve(config: CoordinatorConfig) -> Result<(), ServeError> {
    if let Some(cluster) = config.cluster.clone() {
        return serve_member(config, cluster).await;
    }
    let tls = config.tls.load(Role::Coordinator)?;
    let store = Store::open(&config.store.path)?;
    let loaded = store.load()?;
    let interrupted = loaded.migrations.clone();
    let hb = &config.heartbeat;
    let f = &config.failover;
    let settings = crate::workloads::failover::Settings {
        mode: f.mode,
        fence_after: f.fence_after,
        failover_after: f.failover_after,
        replace_shadow_after: f.replace_after(),
    };
    let shared = Arc::new(Shared::new(
        Arc::new(store),
        loaded,
        hb.interval,
        hb.timeout,
        settings,
        config.decisions.settings(),
    ));
    shared.set_enrollment(enrollment(config.enrollment.as_ref(), &config.tls));

    let sink_shared = Arc::downgrade(&shared);
    let sink = Arc::new(move |reason: Refusal, detail: &str| {
        tracing::warn!(
            reason = reason.label(),
            "refused agent certificate: {detail}"
        );
        if let Some(s) = sink_shared.upgrade() {
            s.metrics.refused(reason);
        }
    });
    let endpoint = bind(&config, &tls, sink).await?;
    let api_shared = Arc::downgrade(&shared);
    let listeners = bind_api(&config, &tls, Arc::new(move || api_shared.upgrade())).await?;
    tracing::info!(
        name = %tls.identity.name,
        quic = %config.quic.listen,
        http = %config.http.listen,
        "coordinator serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(signer) = enrollment(config.enrollment.as_ref(), &config.tls) {
        super::renew_self::spawn(config.tls.clone(), &tls, signer, stop_rx.clone());
    }

    // Switchovers the previous process left mid-way are finished or rolled back from their
    // recorded phase (their orders wait for the hosts to reconnect). Claimed before any
    // host can register, so reconciliation leaves them to their driver.
    switchover::resume_interrupted(&shared, interrupted);
    let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
    let sweeper = tokio::spawn(sweep_loop(shared.clone(), stop_rx.clone(), true));
    let app = http::router(shared.clone());
    let http_task = listeners.serve(app, &config, stop_rx);
    let watched = shared.clone();
    let watchdog = notify_ready(
        format!(
            "serving agents on {}, the API on {}",
            config.quic.listen, config.http.listen
        ),
        move || watched.responsive(),
    );

    wait_for_signal().await.map_err(ServeError::Signal)?;
    notify_stopping(watchdog);
    let _ = stop_tx.send(true);
    endpoint.close(close::SHUTDOWN.into(), b"coordinator shutting down");
    accept.abort();
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        endpoint.wait_idle().await;
        let _ = http_task.await;
        let _ = sweeper.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain deadline of {DRAIN_DEADLINE:?} passed; exiting anyway");
    }
    shared.flush();
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Runs this coordinator as a member of a group until SIGTERM/SIGINT (see [`group`]).
async fn serve_member(
    config: CoordinatorConfig,
    cluster: crate::config::ClusterSection,
) -> Result<(), ServeError> {
    let tls = config.tls.load(Role::Coordinator)?;
    let store = Arc::new(Store::open(&config.store.path)?);
    let me = Member {
        raft: cluster.listen.to_string(),
        quic: Some(config.quic.listen.to_string()),
        http: Some(config.http.listen.to_string()),
    };
    let node = Node::start(
        NodeSettings {
            id: cluster.id,
            listen: cluster.listen,
            me,
            log: &cluster.log,
            elect: true,
        },
        &tls,
        store.clone(),
    )
    .await?;
    let hb = config.heartbeat.clone();
    let f = config.failover.clone();
    let decisions = config.decisions.settings();
    let signer = enrollment(config.enrollment.as_ref(), &config.tls);
    let build = move |store: Arc<Store>| -> Result<Arc<Shared>, String> {
        let loaded = store.load().map_err(|e| e.to_string())?;
        let interrupted = loaded.migrations.clone();
        let settings = crate::workloads::failover::Settings {
            mode: f.mode,
            fence_after: f.fence_after,
            failover_after: f.failover_after,
            replace_shadow_after: f.replace_after(),
        };
        let shared = Arc::new(Shared::new(
            store,
            loaded,
            hb.interval,
            hb.timeout,
            settings,
            decisions.clone(),
        ));
        shared.set_enrollment(signer.clone());
        switchover::resume_interrupted(&shared, interrupted);
        Ok(shared)
    };
    let run = |shared: Arc<Shared>, stop: tokio::sync::watch::Receiver<bool>| {
        tokio::spawn(sweep_loop(shared, stop, false));
    };
    let (group, leading) = group::start(node.clone(), store, build, run);

    let sink = Arc::new(move |reason: Refusal, detail: &str| {
        tracing::warn!(
            reason = reason.label(),
            "refused agent certificate: {detail}"
        );
    });
    let endpoint = bind(&config, &tls, sink).await?;
    let api_group = group.clone();
    let listeners = bind_api(&config, &tls, Arc::new(move || api_group.leading_shared())).await?;
    tracing::info!(
        id = cluster.id,
        name = %tls.identity.name,
        quic = %config.quic.listen,
        http = %config.http.listen,
        raft = %cluster.listen,
        "coordinator group member serving"
    );
    let accept = tokio::spawn(group::accept_loop(endpoint.clone(), group.clone()));
    let (stop_tx, http_stop) = tokio::sync::watch::channel(false);
    if let Some(signer) = enrollment(config.enrollment.as_ref(), &config.tls) {
        super::renew_self::spawn(config.tls.clone(), &tls, signer, http_stop.clone());
    }
    let app = group::router(group.clone());
    let http_task = listeners.serve(app, &config, http_stop);
    let watched = group.clone();
    let watchdog = notify_ready(
        format!(
            "group member {} serving; Raft on {}",
            cluster.id, cluster.listen
        ),
        move || watched.leading_shared().is_none_or(|s| s.responsive()),
    );

    wait_for_signal().await.map_err(ServeError::Signal)?;
    notify_stopping(watchdog);
    let _ = stop_tx.send(true);
    leading.abort();
    accept.abort();
    endpoint.close(close::SHUTDOWN.into(), b"coordinator shutting down");
    node.shutdown().await;
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
        endpoint.wait_idle().await;
        let _ = http_task.await;
    })
    .await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Runs a witness until SIGTERM/SIGINT: a voter that never campaigns and serves no API.
pub async fn witness(config: crate::config::WitnessConfig) -> Result<(), ServeError> {
    let tls = config.tls.load(Role::Coordinator)?;
    let w = &config.witness;
    let store = Arc::new(Store::open(&w.store)?);
    let node = Node::start(
        NodeSettings {
            id: w.id,
            listen: w.listen,
            me: Member {
                raft: w.listen.to_string(),
                quic: None,
                http: None,
            },
            log: &w.log,
            elect: false,
        },
        &tls,
        store,
    )
    .await?;
    tracing::info!(id = w.id, raft = %w.listen, "witness serving");
    let watchdog = notify_ready(format!("witness {} on {}", w.id, w.listen), || true);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let renewing = enrollment(config.enrollment.as_ref(), &config.tls)
        .map(|signer| super::renew_self::spawn(config.tls.clone(), &tls, signer, stop_rx));
    wait_for_signal().await.map_err(ServeError::Signal)?;
    notify_stopping(watchdog);
    let _ = stop_tx.send(true);
    if let Some(r) = renewing {
        let _ = r.await;
    }
    node.shutdown().await;
    tracing::info!("witness stopped");
    Ok(())
}

/// Binds the agents' QUIC endpoint (agent certificates only, refusals to `sink`).
async fn bind(
    config: &CoordinatorConfig,
    tls: &understudy_common::tls::files::LoadedTls,
    sink: understudy_common::tls::verify::RefusalSink,
) -> Result<quinn::Endpoint, ServeError> {
    let quic_cfg = server_config(
        tls,
        Role::Agent,
        CONTROL_ALPN,
        config.heartbeat.timeout * 2,
        sink,
        None,
    )?;
    let endpoint = quinn::Endpoint::server(quic_cfg, config.quic.listen).map_err(|source| {
        ServeError::Bind {
            what: "quic.listen",
            addr: config.quic.listen,
            source,
        }
    })?;
    Ok(endpoint)
}

/// The operator API's listeners, bound.
struct ApiListeners {
    https: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    plain: Option<tokio::net::TcpListener>,
}

/// Where the API audits into: the state of this coordinator, or of a group's leader while
/// this member leads.
type AuditTo = Arc<dyn Fn() -> Option<Arc<Shared>> + Send + Sync>;

/// Binds the HTTPS API (`http.listen`) and, when configured, the plain listener for
/// `/metrics` and `/v1/health` (`http.plain_listen`). Client certificates refused at the
/// TLS handshake are audited into `audit_to`'s state.
async fn bind_api(
    config: &CoordinatorConfig,
    tls: &understudy_common::tls::files::LoadedTls,
    audit_to: AuditTo,
) -> Result<ApiListeners, ServeError> {
    let sink = Arc::new(move |reason: Refusal, detail: &str| {
        tracing::warn!(
            reason = reason.label(),
            "refused an API client certificate: {detail}"
        );
        if let Some(s) = audit_to() {
            super::auth::audit_handshake(&s, reason, detail);
        }
    });
    let tls = understudy_common::tls::https::api_server_config(tls, sink)?;
    let listen = |what: &'static str, addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let https = listen("http.listen", config.http.listen).await?;
    let plain = match config.http.plain_listen {
        Some(a) => Some(listen("http.plain_listen", a).await?),
        None => None,
    };
    Ok(ApiListeners { https, tls, plain })
}

impl ApiListeners {
    /// Serves `app` on every listener until `stop`; the task ends when they have stopped.
    fn serve(
        self,
        app: axum::Router,
        config: &CoordinatorConfig,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let app = app
            .layer(axum::Extension(super::auth::Policy {
                allow_root_workloads: config.http.allow_root_workloads,
            }))
            .layer(axum::middleware::from_fn_with_state(
                super::limits::Limits::new(&config.http.names),
                super::limits::limit,
            ));
        let plain = self
            .plain
            .map(|l| tokio::spawn(super::https::serve(l, None, app.clone(), stop.clone())));
        let https = super::https::serve(self.https, Some(self.tls), app, stop);
        tokio::spawn(async move {
            https.await;
            if let Some(p) = plain {
                let _ = p.await;
            }
        })
    }
}

/// The CA that signs joining and renewing hosts' certificates (`[enrollment]`), if any.
fn enrollment(
    section: Option<&crate::config::EnrollmentSection>,
    tls: &TlsFiles,
) -> Option<super::join::Enrollment> {
    let e = section?;
    match e.load_ca(&tls.ca) {
        Ok(ca) => Some(super::join::Enrollment {
            ca: Arc::new(ca),
            cert_lifetime: e.cert_lifetime,
        }),
        // Checked when the config was validated; a file changed since is logged, and joins
        // and renewals are refused rather than the coordinator not starting.
        Err(p) => {
            tracing::error!("joins and renewals are refused: {}: {}", p.key, p.reason);
            None
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(control::handle(shared.clone(), incoming));
    }
}

/// Expires silent hosts, drives failovers and decisions; with `flush`, also writes
/// last-seen times (a group member does not: they do not go through the log).
async fn sweep_loop(
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    flush: bool,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut since_flush = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        shared.expire();
        super::failover::tick(&shared);
        super::decisions::tick(&shared);
        since_flush += Duration::from_millis(250);
        if !flush {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || s.flush_pending()).await;
        }
        if flush && since_flush >= FLUSH_EVERY {
            since_flush = Duration::ZERO;
            let s = shared.clone();
            // redb commits fsync; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || s.flush()).await;
        }
    }
}
