//! rustls configurations for the operator API (HTTPS): the coordinator asks every client
//! for a certificate of an API role (viewer, operator, admin) but lets one without a
//! certificate finish the handshake, so that the API can answer it 401 and audit it; the
//! CLI checks that it talks to a coordinator of this cluster, whatever address it dialled.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::endpoint::EndpointConfigError;
use super::files::LoadedTls;
use super::identity::Role;
use super::verify::{RefusalSink, RoleClientVerifier, RoleServerVerifier};
use super::COORDINATOR_SAN;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The coordinator's HTTPS server: its own certificate; clients signed by the cluster CA
/// for an API role, or without a certificate (refused by the API itself). A certificate of
/// another CA, expired, or of a host role fails the handshake and is reported to `sink`.
pub fn api_server_config(
    tls: &LoadedTls,
    sink: RefusalSink,
) -> Result<Arc<rustls::ServerConfig>, EndpointConfigError> {
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(tls.roots.clone()), provider())
            .allow_unauthenticated()
            .build()?;
    let verifier = Arc::new(RoleClientVerifier::any_of(webpki, Role::API.to_vec(), sink));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(tls.live.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// An agent's `/metrics` over HTTPS (`[metrics] client_certificates = true`): its own
/// certificate; clients must present one of the cluster CA for an API role (a viewer's
/// will do, as for the coordinators' `/metrics`). Refusals are reported to `sink`.
pub fn metrics_server_config(
    tls: &LoadedTls,
    sink: RefusalSink,
) -> Result<Arc<rustls::ServerConfig>, EndpointConfigError> {
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(tls.roots.clone()), provider())
            .build()?;
    let verifier =
        Arc::new(RoleClientVerifier::any_of(webpki, Role::API.to_vec(), sink).requiring());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(tls.live.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client of the operator API: trusts coordinators of the cluster CA in `roots` (checked
/// for the coordinators' shared name and role) and presents `identity` when given.
pub fn api_client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, EndpointConfigError> {
    https_client_config(roots, identity, Role::Coordinator, COORDINATOR_SAN)
}

/// A client of an understudy HTTPS server whose certificate is of `role` for `name` (an
/// agent's `/metrics`: role agent, its host name), presenting `identity` when given.
pub fn https_client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    role: Role,
    name: &str,
) -> Result<Arc<rustls::ClientConfig>, EndpointConfigError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| EndpointConfigError::ServerVerifier(e.to_string()))?;
    let name = ServerName::try_from(name.to_owned())
        .map_err(|e| EndpointConfigError::ServerVerifier(e.to_string()))?;
    let verifier = Arc::new(RoleServerVerifier::for_name(webpki, role, name));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
