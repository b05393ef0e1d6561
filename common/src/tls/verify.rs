//! Certificate verifiers that add the role check to webpki's chain check and report every
//! refusal with a reason, so the coordinator can log and count them.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::identity::{read_identity, Role};
use super::revoked::RevokedList;

/// Why a peer was refused. The label is what `/metrics` counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not signed by this cluster's CA.
    UnknownCa,
    /// Past its validity.
    Expired,
    /// Before its validity.
    NotYetValid,
    /// Signed by the CA but for another role.
    WrongRole,
    /// The peer presented no certificate.
    NoCertificate,
    /// The certificate is malformed or unusable for another reason.
    BadCertificate,
    /// The peer completed TLS but then broke the protocol.
    Protocol,
    /// The certificate was revoked (`understudy host revoke`).
    Revoked,
}

impl Refusal {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Refusal; 8] = [
        Refusal::UnknownCa,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::WrongRole,
        Refusal::NoCertificate,
        Refusal::BadCertificate,
        Refusal::Protocol,
        Refusal::Revoked,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongRole => "wrong_role",
            Refusal::NoCertificate => "no_certificate",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::Protocol => "protocol",
            Refusal::Revoked => "revoked",
        }
    }

    fn from_rustls(err: &rustls::Error) -> Refusal {
        match err {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Refusal::UnknownCa
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Refusal::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Refusal::NotYetValid
                }
                _ => Refusal::BadCertificate,
            },
            _ => Refusal::BadCertificate,
        }
    }
}

/// Called once per refused peer with the reason and a human-readable detail.
pub type RefusalSink = Arc<dyn Fn(Refusal, &str) + Send + Sync>;

fn check_role(cert: &CertificateDer<'_>, expected: &[Role]) -> Result<(), (Refusal, String)> {
    let id = read_identity(cert).map_err(|e| (Refusal::BadCertificate, e.to_string()))?;
    match id.role {
        Some(r) if expected.contains(&r) => Ok(()),
        other => Err((
            Refusal::WrongRole,
            format!(
                "certificate of {:?} has role {}, expected {}",
                id.name,
                other.map_or("none".into(), |r| r.to_string()),
                expected
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        )),
    }
}

/// Refuses a certificate that `revoked` lists.
fn check_revoked(cert: &CertificateDer<'_>, revoked: &RevokedList) -> Result<(), String> {
    let id = read_identity(cert).map_err(|e| e.to_string())?;
    match revoked.refusing(&id.name, id.not_before_unix) {
        Some(r) => Err(format!(
            "certificate of {:?} was revoked (at {} ms since the Unix epoch)",
            id.name, r.at_unix_ms
        )),
        None => Ok(()),
    }
}

fn revoked_error() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Revoked)
}

fn role_error() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Server-side verifier: webpki chain check against the cluster CA plus a role check.
///
/// Client certificates are requested but not mandatory at the TLS layer, so that a peer
/// without one completes the handshake and can be counted and refused by the application
/// (`Refusal::NoCertificate`) instead of vanishing in a TLS alert.
pub struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    roles: Vec<Role>,
    sink: RefusalSink,
    mandatory: bool,
    revoked: Option<RevokedList>,
}

impl fmt::Debug for RoleClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleClientVerifier")
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl RoleClientVerifier {
    /// Accepts clients signed by `inner`'s roots whose certificate is for `role`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, role: Role, sink: RefusalSink) -> Self {
        Self::any_of(inner, vec![role], sink)
    }

    /// Accepts clients signed by `inner`'s roots whose certificate is for one of `roles`.
    pub fn any_of(inner: Arc<dyn ClientCertVerifier>, roles: Vec<Role>, sink: RefusalSink) -> Self {
        RoleClientVerifier {
            inner,
            roles,
            sink,
            mandatory: false,
            revoked: None,
        }
    }

    /// Like [`RoleClientVerifier::any_of`], refusing at the handshake a client without a
    /// certificate (for a server with nothing to tell such a client).
    pub fn requiring(mut self) -> Self {
        self.mandatory = true;
        self
    }

    /// Also refuses a certificate that `revoked` lists (as it is at each handshake).
    pub fn revoking(mut self, revoked: RevokedList) -> Self {
        self.revoked = Some(revoked);
        self
    }
}

impl ClientCertVerifier for RoleClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| (self.sink)(Refusal::from_rustls(e), &e.to_string()))?;
        check_role(end_entity, &self.roles).map_err(|(reason, detail)| {
            (self.sink)(reason, &detail);
            role_error()
        })?;
        if let Some(revoked) = &self.revoked {
            check_revoked(end_entity, revoked).map_err(|detail| {
                (self.sink)(Refusal::Revoked, &detail);
                revoked_error()
            })?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Client-side verifier: webpki chain and name check plus a role check on the server.
pub struct RoleServerVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    role: Role,
    name: Option<ServerName<'static>>,
    revoked: Option<RevokedList>,
}

impl fmt::Debug for RoleServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleServerVerifier")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl RoleServerVerifier {
    /// Accepts servers signed by `inner`'s roots whose certificate is for `role`.
    pub fn new(inner: Arc<dyn ServerCertVerifier>, role: Role) -> Self {
        RoleServerVerifier {
            inner,
            role,
            name: None,
            revoked: None,
        }
    }

    /// Like [`RoleServerVerifier::new`], but checks the certificate for `name` whatever
    /// address the client dialled (an operator gives coordinators by IP address; every
    /// coordinator certificate carries the group's shared name).
    pub fn for_name(
        inner: Arc<dyn ServerCertVerifier>,
        role: Role,
        name: ServerName<'static>,
    ) -> Self {
        RoleServerVerifier {
            inner,
            role,
            name: Some(name),
            revoked: None,
        }
    }

    /// Also refuses a server whose certificate `revoked` lists (as it is at each handshake).
    pub fn revoking(mut self, revoked: RevokedList) -> Self {
        self.revoked = Some(revoked);
        self
    }
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let server_name = self.name.as_ref().unwrap_or(server_name);
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_role(end_entity, &[self.role]).map_err(|(_, detail)| {
            tracing::warn!("refusing server: {detail}");
            role_error()
        })?;
        if let Some(revoked) = &self.revoked {
            check_revoked(end_entity, revoked).map_err(|detail| {
                tracing::warn!("refusing server: {detail}");
                revoked_error()
            })?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
