//! `understudy serve`: wires config → store → QUIC listener, HTTP API and the heartbeat
//! sweeper, then waits for a signal and drains under a deadline.

use std::sync::Arc;
use std::time::Duration;

use understudy_common::protocol::{close, CONTROL_ALPN};
use understudy_common::shutdown::wait_for_signal;
use understudy_common::tls::endpoint::{server_config, EndpointConfigError};
use understudy_common::tls::files::TlsFileError;
use understudy_common::tls::{Refusal, Role};

use super::{control, http, switchover, Shared};
use crate::config::CoordinatorConfig;
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
    /// Signal handling could not be set up.
    #[error("signal setup: {0}")]
    Signal(std::io::Error),
}

/// Runs the coordinator until SIGTERM/SIGINT.
pub async fn serve(config: CoordinatorConfig) -> Result<(), ServeError> {
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
    };
    let shared = Arc::new(Shared::new(
        store,
        loaded,
        hb.interval,
        hb.timeout,
        settings,
        config.decisions.settings(),
    ));

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
    let quic_cfg = server_config(&tls, Role::Agent, CONTROL_ALPN, hb.timeout * 2, sink)?;
    let endpoint = quinn::Endpoint::server(quic_cfg, config.quic.listen).map_err(|source| {
        ServeError::Bind {
            what: "quic.listen",
            addr: config.quic.listen,
            source,
        }
    })?;
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| ServeError::Bind {
            what: "http.listen",
            addr: config.http.listen,
            source,
        })?;
    tracing::info!(
        name = %tls.identity.name,
        quic = %config.quic.listen,
        http = %config.http.listen,
        "coordinator serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Switchovers the previous process left mid-way are finished or rolled back from their
    // recorded phase (their orders wait for the hosts to reconnect). Claimed before any
    // host can register, so reconciliation leaves them to their driver.
    switchover::resume_interrupted(&shared, interrupted);
    let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
    let sweeper = tokio::spawn(sweep_loop(shared.clone(), stop_rx.clone()));
    let mut http_stop = stop_rx;
    let app = http::router(shared.clone());
    let http_task = tokio::spawn(async move {
        let graceful = async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(e) = axum::serve(http_listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::error!("HTTP API failed: {e}");
        }
    });

    wait_for_signal().await.map_err(ServeError::Signal)?;
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

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(control::handle(shared.clone(), incoming));
    }
}

async fn sweep_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
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
        if since_flush >= FLUSH_EVERY {
            since_flush = Duration::ZERO;
            let s = shared.clone();
            // redb commits fsync; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || s.flush()).await;
        }
    }
}
