//! Limits every API request meets before a route sees it, on both listeners:
//!
//! - its `Host` header names this coordinator: an IP address, `localhost`, the name every
//!   coordinator certificate carries (`coordinator.understudy`) or a name listed in
//!   `[http] names`. A page that rebinds its own DNS name to a coordinator's address
//!   (DNS rebinding) sends its own name, and is refused (421);
//! - its body is at most [`MAX_BODY`] bytes ([`MAX_BACKUP`] for a backup being restored),
//!   refused with 413 naming the limit, and arrives whole within [`BODY_TIME`] (408).
//!
//! Slow headers and handshakes are bounded where connections are served (`https.rs`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use understudy_common::tls::COORDINATOR_SAN;

use crate::backup::MAX_BACKUP;

/// The largest request body, except a backup being restored.
pub const MAX_BODY: usize = 1 << 20;
/// How long a request's body may take to arrive once its header has.
pub const BODY_TIME: Duration = Duration::from_secs(30);

/// What the middleware holds: the names, besides IP addresses, `localhost` and the
/// coordinators' shared name, that requests may give in their `Host` header
/// (`[http] names`, lower case), and how long a body may take.
#[derive(Debug, Clone)]
pub struct Limits {
    names: Arc<Vec<String>>,
    body_time: Duration,
}

impl Limits {
    /// With the configured names and [`BODY_TIME`].
    pub fn new(names: &[String]) -> Self {
        Limits {
            names: Arc::new(names.iter().map(String::as_str).map(canonical).collect()),
            body_time: BODY_TIME,
        }
    }
}

fn canonical(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a `Host` header value (with or without a port) names this coordinator.
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // "[v6]" or "[v6]:port"
        Some(rest) => match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || tail.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            Some(_) => return false,
            None => host,
        },
    };
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = canonical(name);
    name == "localhost" || name == COORDINATOR_SAN || names.contains(&name)
}

/// The body limit of a request to `method path`.
pub fn body_limit(method: &Method, path: &str) -> usize {
    if method == Method::POST && path == "/v1/restore" {
        MAX_BACKUP
    } else {
        MAX_BODY
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The middleware: checks the Host, then reads the body within its limits.
pub async fn limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the request has no Host header".into(),
            )
        }
        Some(h) if !host_allowed(&h, &limits.names) => {
            tracing::warn!(host = %h, path = %req.uri().path(), "refused a request for another host name");
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {h:?} is not a name of this coordinator; give its IP address, \
                     {COORDINATOR_SAN}, or add the name to [http] names in its config"
                ),
            );
        }
        Some(_) => {}
    }
    let cap = body_limit(req.method(), req.uri().path());
    let too_large = |method: &Method, path: &str| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {cap} bytes, the limit of {method} {path}"),
        )
    };
    // A body announced larger than the limit is refused before a byte of it is read.
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > cap as u64) {
        return too_large(req.method(), req.uri().path());
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limits.body_time, axum::body::to_bytes(body, cap)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(&parts.method, parts.uri.path()),
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}",
                    limits.body_time
                ),
            )
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_our_names_pass_other_names_do_not() {
        let names = vec!["coord-1.example.org".to_owned()];
        for ok in [
            "10.0.0.1",
            "10.0.0.1:7441",
            "[::1]:7441",
            "[fe80::1]",
            "localhost:7441",
            "coordinator.understudy:7441",
            "Coord-1.Example.Org.",
            "coord-1.example.org:7441",
        ] {
            assert!(host_allowed(ok, &names), "{ok} refused");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:7441",
            "10.0.0.1.evil.example.com",
            "[::1]x",
            "[nonsense]:7441",
            "10.0.0.1:notaport",
            "",
        ] {
            assert!(!host_allowed(bad, &names), "{bad} allowed");
        }
    }

    /// A body that never sends a byte.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    async fn answer(limits: Limits, req: Request) -> (StatusCode, String) {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/v1/workloads",
                axum::routing::post(
                    |b: axum::body::Bytes| async move { format!("{} bytes", b.len()) },
                ),
            )
            .layer(axum::middleware::from_fn_with_state(limits, limit));
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(host: &str, body: Body) -> Request {
        Request::post("/v1/workloads")
            .header(header::HOST, host)
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_is_refused_for_another_host_a_large_body_or_a_silent_one() {
        let limits = Limits {
            names: Arc::new(vec![]),
            body_time: Duration::from_millis(50),
        };
        let (s, b) = answer(limits.clone(), post("10.1.2.3:7441", Body::from("{}"))).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "2 bytes"));
        let (s, b) = answer(
            limits.clone(),
            post("attacker.example:7441", Body::from("{}")),
        )
        .await;
        assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
        assert!(
            b.contains("attacker.example") && b.contains("[http] names"),
            "{b}"
        );
        let big = vec![b'x'; MAX_BODY + 1];
        let (s, b) = answer(limits.clone(), post("10.1.2.3", Body::from(big))).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(b.contains(&MAX_BODY.to_string()), "{b}");
        let (s, b) = answer(limits, post("10.1.2.3", Body::new(Silent))).await;
        assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{b}");
    }

    #[test]
    fn only_a_restored_backup_may_be_large() {
        assert_eq!(body_limit(&Method::POST, "/v1/restore"), MAX_BACKUP);
        assert_eq!(body_limit(&Method::POST, "/v1/workloads"), MAX_BODY);
        assert_eq!(body_limit(&Method::GET, "/v1/restore"), MAX_BODY);
    }
}
