//! A host's certificate and key as its TLS configurations use them, replaceable while they
//! are in use: every server and client configuration built from one [`LiveKey`] presents
//! whatever it holds at each new handshake, so a renewed certificate takes effect without
//! restarting anything. Connections already made keep the certificate they were made with.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate and key new handshakes present.
#[derive(Debug)]
pub struct LiveKey {
    current: RwLock<Arc<CertifiedKey>>,
}

impl LiveKey {
    /// From a certificate chain and its key (which must match).
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, rustls::Error> {
        Ok(LiveKey {
            current: RwLock::new(Arc::new(certified(chain, key)?)),
        })
    }

    /// Presents `chain` and `key` from the next handshake on.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), rustls::Error> {
        let new = Arc::new(certified(chain, key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// What the next handshake presents.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    let ck = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())?;
    Ok(ck)
}

impl ResolvesServerCert for LiveKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for LiveKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
