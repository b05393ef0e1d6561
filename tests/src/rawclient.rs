//! A hand-driven control-plane client, for sending what a real agent never would (garbage,
//! other protocol versions, oversized frames) over an authenticated QUIC connection.

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::{
    AgentMessage, CoordinatorMessage, Register, CONTROL_ALPN, MAX_CONTROL_FRAME, PROTOCOL_VERSION,
};
use understudy_common::telemetry::TelemetrySummary;
use understudy_common::tls::ca::PemPair;
use understudy_common::tls::endpoint::client_config;
use understudy_common::tls::files::LoadedTls;
use understudy_common::tls::identity::read_identity;
use understudy_common::tls::{Role, COORDINATOR_SAN};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// `cert` and the CA as loaded TLS files.
pub fn loaded_tls(cert: &PemPair, ca_pem: &str) -> LoadedTls {
    loaded(cert, ca_pem)
}

fn loaded(cert: &PemPair, ca_pem: &str) -> LoadedTls {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let identity = read_identity(&chain[0]).unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let live = understudy_common::tls::live::LiveKey::from_der(chain.clone(), key.clone_key());
    LoadedTls {
        roots,
        chain,
        key,
        identity,
        live: std::sync::Arc::new(live.unwrap()),
    }
}

/// Opens a QUIC connection to the coordinator at `addr` presenting `cert`.
pub async fn open(addr: SocketAddr, cert: &PemPair, ca_pem: &str) -> Result<Connection, String> {
    let cfg = client_config(
        &loaded(cert, ca_pem),
        Role::Coordinator,
        CONTROL_ALPN,
        Duration::from_secs(10),
        None,
    )
    .map_err(|e| e.to_string())?;
    let mut ep =
        quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(|e| e.to_string())?;
    ep.set_default_client_config(cfg);
    ep.connect(addr, COORDINATOR_SAN)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Opens a data-plane connection to the agent `name` at `addr`, presenting `cert`.
pub async fn open_data(
    addr: SocketAddr,
    name: &str,
    cert: &PemPair,
    ca_pem: &str,
) -> Result<Connection, String> {
    let cfg = client_config(
        &loaded(cert, ca_pem),
        Role::Agent,
        understudy_common::transfer::DATA_ALPN,
        Duration::from_secs(10),
        None,
    )
    .map_err(|e| e.to_string())?;
    let ep =
        quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(|e| e.to_string())?;
    ep.connect_with(cfg, addr, name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Connects and registers like an agent; returns the control stream once the coordinator
/// has accepted the registration.
pub async fn connect(
    addr: SocketAddr,
    cert: &PemPair,
    ca_pem: &str,
) -> Result<(Connection, SendStream, RecvStream), String> {
    let conn = open(addr, cert, ca_pem).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let reg = AgentMessage::Register(Register {
        agent_version: "raw-test-client".into(),
        telemetry: TelemetrySummary::default(),
        data_port: None,
        inventory: Default::default(),
        zone: None,
    });
    write_frame(&mut send, PROTOCOL_VERSION, &reg)
        .await
        .map_err(|e| e.to_string())?;
    let answer: CoordinatorMessage = tokio::time::timeout(
        Duration::from_secs(5),
        read_frame(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME),
    )
    .await
    .map_err(|_| "no answer to Register within 5 s".to_string())?
    .map_err(|e| match conn.close_reason() {
        Some(r) => r.to_string(),
        None => e.to_string(),
    })?;
    match answer {
        CoordinatorMessage::Registered { .. } => Ok((conn, send, recv)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Waits for the connection to be closed by the peer; returns the close error.
pub async fn closed_within(
    conn: &Connection,
    limit: Duration,
) -> Result<quinn::ConnectionError, String> {
    tokio::time::timeout(limit, conn.closed())
        .await
        .map_err(|_| format!("connection still open after {limit:?}"))
}
