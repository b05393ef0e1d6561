//! Who the CLI is to the coordinator's HTTPS API: the cluster CA it checks the coordinator
//! against and the client certificate it presents. Each file comes from its flag
//! (`--ca`, `--cert`, `--key`), else the environment (`UNDERSTUDY_CA`, `UNDERSTUDY_CERT`,
//! `UNDERSTUDY_KEY`), else `~/.config/understudy/` (`ca.crt`, `client.crt`, `client.key`;
//! `$XDG_CONFIG_HOME` when set). Without a client certificate the CLI still connects, and
//! the coordinator answers everything but `/v1/health` with 401.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use understudy_common::exit;
use understudy_common::tls::https::api_client_config;

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
static AGENT: OnceLock<ureq::Agent> = OnceLock::new();

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
    AGENT
        .get_or_init(|| match build() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(exit::CONFIG);
            }
        })
        .clone()
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
