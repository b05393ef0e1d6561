//! Certificate renewal: two thirds through its certificate's lifetime, the agent makes a
//! new key, sends the coordinator it is connected to a certificate request for it (a
//! [`RenewRequest`] on a stream of its own), writes the certificate it gets and the key
//! where `[tls]` says, and presents them from the next handshake on ([`LiveKey`]), without
//! a restart. Connections already made stay up.
//!
//! The two files are replaced in an order a crash cannot leave mismatched
//! ([`TlsFiles::install_renewed`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::{RenewAnswer, RenewRequest, MAX_CONTROL_FRAME, PROTOCOL_VERSION};
use understudy_common::tls::files::{LoadedTls, TlsFiles};
use understudy_common::tls::live::LiveKey;
use understudy_common::tls::renew_at;
use understudy_common::tls::Role;

/// How long the coordinator has to answer a renewal.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);
/// How long after a failed renewal the next is tried (at most).
const RETRY_AFTER_SECS: i64 = 30;

#[derive(Debug)]
struct State {
    /// When the certificate in use is to be renewed (Unix seconds).
    due_unix: i64,
    /// A renewal is under way.
    in_flight: bool,
}

/// Renews this host's certificate when it is due.
#[derive(Debug)]
pub struct Renewer {
    files: TlsFiles,
    live: Arc<LiveKey>,
    name: String,
    state: Mutex<State>,
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The coordinator could not be asked or did not answer.
    #[error("asking the coordinator: {0}")]
    Ask(String),
    /// The coordinator refused.
    #[error("the coordinator refused: {0}")]
    Refused(String),
    /// The certificate it sent is not one for this host and key.
    #[error("the coordinator's certificate: {0}")]
    BadCertificate(String),
    /// The files could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

use understudy_common::tls::now_unix;

impl Renewer {
    /// For the certificate `tls` was loaded with, from `files`.
    pub fn new(files: TlsFiles, tls: &LoadedTls) -> Self {
        let id = &tls.identity;
        Renewer {
            files,
            live: tls.live.clone(),
            name: id.name.clone(),
            state: Mutex::new(State {
                due_unix: renew_at(id.not_before_unix, id.not_after_unix),
                in_flight: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the renewal if it is due and none is under way.
    pub fn claim_if_due(&self) -> bool {
        let mut s = self.state();
        if s.in_flight || now_unix() < s.due_unix {
            return false;
        }
        s.in_flight = true;
        true
    }

    /// Renews over `conn` (a claimed renewal); logs the outcome.
    pub async fn renew(self: Arc<Self>, conn: quinn::Connection) {
        let result = self.renew_once(&conn).await;
        let mut s = self.state();
        s.in_flight = false;
        match result {
            Ok((not_before, not_after)) => {
                s.due_unix = renew_at(not_before, not_after);
                tracing::info!(
                    host = %self.name,
                    valid_until = not_after,
                    next_renewal = s.due_unix,
                    "certificate renewed (a new key made here); new connections present it"
                );
            }
            Err(e) => {
                s.due_unix = now_unix() + RETRY_AFTER_SECS;
                tracing::warn!(host = %self.name, "certificate renewal failed, retrying in {RETRY_AFTER_SECS} s: {e}");
            }
        }
    }

    async fn renew_once(&self, conn: &quinn::Connection) -> Result<(i64, i64), RenewError> {
        let request = understudy_common::tls::ca::request(&self.name)
            .map_err(|e| RenewError::Ask(format!("cannot make a key: {e}")))?;
        let ask = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let req = RenewRequest {
                csr: request.cert_pem.clone(),
            };
            write_frame(&mut send, PROTOCOL_VERSION, &req)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            read_frame::<_, RenewAnswer>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME)
                .await
                .map_err(|e| e.to_string())
        };
        let answer = tokio::time::timeout(ANSWER_LIMIT, ask)
            .await
            .map_err(|_| RenewError::Ask(format!("no answer within {ANSWER_LIMIT:?}")))?
            .map_err(RenewError::Ask)?;
        let cert_pem = match answer {
            RenewAnswer::Renewed(c) => c,
            RenewAnswer::Refused(why) => return Err(RenewError::Refused(why)),
        };
        let bad = |e: String| RenewError::BadCertificate(e);
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let leaf = chain.first().ok_or_else(|| bad("empty".into()))?;
        let id = understudy_common::tls::identity::read_identity(leaf)
            .map_err(|e| bad(e.to_string()))?;
        if id.name != self.name || id.role != Some(Role::Agent) {
            return Err(bad(format!("it is for {} ({:?})", id.name, id.role)));
        }
        let key = PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        // Checks that the certificate is for the key made here before anything is written.
        let check =
            LiveKey::from_der(chain.clone(), key.clone_key()).map_err(|e| bad(e.to_string()))?;
        drop(check);
        self.files
            .install_renewed(&request.key_pem, &cert_pem)
            .map_err(|(path, source)| RenewError::Write { path, source })?;
        self.live
            .replace(chain, key)
            .map_err(|e| bad(e.to_string()))?;
        Ok((id.not_before_unix, id.not_after_unix))
    }
}
