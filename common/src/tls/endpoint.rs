//! Building quinn server and client configurations with mutual TLS (rustls, ring only).

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;

use super::files::LoadedTls;
use super::identity::Role;
use super::revoked::RevokedList;
use super::verify::{RefusalSink, RoleClientVerifier, RoleServerVerifier};

/// Why a QUIC/TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EndpointConfigError {
    /// rustls refused the certificates or key.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built from the CA.
    #[error("TLS client verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The server verifier could not be built from the CA.
    #[error("TLS server verifier: {0}")]
    ServerVerifier(String),
    /// QUIC refused the TLS configuration.
    #[error("QUIC TLS setup failed: {0}")]
    Quic(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(idle_timeout: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Both bounds are far below u32 milliseconds, so the conversions cannot fail.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
    t.keep_alive_interval(Some(idle_timeout / 3));
    Arc::new(t)
}

/// A server accepting only peers of `accept` role (and none `revoked` lists, if given),
/// reporting refusals to `sink`.
pub fn server_config(
    tls: &LoadedTls,
    accept: Role,
    alpn: &[u8],
    idle_timeout: Duration,
    sink: RefusalSink,
    revoked: Option<&RevokedList>,
) -> Result<quinn::ServerConfig, EndpointConfigError> {
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(tls.roots.clone()), provider())
            .build()?;
    let mut verifier = RoleClientVerifier::new(webpki, accept, sink);
    if let Some(r) = revoked {
        verifier = verifier.revoking(r.clone());
    }
    let verifier = Arc::new(verifier);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(tls.live.clone());
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let quic =
        QuicServerConfig::try_from(cfg).map_err(|e| EndpointConfigError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(transport(idle_timeout));
    Ok(server)
}

/// A client that presents this host's certificate and accepts only servers of `expect` role
/// (and none `revoked` lists, if given).
pub fn client_config(
    tls: &LoadedTls,
    expect: Role,
    alpn: &[u8],
    idle_timeout: Duration,
    revoked: Option<&RevokedList>,
) -> Result<quinn::ClientConfig, EndpointConfigError> {
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(tls.roots.clone()), provider())
            .build()
            .map_err(|e| EndpointConfigError::Quic(e.to_string()))?;
    let mut verifier = RoleServerVerifier::new(webpki, expect);
    if let Some(r) = revoked {
        verifier = verifier.revoking(r.clone());
    }
    let verifier = Arc::new(verifier);
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(tls.live.clone());
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let quic =
        QuicClientConfig::try_from(cfg).map_err(|e| EndpointConfigError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(transport(idle_timeout));
    Ok(client)
}
