//! `understudy-agent` run: wires config → CRIU, fence, QUIC endpoint (data-plane server and
//! client) → control connection, waits for a signal, and drains under a deadline.

use std::time::Duration;

use std::sync::Arc;

use criu_sys::Criu;
use understudy_common::protocol::{close, CONTROL_ALPN};
use understudy_common::shutdown::wait_for_signal;
use understudy_common::tls::endpoint::{client_config, server_config, EndpointConfigError};
use understudy_common::tls::files::TlsFileError;
use understudy_common::tls::revoked::RevokedList;
use understudy_common::tls::{Refusal, Role};
use understudy_common::transfer::DATA_ALPN;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::node::Node;
use crate::replication::peers::Peers;
use crate::state::copies::Copies;
use crate::state::fence::Fence;
use crate::{control, dataplane};

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
    /// The data-plane port could not be bound.
    #[error("data_plane.listen: cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The agent's own state files are unreadable.
    #[error("{0}")]
    State(String),
    /// The supervisors' executable could not be put in place.
    #[error(transparent)]
    SupervisorBinary(#[from] crate::supervisor::binary::BinaryError),
}

impl understudy_common::exit::Coded for RunError {
    /// Unusable certificate files and an `agent.data_dir` that cannot be created are the
    /// operator's to fix: restarting would fail the same way. A port still held (a
    /// previous agent not yet gone) may free itself, so a bind error is restarted.
    fn exit_code(&self) -> i32 {
        match self {
            RunError::Tls(_) | RunError::DataDir { .. } => understudy_common::exit::CONFIG,
            _ => understudy_common::exit::SOFTWARE,
        }
    }
}

fn find_criu(config: &AgentConfig) -> Result<Arc<Criu>, String> {
    let criu = match &config.criu.binary {
        Some(bin) => Criu::new(bin.clone()),
        None => Criu::from_env().map_err(|e| e.to_string())?,
    };
    let version = criu.version().map_err(|e| {
        format!(
            "CRIU at {} does not work: {e}",
            criu.service_binary().display()
        )
    })?;
    let kernel = kernel_release();
    let needed = min_criu_version(kernel);
    if version < needed {
        return Err(format!(
            "CRIU at {} is version {version}; {}.{} or newer is needed on kernel {}.{}",
            criu.service_binary().display(),
            needed / 10000,
            needed / 100 % 100,
            kernel.0,
            kernel.1
        ));
    }
    tracing::info!(
        binary = %criu.service_binary().display(),
        version,
        "CRIU ready"
    );
    Ok(Arc::new(criu))
}

/// The running kernel's (major, minor) version.
fn kernel_release() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The oldest CRIU that works on kernel `k`: CRIU 4.0 and older fail `criu check` from
/// 6.13 on, and 4.1 cannot dump TCP sockets from 6.16 on; older kernels are served by
/// Debian 12's 3.17.
fn min_criu_version(k: (u32, u32)) -> i32 {
    if k >= (6, 13) {
        40200
    } else {
        31700
    }
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), RunError> {
    let tls = config.tls.load(Role::Agent)?;
    std::fs::create_dir_all(&config.agent.data_dir).map_err(|source| RunError::DataDir {
        path: config.agent.data_dir.clone(),
        source,
    })?;
    let fence = Fence::load(&config.agent.data_dir).map_err(|e| RunError::State(e.to_string()))?;
    // Before the data plane serves: a transfer in flight when an earlier run was killed
    // left a staging directory behind (the committed epochs are what counts).
    let leftovers = crate::replication::shadow_store::discard_all_staging(&config.agent.data_dir);
    if leftovers > 0 {
        tracing::info!(
            workloads = leftovers,
            "discarded epochs an earlier run was receiving when it stopped"
        );
    }
    crate::supervisor::binary::install()?;
    crate::supervisor::home::configure(config.agent.trees_dir.clone());
    let copies =
        Copies::load(&config.agent.data_dir).map_err(|e| RunError::State(e.to_string()))?;
    let control_client = client_config(&tls, Role::Coordinator, CONTROL_ALPN, IDLE_TIMEOUT, None)?;
    // The revocations the coordinator sends: peers' data-plane certificates are checked
    // against them at every handshake.
    let revoked = RevokedList::default();
    let data_client = client_config(&tls, Role::Agent, DATA_ALPN, IDLE_TIMEOUT, Some(&revoked))?;
    let data_server = server_config(
        &tls,
        Role::Agent,
        DATA_ALPN,
        IDLE_TIMEOUT,
        Arc::new(|reason: Refusal, detail: &str| {
            tracing::warn!(reason = reason.label(), "refused data-plane peer: {detail}");
        }),
        Some(&revoked),
    )?;
    let listen = config.data_plane.listen;
    let endpoint =
        quinn::Endpoint::server(data_server, listen).map_err(|source| RunError::Bind {
            addr: listen,
            source,
        })?;
    let criu = find_criu(&config);
    if let Err(e) = &criu {
        tracing::warn!("workloads will run unprotected: {e}");
    }
    tracing::info!(host = %tls.identity.name, data_plane = %listen, "agent starting");

    // Checked with the rest of the config before the agent started.
    let memory = config.agent.memory().ok().flatten();
    if let Some(m) = &memory {
        tracing::info!(cgroup = %m.dir().display(), "this host's memory is its memory cgroup's");
    }
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(1024);
    let scratch = crate::scratch::root(
        config.agent.scratch_dir.as_deref(),
        &tls.identity.name,
    )
    .and_then(|root| match crate::scratch::prepare(&root) {
        Ok(()) => {
            tracing::info!(dir = %root.display(), "dumps go to memory-backed scratch space");
            Some(root)
        }
        Err(e) => {
            tracing::warn!(dir = %root.display(), "scratch space unusable, dumps go under the data directory: {e}");
            None
        }
    });
    let mut node = Node::new(
        tls.identity.name.clone(),
        config.agent.data_dir.clone(),
        criu,
        crate::datadir::DataRoots::new(&config.workload_data),
        (fence, copies),
        Peers::new(endpoint.clone(), data_client, revoked),
        report_tx,
    );
    node.scratch = scratch;
    node.budgets = config.epochs.budgets();
    node.memory_tracking = config.epochs.memory_tracking
        && node
            .criu
            .as_ref()
            .is_ok_and(|c| c.feature_mem_track().unwrap_or(false));
    tracing::info!(
        memory_tracking = node.memory_tracking,
        "epochs: {}",
        if node.memory_tracking {
            "each dump writes only the pages written since the previous one"
        } else if config.epochs.memory_tracking {
            "whole dumps (this kernel or CRIU cannot track written pages)"
        } else {
            "whole dumps ([epochs] memory_tracking = false)"
        }
    );
    let node = Arc::new(node);
    // Workloads an earlier run started kept running under their supervisors: take them back.
    crate::workload::adopt::readopt(&node).await;
    tokio::spawn(dataplane::serve(node.clone()));
    match crate::hostmetrics::schema::shipped() {
        Ok(schema) => {
            let models = config
                .models
                .dir
                .clone()
                .unwrap_or_else(crate::predict::manifest::default_dir);
            let (from, to) = (node.clone(), node.clone());
            tokio::spawn(crate::workload::probes::watch(
                move || {
                    from.primaries()
                        .iter()
                        .filter_map(|p| {
                            let probe = p.spec.probe.clone()?;
                            let setpriv = crate::supervisor::account::of_spec(&p.spec).map(|a| {
                                if a.uid == 0 {
                                    Vec::new()
                                } else {
                                    a.setpriv()
                                }
                            });
                            Some((p.spec.name.clone(), probe, p.snapshot().pid, setpriv))
                        })
                        .collect()
                },
                move |reports| to.set_probes(reports),
                config.probes.interval,
                crate::predict::univariate::UnivariateModel::load(&models),
            ));
            let history = crate::exporter::start_sampling(
                schema,
                &models,
                (
                    config.models.warmup_samples,
                    config.models.false_alarms_per_day,
                ),
                crate::predict::health::Thresholds {
                    healthy: config.health.healthy,
                    critical: config.health.critical,
                },
                node.clone(),
                memory.clone(),
            );
            if config.metrics.enabled {
                let (listen, node) = (config.metrics.listen, node.clone());
                let https = if config.metrics.client_certificates {
                    let sink = Arc::new(|reason: Refusal, detail: &str| {
                        tracing::warn!(
                            reason = reason.label(),
                            "refused a metrics client: {detail}"
                        );
                    });
                    Some(understudy_common::tls::https::metrics_server_config(
                        &tls, sink,
                    )?)
                } else {
                    None
                };
                tokio::spawn(async move {
                    if let Err(e) = crate::exporter::serve(listen, history, node, https).await {
                        tracing::error!(%listen, "metrics endpoint: {e}");
                    }
                });
            }
        }
        Err(e) => tracing::error!("host metrics disabled: {e}"),
    }

    let seed = u64::from(std::process::id()) ^ tls.identity.name.len() as u64;
    let backoff = Backoff::new(config.reconnect.initial, config.reconnect.max, seed);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctl = control::Control {
        node: node.clone(),
        client: control_client,
        data_port: listen.port(),
        reports: report_rx,
        zone: config.agent.zone.clone(),
        memory: memory.clone(),
        renewer: Arc::new(crate::renew::Renewer::new(config.tls.clone(), &tls)),
    };
    let control = tokio::spawn(control::run(
        ctl,
        config.coordinator.addresses.clone(),
        backoff,
        stop_rx,
    ));

    understudy_common::systemd::ready(&format!(
        "{} workloads supervised; data plane on {listen}",
        node.primaries().len()
    ));
    // Alive while the runtime schedules and the node's state can be locked.
    let watched = node.clone();
    let watchdog = understudy_common::systemd::spawn_watchdog(move || {
        let _ = watched.primaries();
        true
    });

    wait_for_signal().await?;
    understudy_common::systemd::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = stop_tx.send(true);
    for p in node.primaries() {
        // Workloads keep running when the agent stops; only its epochs stop.
        p.tell(crate::life::Event::Shutdown);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_criu_needed_follows_the_kernel() {
        assert_eq!(min_criu_version((6, 1)), 31700);
        assert_eq!(min_criu_version((6, 12)), 31700);
        assert_eq!(min_criu_version((6, 13)), 40200);
        assert_eq!(min_criu_version((6, 18)), 40200);
    }
}
