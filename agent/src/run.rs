//! `understudy-agent` run: wires config → QUIC endpoint → control connection, waits for a
//! signal, and drains under a deadline.

use std::time::Duration;

use understudy_common::protocol::{close, CONTROL_ALPN};
use understudy_common::shutdown::wait_for_signal;
use understudy_common::tls::endpoint::{client_config, EndpointConfigError};
use understudy_common::tls::files::TlsFileError;
use understudy_common::tls::Role;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::control;

/// How long a shutdown waits for the coordinator to acknowledge the close.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);
/// QUIC idle timeout: a coordinator silent this long is treated as gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    /// TLS configuration refused.
    #[error(transparent)]
    Endpoint(#[from] EndpointConfigError),
    /// The data directory could not be created.
    #[error("agent.data_dir: cannot create {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A socket or signal handler could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), RunError> {
    let tls = config.tls.load(Role::Agent)?;
    std::fs::create_dir_all(&config.agent.data_dir).map_err(|source| RunError::DataDir {
        path: config.agent.data_dir.clone(),
        source,
    })?;
    let client = client_config(&tls, Role::Coordinator, CONTROL_ALPN, IDLE_TIMEOUT)?;
    let bind: std::net::SocketAddr = if config.coordinator.addresses.iter().any(|a| a.is_ipv6()) {
        "[::]:0"
            .parse()
            .map_err(|_| std::io::Error::other("bad bind address"))?
    } else {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client);
    tracing::info!(host = %tls.identity.name, "agent starting");

    let seed = u64::from(std::process::id()) ^ tls.identity.name.len() as u64;
    let backoff = Backoff::new(config.reconnect.initial, config.reconnect.max, seed);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control = tokio::spawn(control::run(
        endpoint.clone(),
        config.coordinator.addresses.clone(),
        backoff,
        stop_rx,
    ));

    wait_for_signal().await?;
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        let _ = control.await;
        endpoint.close(close::SHUTDOWN.into(), b"agent shutting down");
        endpoint.wait_idle().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain deadline of {DRAIN_DEADLINE:?} passed; exiting anyway");
    }
    tracing::info!("agent stopped");
    Ok(())
}
