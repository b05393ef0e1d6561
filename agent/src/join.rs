//! `understudy-agent join --coordinator ADDR --token T`: enrolls this host. It makes the
//! host's key here, sends the coordinator a certificate request with the token (over
//! HTTPS, checking the coordinator against the cluster CA already at `tls.ca`), and puts
//! the signed certificate and the key where the agent's config says (`tls.cert`,
//! `tls.key`). The key never leaves the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde::{Deserialize, Serialize};
use understudy_common::exit;
use understudy_common::tls::files::TlsFiles;
use understudy_common::tls::Role;

/// How long the coordinator has to answer.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects (a group member to its leader) followed.
const MAX_REDIRECTS: usize = 3;
/// Largest answer read.
const MAX_ANSWER: u64 = 256 * 1024;

/// The `join` subcommand's arguments.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The coordinator's API address (HOST:PORT, as in `understudy --coordinator`).
    #[arg(long)]
    pub coordinator: String,
    /// The token from `understudy token create`.
    #[arg(long, env = "UNDERSTUDY_JOIN_TOKEN")]
    pub token: String,
    /// This host's name in the cluster (default: its hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Path to agent.toml (its `[tls]` says where the CA is and where the certificate and
    /// key go).
    #[arg(long, short, default_value = "/etc/understudy/agent.toml")]
    pub config: PathBuf,
    /// Replace a certificate and key already there.
    #[arg(long)]
    pub force: bool,
}

/// Only the part of agent.toml that join needs (the rest is checked when the agent runs).
#[derive(Debug, Deserialize)]
struct Partial {
    tls: TlsFiles,
}

#[derive(Debug, Serialize)]
struct JoinRequest<'a> {
    token: &'a str,
    name: &'a str,
    csr: &'a str,
}

#[derive(Debug, Deserialize)]
struct Joined {
    cert: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
}

/// Runs `join`; returns the exit code.
pub fn run(args: &JoinArgs) -> i32 {
    match join(args) {
        Ok(msg) => {
            understudy_common::outln!("{msg}");
            0
        }
        Err((code, msg)) => {
            eprintln!("understudy-agent join: {msg}");
            code
        }
    }
}

fn hostname() -> Result<String, String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read this host's name ({e}); give --name"))?;
    Ok(raw.trim().to_ascii_lowercase())
}

fn join(args: &JoinArgs) -> Result<String, (i32, String)> {
    let text = understudy_common::config::read_capped(&args.config)
        .map_err(|e| (exit::CONFIG, format!("{}: {e}", args.config.display())))?;
    let tls = understudy_common::config::parse::<Partial>(&text)
        .map_err(|(k, e)| (exit::CONFIG, format!("{}: {k}: {e}", args.config.display())))?
        .tls;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => hostname().map_err(|e| (exit::USAGE, e))?,
    };
    understudy_common::tls::identity::validate_host_name(&name)
        .map_err(|e| (exit::USAGE, format!("--name: {e}")))?;
    for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
        if path.exists() && !args.force {
            return Err((
                exit::CANT_CREATE,
                format!(
                    "{key}: {} already exists; this host has a certificate (pass --force to replace it)",
                    path.display()
                ),
            ));
        }
    }
    let roots = read_roots(&tls.ca)?;
    let tls_client = understudy_common::tls::https::api_client_config(roots, None)
        .map_err(|e| (exit::CONFIG, format!("tls.ca: {e}")))?;
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(TIMEOUT)
        .tls_config(tls_client)
        .build();

    let request = understudy_common::tls::ca::request(&name)
        .map_err(|e| (exit::SOFTWARE, format!("cannot make a key: {e}")))?;
    let body = JoinRequest {
        token: &args.token,
        name: &name,
        csr: &request.cert_pem,
    };
    let base = if args.coordinator.contains("://") {
        args.coordinator.clone()
    } else {
        format!("https://{}", args.coordinator)
    };
    let cert = post_join(
        &agent,
        &format!("{}/v1/join", base.trim_end_matches('/')),
        &body,
    )?;

    // The answer must be a certificate of this name and role for the key made here.
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| {
        (
            exit::DATA_ERR,
            format!("the coordinator's answer is not a certificate: {e}"),
        )
    })?;
    let id = understudy_common::tls::identity::read_identity(&der).map_err(|e| {
        (
            exit::DATA_ERR,
            format!("the coordinator's certificate: {e}"),
        )
    })?;
    if id.name != name || id.role != Some(Role::Agent) {
        return Err((
            exit::DATA_ERR,
            format!(
                "the coordinator signed a certificate for {} ({:?}), not for agent {name}; nothing written",
                id.name, id.role
            ),
        ));
    }
    tls.install_renewed(&request.key_pem, &cert)
        .map_err(|(path, e)| (exit::CANT_CREATE, format!("{}: {e}", path.display())))?;
    tls.load(Role::Agent).map_err(|e| {
        (
            exit::DATA_ERR,
            format!("the new certificate does not load: {e}"),
        )
    })?;
    Ok(format!(
        "joined as {name}: certificate {}, key {} (made here, mode 0600); start the agent (systemctl start understudy-agent)",
        tls.cert.display(),
        tls.key.display()
    ))
}

fn read_roots(ca: &Path) -> Result<rustls::RootCertStore, (i32, String)> {
    let pem = understudy_common::config::read_capped(ca).map_err(|e| {
        (
            exit::CONFIG,
            format!(
                "tls.ca: {}: {e}; copy the cluster CA certificate (ca.crt, public) there first: it is how this host knows the coordinator",
                ca.display()
            ),
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|e| (exit::CONFIG, format!("tls.ca: {}: {e}", ca.display())))?;
        roots
            .add(c)
            .map_err(|e| (exit::CONFIG, format!("tls.ca: {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err((
            exit::CONFIG,
            format!("tls.ca: {}: holds no certificate", ca.display()),
        ));
    }
    Ok(roots)
}

fn post_join(
    agent: &ureq::Agent,
    url: &str,
    body: &JoinRequest<'_>,
) -> Result<String, (i32, String)> {
    let mut url = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let resp = match agent.post(&url).send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                return Err((
                    exit::UNAVAILABLE,
                    format!("cannot reach the coordinator at {url}: {e}"),
                ))
            }
        };
        let status = resp.status();
        if matches!(status, 307 | 308) {
            match resp.header("location") {
                Some(to) => {
                    url = to.to_owned();
                    continue;
                }
                None => break,
            }
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(resp.into_reader(), MAX_ANSWER),
            &mut text,
        )
        .map_err(|e| (exit::UNAVAILABLE, format!("{url}: reading the answer: {e}")))?;
        if status == 200 {
            return serde_json::from_str::<Joined>(&text)
                .map(|j| j.cert)
                .map_err(|e| (exit::DATA_ERR, format!("{url}: the answer: {e}")));
        }
        let why = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        let code = if status == 403 || status == 409 {
            exit::NO_PERM
        } else {
            exit::UNAVAILABLE
        };
        return Err((code, format!("refused ({status}): {why}")));
    }
    Err((
        exit::UNAVAILABLE,
        format!("{url}: too many redirects (no leader?)"),
    ))
}
