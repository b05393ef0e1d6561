//! Loading a host's CA, certificate and key from PEM files named in its config.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::identity::{read_identity, PeerIdentity, Role};

/// The `[tls]` section of every understudy config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate that every peer must be signed by.
    pub ca: PathBuf,
    /// This host's certificate.
    pub cert: PathBuf,
    /// This host's private key.
    pub key: PathBuf,
}

/// Everything needed to build TLS configs, read and checked.
#[derive(Debug)]
pub struct LoadedTls {
    /// Trust anchors: the cluster CA.
    pub roots: RootCertStore,
    /// This host's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// This host's private key.
    pub key: PrivateKeyDer<'static>,
    /// This host's identity, read from its own certificate.
    pub identity: PeerIdentity,
}

/// Why the TLS files could not be used. Each variant names the config key and file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file could not be read.
    #[error("tls.{key}: cannot read {}: {source}", path.display())]
    Read {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the expected kind.
    #[error("tls.{key}: {} holds no {what}: {reason}", path.display())]
    Pem {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("tls.key: {} is not the key of the certificate {} ({reason})", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// What rustls found.
        reason: String,
    },
    /// The certificate is for another role than this program needs.
    #[error("tls.cert: {} is a certificate for role {found}, but this program needs role {expected}", path.display())]
    WrongRole {
        /// The file.
        path: PathBuf,
        /// Role in the certificate (or "none").
        found: String,
        /// Role required.
        expected: Role,
    },
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    /// Reads and checks the three files; the certificate must be for `role`.
    pub fn load(&self, role: Role) -> Result<LoadedTls, TlsFileError> {
        let pem_err = |key, path: &Path, what, reason: String| TlsFileError::Pem {
            key,
            path: path.to_owned(),
            what,
            reason,
        };

        let ca_bytes = read("ca", &self.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_bytes) {
            let cert = cert.map_err(|e| pem_err("ca", &self.ca, "certificate", e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| pem_err("ca", &self.ca, "CA certificate", e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(pem_err(
                "ca",
                &self.ca,
                "certificate",
                "file is empty".into(),
            ));
        }

        let cert_bytes = read("cert", &self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("cert", &self.cert, "certificate", e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| pem_err("cert", &self.cert, "certificate", "file is empty".into()))?;
        let identity = read_identity(leaf)
            .map_err(|e| pem_err("cert", &self.cert, "certificate", e.to_string()))?;
        if identity.role != Some(role) {
            return Err(TlsFileError::WrongRole {
                path: self.cert.clone(),
                found: identity.role.map_or("none".into(), |r| r.to_string()),
                expected: role,
            });
        }

        let key_bytes = read("key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| pem_err("key", &self.key, "private key", e.to_string()))?;
        // The same check rustls makes when a server starts, made here so that `validate`
        // refuses a mismatched pair instead of the service failing later.
        rustls::sign::CertifiedKey::from_der(
            chain.clone(),
            key.clone_key(),
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| TlsFileError::KeyMismatch {
            key: self.key.clone(),
            cert: self.cert.clone(),
            reason: e.to_string(),
        })?;

        Ok(LoadedTls {
            roots,
            chain,
            key,
            identity,
        })
    }
}
