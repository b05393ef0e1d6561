//! Serving the operator API: over HTTPS, each connection's TLS completed here (client
//! certificates of the cluster CA, `understudy_common::tls::https`) and the caller's
//! verified identity attached to each of its requests; over the optional plain listener,
//! with no identity (the API's guard lets it reach only `/metrics` and `/v1/health`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use understudy_common::tls::identity::read_identity;

use super::auth::Caller;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a client has to send a request's header, once connected or between requests.
const HEADER: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `stop` turns true: over TLS with `tls`, or plain
/// HTTP (no caller identity) without it.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or similar: wait rather than spin.
                    tracing::warn!("API listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                connection(TokioIo::new(tcp), app, None).await;
                return;
            };
            match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let caller = Caller::of(stream.get_ref().1.peer_certificates(), addr);
                    connection(TokioIo::new(stream), app, Some(caller)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "API TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "API TLS handshake timed out"),
            }
        });
    }
}

async fn connection<I>(io: TokioIo<I>, app: Router, caller: Option<Caller>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(c) = &caller {
            req.extensions_mut().insert(c.clone());
        }
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER)
        .serve_connection(io, svc);
    if let Err(e) = conn.await {
        tracing::debug!("API connection ended: {e}");
    }
}

impl Caller {
    /// Who presented `certs` (already verified by the TLS layer) from `addr`.
    pub fn of(
        certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
        addr: SocketAddr,
    ) -> Self {
        let id = certs
            .and_then(|c| c.first())
            .and_then(|c| read_identity(c).ok());
        Caller {
            name: id.as_ref().map(|i| i.name.clone()),
            not_before_unix: id.as_ref().map(|i| i.not_before_unix),
            role: id.and_then(|i| i.role),
            addr,
        }
    }
}
