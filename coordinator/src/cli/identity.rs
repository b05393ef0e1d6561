//! Who the CLI is to the coordinator's HTTPS API: the cluster CA it checks the coordinator
//! against and the client certificate it presents. Each file comes from its flag
//! (`--ca`, `--cert`, `--key`), else the environment (`UNDERSTUDY_CA`, `UNDERSTUDY_CERT`,
//! `UNDERSTUDY_KEY`), else `~/.config/understudy/` (`ca.crt`, `client.crt`, `client.key`;
//! `$XDG_CONFIG_HOME` when set). Without a client certificate the CLI still connects, and
//! the coordinator answers everything but `/v1/health` with 401.
//!
//! Renewal: at its first HTTPS request, an invocation whose certificate is two thirds
//! through its lifetime makes a new key, has the coordinator sign it (`POST /v1/renew`,
//! with `[enrollment]` there) and replaces both files the way agents do (`*.next`, then
//! renamed key first), then goes on with the new certificate. A renewal that fails is a
//! warning; the old certificate serves until it expires.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use understudy_common::exit;
use understudy_common::tls::files::TlsFiles;
use understudy_common::tls::https::api_client_config;
use understudy_common::tls::identity::read_identity;
use understudy_common::tls::{now_unix, renew_at};

use understudy_common::protocol::RenewRequest;

use crate::server::join::Joined;

/// The `--ca`, `--cert` and `--key` flags (each also read from the environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IdentityArgs {
    /// The cluster CA certificate that the coordinator's must be signed by.
    #[arg(long, env = "UNDERSTUDY_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// This operator's client certificate (`understudy ca issue --role operator …`).
    #[arg(long, env = "UNDERSTUDY_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long, env = "UNDERSTUDY_KEY", global = true)]
    pub key: Option<PathBuf>,
}

static ARGS: OnceLock<IdentityArgs> = OnceLock::new();
/// The HTTPS agent, replaced once if the certificate is renewed.
static AGENT: Mutex<Option<ureq::Agent>> = Mutex::new(None);
/// Whether this invocation has looked at renewing (it does once, at its first request).
static RENEWAL_LOOKED_AT: AtomicBool = AtomicBool::new(false);

/// The client certificate's files and validity, as loaded.
#[derive(Debug, Clone)]
struct Held {
    files: TlsFiles,
    name: String,
    not_before: i64,
    not_after: i64,
}

static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// Remembers the flags for the API calls this invocation makes.
pub fn set(args: IdentityArgs) {
    let _ = ARGS.set(args);
}

fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("understudy"))
}

/// A file given explicitly, or the default one when it exists.
fn pick(given: &Option<PathBuf>, default: &str) -> Option<(PathBuf, bool)> {
    match given {
        Some(p) => Some((p.clone(), true)),
        None => config_dir()
            .map(|d| d.join(default))
            .filter(|p| p.exists())
            .map(|p| (p, false)),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    understudy_common::config::read_capped(path)
        .map(String::into_bytes)
        .map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The HTTPS agent for this invocation; prints why and exits 78 when the files are
/// missing or unusable.
pub fn agent() -> ureq::Agent {
    let mut slot = AGENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert_with(|| match build() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(exit::CONFIG);
        }
    })
    .clone()
}

/// The HTTPS agent for a request to `base`, after renewing the client certificate first
/// if it is due (once per invocation).
pub fn agent_for(base: &str) -> ureq::Agent {
    let agent = agent();
    if RENEWAL_LOOKED_AT.swap(true, Ordering::SeqCst) {
        return agent;
    }
    let held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(held) = held else {
        return agent;
    };
    let now = now_unix();
    if now < renew_at(held.not_before, held.not_after) || now >= held.not_after {
        return agent;
    }
    match renew(base, &held) {
        Ok(until) => match build() {
            Ok(renewed) => {
                eprintln!(
                    "renewed the client certificate {} (valid until {})",
                    held.files.cert.display(),
                    unix_text(until)
                );
                *AGENT
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(renewed.clone());
                renewed
            }
            Err(e) => {
                eprintln!("renewed the client certificate, but cannot use it: {e}");
                std::process::exit(exit::CONFIG);
            }
        },
        Err(why) => {
            eprintln!(
                "warning: the client certificate {} is due for renewal (valid until {}) but was not renewed: {why}",
                held.files.cert.display(),
                unix_text(held.not_after)
            );
            agent
        }
    }
}

/// Has the coordinator at `base` sign a new key for `held`'s name and role, and installs
/// both; the new certificate's end of validity.
fn renew(base: &str, held: &Held) -> Result<i64, String> {
    let pair = understudy_common::tls::ca::request(&held.name).map_err(|e| e.to_string())?;
    let req = RenewRequest { csr: pair.cert_pem };
    let got: Joined = super::api::post(base, "/v1/renew", &req).map_err(|f| match f {
        super::api::ApiFailure::Unreachable(e) => e,
        super::api::ApiFailure::Refused(status, e) => format!("refused ({status}): {e}"),
        super::api::ApiFailure::Unsettled(e) => e,
    })?;
    held.files
        .install_renewed(&pair.key_pem, &got.cert)
        .map_err(|(path, e)| format!("{}: {e}", path.display()))?;
    Ok(got.not_after_unix)
}

fn unix_text(secs: i64) -> String {
    super::ops::time_text(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
}

fn build() -> Result<ureq::Agent, String> {
    let args = ARGS.get().cloned().unwrap_or_default();
    let (ca, _) = pick(&args.ca, "ca.crt").ok_or(
        "no cluster CA to check the coordinator with: give --ca FILE, set UNDERSTUDY_CA, or put it at ~/.config/understudy/ca.crt",
    )?;
    let mut roots = rustls::RootCertStore::empty();
    let pem = read(&ca, "CA certificate")?;
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA certificate {}: holds no certificate",
            ca.display()
        ));
    }
    let identity = match (
        pick(&args.cert, "client.crt"),
        pick(&args.key, "client.key"),
    ) {
        (None, None) => None,
        (Some((cert, _)), Some((key, _))) => {
            let files = TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            };
            // A renewal an earlier invocation left half done is finished or undone.
            files.finish_renewal();
            let pem = read(&cert, "client certificate")?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "client certificate {}: holds no certificate",
                    cert.display()
                ));
            }
            let pem = read(&key, "client key")?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("client key {}: {e}", key.display()))?;
            if let Ok(id) = read_identity(&chain[0]) {
                *HELD
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Held {
                    files,
                    name: id.name,
                    not_before: id.not_before_unix,
                    not_after: id.not_after_unix,
                });
            }
            Some((chain, key))
        }
        (Some((c, _)), None) => {
            return Err(format!(
                "client certificate {} has no key: give --key FILE or set UNDERSTUDY_KEY",
                c.display()
            ))
        }
        (None, Some((k, _))) => {
            return Err(format!(
                "client key {} has no certificate: give --cert FILE or set UNDERSTUDY_CERT",
                k.display()
            ))
        }
    };
    let tls = api_client_config(roots, identity).map_err(|e| format!("client TLS: {e}"))?;
    Ok(ureq::AgentBuilder::new()
        .redirects(0)
        .tls_config(Arc::clone(&tls))
        .build())
}
