//! A coordinator that holds the cluster CA's key (`[enrollment]`) renews its own
//! certificate two thirds through its lifetime, as agents do theirs: a new key made here,
//! a certificate for it signed with the CA, both put in place in a crash-safe order, and
//! presented from the next handshake on (QUIC, the HTTPS API, the group's peer links)
//! without a restart.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::files::{LoadedTls, TlsFiles};
use understudy_common::tls::live::LiveKey;
use understudy_common::tls::Role;

use super::join::Enrollment;

/// After a failed renewal, the next try.
const RETRY: Duration = Duration::from_secs(30);

use understudy_common::tls::now_unix;

/// Renews this coordinator's certificate whenever it is due, until `stop`.
pub fn spawn(
    files: TlsFiles,
    tls: &LoadedTls,
    signer: Enrollment,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(
        files,
        tls.live.clone(),
        tls.identity.clone(),
        signer,
        stop,
    ))
}

async fn run(
    files: TlsFiles,
    live: Arc<LiveKey>,
    identity: understudy_common::tls::PeerIdentity,
    signer: Enrollment,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = identity.name.clone();
    let mut due = renew_at_of(&identity);
    loop {
        let wait = Duration::from_secs(u64::try_from(due - now_unix()).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match renew(&files, &live, &name, &signer) {
            Ok(id) => {
                due = renew_at_of(&id);
                tracing::info!(
                    valid_until = id.not_after_unix,
                    "this coordinator's certificate was renewed (a new key made here)"
                );
            }
            Err(e) => {
                tracing::warn!(
                    "renewing this coordinator's certificate failed, retrying in {RETRY:?}: {e}"
                );
                due = now_unix() + i64::try_from(RETRY.as_secs()).unwrap_or(30);
            }
        }
    }
}

/// When `id`'s certificate is due for renewal.
fn renew_at_of(id: &understudy_common::tls::PeerIdentity) -> i64 {
    understudy_common::tls::renew_at(id.not_before_unix, id.not_after_unix)
}

fn renew(
    files: &TlsFiles,
    live: &LiveKey,
    name: &str,
    signer: &Enrollment,
) -> Result<understudy_common::tls::PeerIdentity, String> {
    let pair = issue(
        &signer.ca,
        name,
        Role::Coordinator,
        Validity::from_now(signer.cert_lifetime),
    )
    .map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("rcgen made an empty certificate")?;
    let id = understudy_common::tls::identity::read_identity(leaf).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    files
        .install_renewed(&pair.key_pem, &pair.cert_pem)
        .map_err(|(p, e)| format!("{}: {e}", p.display()))?;
    live.replace(chain, key).map_err(|e| e.to_string())?;
    Ok(id)
}
