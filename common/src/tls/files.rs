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
    /// The certificate and key handshakes present (replaced when the certificate renews).
    pub live: std::sync::Arc<super::live::LiveKey>,
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

/// Where a renewal writes the new version of `path` before renaming it into place.
pub fn next_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".next");
    path.with_file_name(name)
}

impl TlsFiles {
    /// Finishes a certificate renewal a crash interrupted, or discards it: the renewal
    /// writes `CERT.next`, then `KEY.next`, then renames the key, then the certificate.
    /// A `CERT.next` left over is renamed into place if it is the certificate of the key
    /// it would sit beside (the new one, if that was renamed already); anything else left
    /// over is removed, so the files in place are always a matching pair.
    pub fn finish_renewal(&self) {
        let (key_next, cert_next) = (next_path(&self.key), next_path(&self.cert));
        if !cert_next.exists() {
            let _ = std::fs::remove_file(&key_next);
            return;
        }
        let key = if key_next.exists() {
            &key_next
        } else {
            &self.key
        };
        let matches = (|| {
            let chain = CertificateDer::pem_slice_iter(&std::fs::read(&cert_next).ok()?)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let k = PrivateKeyDer::from_pem_slice(&std::fs::read(key).ok()?).ok()?;
            super::live::LiveKey::from_der(chain, k).ok()
        })()
        .is_some();
        let done = matches
            && (key == &self.key || std::fs::rename(&key_next, &self.key).is_ok())
            && std::fs::rename(&cert_next, &self.cert).is_ok();
        if !done {
            let _ = std::fs::remove_file(&key_next);
            let _ = std::fs::remove_file(&cert_next);
        }
    }

    /// Puts a renewed key and certificate in place: both are written beside their targets
    /// as `*.next` (certificate first), then the key is renamed, then the certificate; a
    /// crash in between is finished or undone by [`TlsFiles::finish_renewal`]. On failure,
    /// the file it failed on.
    pub fn install_renewed(
        &self,
        key_pem: &str,
        cert_pem: &str,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        let (key_next, cert_next) = (next_path(&self.key), next_path(&self.cert));
        write_synced(&cert_next, cert_pem.as_bytes(), 0o644)?;
        write_synced(&key_next, key_pem.as_bytes(), 0o600)?;
        rename_synced(&key_next, &self.key)?;
        rename_synced(&cert_next, &self.cert)
    }

    /// Reads and checks the three files; the certificate must be for `role`. A renewal
    /// left half done is finished or discarded first ([`TlsFiles::finish_renewal`]).
    pub fn load(&self, role: Role) -> Result<LoadedTls, TlsFileError> {
        self.finish_renewal();
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
        let live = super::live::LiveKey::from_der(chain.clone(), key.clone_key()).map_err(|e| {
            TlsFileError::KeyMismatch {
                key: self.key.clone(),
                cert: self.cert.clone(),
                reason: e.to_string(),
            }
        })?;

        Ok(LoadedTls {
            roots,
            chain,
            key,
            identity,
            live: std::sync::Arc::new(live),
        })
    }
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), (PathBuf, std::io::Error)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e| (path.to_owned(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)
}

fn rename_synced(from: &Path, to: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    std::fs::rename(from, to).map_err(|e| (to.to_owned(), e))?;
    if let Some(dir) = to.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::{create_ca, issue, PemPair, Validity};

    fn setup(dir: &Path) -> (TlsFiles, PemPair) {
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        let old = issue(&ca, "host-a", Role::Agent, Validity::days_from_now(1)).unwrap();
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("host.crt"),
            key: dir.join("host.key"),
        };
        std::fs::write(&files.ca, &ca.cert_pem).unwrap();
        std::fs::write(&files.cert, &old.cert_pem).unwrap();
        std::fs::write(&files.key, &old.key_pem).unwrap();
        (files, ca)
    }

    fn not_after(files: &TlsFiles) -> i64 {
        files.load(Role::Agent).unwrap().identity.not_after_unix
    }

    #[test]
    fn a_renewal_interrupted_anywhere_leaves_a_matching_pair() {
        let d = tempfile::tempdir().unwrap();
        let (files, ca) = setup(d.path());
        let old_end = not_after(&files);
        let new = issue(&ca, "host-a", Role::Agent, Validity::days_from_now(3)).unwrap();
        let new_end = {
            let d2 = tempfile::tempdir().unwrap();
            let (f2, _) = setup(d2.path());
            std::fs::write(&f2.cert, &new.cert_pem).unwrap();
            std::fs::write(&f2.key, &new.key_pem).unwrap();
            std::fs::write(&f2.ca, &ca.cert_pem).unwrap();
            not_after(&f2)
        };
        assert!(new_end > old_end);
        let (kn, cn) = (next_path(&files.key), next_path(&files.cert));
        let put = |p: &Path, s: &str| std::fs::write(p, s).unwrap();
        let old_cert = std::fs::read_to_string(&files.cert).unwrap();
        let old_key = std::fs::read_to_string(&files.key).unwrap();
        let reset = || {
            put(&files.cert, &old_cert);
            put(&files.key, &old_key);
        };

        // Only the new certificate written: it is not the key's; the old pair stays.
        put(&cn, &new.cert_pem);
        assert_eq!(not_after(&files), old_end);
        assert!(!cn.exists());

        // Both written, nothing renamed: finished.
        put(&cn, &new.cert_pem);
        put(&kn, &new.key_pem);
        assert_eq!(not_after(&files), new_end);
        assert!(!cn.exists() && !kn.exists());

        // The key renamed, the certificate not: finished.
        reset();
        put(&files.key, &new.key_pem);
        put(&cn, &new.cert_pem);
        assert_eq!(not_after(&files), new_end);

        // A new key written and the certificate not yet: the key is dropped.
        reset();
        put(&kn, &new.key_pem);
        assert_eq!(not_after(&files), old_end);
        assert!(!kn.exists());

        // The whole install.
        files.install_renewed(&new.key_pem, &new.cert_pem).unwrap();
        assert_eq!(not_after(&files), new_end);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
