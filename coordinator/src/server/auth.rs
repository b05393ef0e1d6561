//! Who may do what on the operator API, and the audit trail of it.
//!
//! Every HTTPS request carries its caller (set by `https.rs` from the verified client
//! certificate). [`check`] decides from the method and path alone, without I/O: `/v1/health`
//! is open; reads need `viewer`; changes need `operator`; restoring a backup, taking one (it
//! holds every workload's environment) and changing the group's membership need `admin`.
//! Creating a workload that runs as root also needs `admin` (checked by the create handler,
//! which has the spec). A request on the plain listener has no caller and reaches only
//! `/metrics` and `/v1/health`. Every change, and every refusal, is written to the event
//! log as an `audit` event: who, from where, what, and the answer.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use understudy_common::tls::Role;

use super::http::ErrorBody;
use super::Shared;

/// Who sent a request over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The name in the client certificate; `None` without one.
    pub name: Option<String>,
    /// The certificate's role.
    pub role: Option<Role>,
    /// The certificate's start of validity (Unix seconds), which revocations are judged by.
    pub not_before_unix: Option<i64>,
    /// The client's address.
    pub addr: SocketAddr,
}

impl Caller {
    /// How the audit log names the caller.
    pub fn who(&self) -> String {
        match (&self.name, self.role) {
            (Some(n), Some(r)) => format!("{n} ({r})"),
            (Some(n), None) => format!("{n} (no role)"),
            _ => "a client without a certificate".into(),
        }
    }

    /// Whether the caller holds `role` or a stronger one.
    pub fn may(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r.allows(role))
    }
}

/// What the API's config says about who may do what beyond the roles.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Whether root workloads may be created at all (by admins).
    pub allow_root_workloads: bool,
}

/// The role `method` on `path` needs; `None`: open to anyone.
pub fn needed(method: &Method, path: &str) -> Option<Role> {
    let read = method == Method::GET || method == Method::HEAD;
    if read && path == "/v1/health" {
        return None;
    }
    // A host joining has no certificate yet: its token is checked instead.
    if method == Method::POST && path == "/v1/join" {
        return None;
    }
    // Anyone with a certificate renews their own.
    if method == Method::POST && path == "/v1/renew" {
        return Some(Role::Viewer);
    }
    let revoke = (path.starts_with("/v1/hosts/") || path.starts_with("/v1/certificates/"))
        && path.ends_with("/revoke");
    let admin_only = path == "/v1/backup"
        || path == "/v1/restore"
        || path.starts_with("/v1/cluster/")
        || path == "/v1/tokens"
        || path.starts_with("/v1/tokens/")
        || revoke;
    if admin_only {
        return Some(Role::Admin);
    }
    Some(if read { Role::Viewer } else { Role::Operator })
}

/// Whether the request may go on; otherwise the status and why, naming what is missing.
pub fn check(
    caller: Option<&Caller>,
    method: &Method,
    path: &str,
) -> Result<(), (StatusCode, String)> {
    let Some(caller) = caller else {
        let plain_ok = (method == Method::GET || method == Method::HEAD)
            && (path == "/metrics" || path == "/v1/health");
        return if plain_ok {
            Ok(())
        } else {
            Err((
                StatusCode::NOT_FOUND,
                format!("this plain-HTTP listener serves only /metrics and /v1/health; {path} is on the HTTPS API"),
            ))
        };
    };
    let Some(role) = needed(method, path) else {
        return Ok(());
    };
    if caller.name.is_none() {
        return Err((
            StatusCode::UNAUTHORIZED,
            format!("{method} {path} needs a client certificate of the cluster CA with role {role} or above (understudy ca issue --role {role})"),
        ));
    }
    if !caller.may(role) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "{} may not {method} {path}: that needs role {role} or above",
                caller.who()
            ),
        ));
    }
    Ok(())
}

/// The host and workload an API path is about, for the audit event's subject.
fn subject(path: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "workloads", name, ..] => (None, Some((*name).to_owned())),
        ["v1", "hosts", host, ..] => (Some((*host).to_owned()), None),
        _ => (None, None),
    }
}

/// Writes one audit event to `shared`'s event log.
pub fn audit(
    shared: &Shared,
    who: &str,
    from: Option<SocketAddr>,
    method: &Method,
    path: &str,
    status: StatusCode,
    detail: &str,
) {
    let (host, workload) = subject(path);
    let mut message = format!("{who}: {method} {path}: {}", status.as_u16());
    if !detail.is_empty() {
        message.push_str(&format!(" ({detail})"));
    }
    let mut inputs = vec![
        ("who".into(), who.to_owned()),
        ("method".into(), method.to_string()),
        ("path".into(), path.to_owned()),
        ("status".into(), status.as_u16().to_string()),
    ];
    if let Some(a) = from {
        inputs.push(("from".into(), a.to_string()));
    }
    shared.event(
        "audit",
        (host.as_deref(), workload.as_deref()),
        message,
        inputs,
    );
}

/// The second (since the Unix epoch) of the last handshake refusal audited: at most one a
/// second is written, so a flood of bad handshakes cannot flood the log (each is still
/// logged by the coordinator).
static LAST_HANDSHAKE_AUDIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Audits a client certificate refused at the TLS handshake (another CA, expired, a host
/// role).
pub fn audit_handshake(shared: &Shared, reason: understudy_common::tls::Refusal, detail: &str) {
    use std::sync::atomic::Ordering;
    let now = super::wall_ms() / 1000;
    if LAST_HANDSHAKE_AUDIT.swap(now, Ordering::Relaxed) == now {
        return;
    }
    shared.event(
        "audit",
        (None, None),
        format!(
            "refused a client certificate at the TLS handshake ({}): {detail}",
            reason.label()
        ),
        vec![
            ("who".into(), "a client certificate".into()),
            ("status".into(), "handshake refused".into()),
            ("reason".into(), reason.label().into()),
        ],
    );
}

fn refusal(status: StatusCode, msg: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: msg,
            unsettled: false,
        }),
    )
        .into_response()
}

/// One request as the guard sees it.
struct Asked {
    caller: Option<Caller>,
    method: Method,
    path: String,
}

impl Asked {
    fn of(req: &Request) -> Self {
        Asked {
            caller: req.extensions().get::<Caller>().cloned(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
        }
    }

    fn check(&self) -> Result<(), (StatusCode, String)> {
        check(self.caller.as_ref(), &self.method, &self.path)
    }

    /// Refuses (401) a caller whose certificate a revocation of its name refuses.
    fn not_revoked(&self, shared: &Shared) -> Result<(), (StatusCode, String)> {
        let Some(Caller {
            name: Some(name),
            not_before_unix: Some(not_before),
            ..
        }) = &self.caller
        else {
            return Ok(());
        };
        match shared.refused_by_revocation(name, *not_before) {
            None => Ok(()),
            Some(r) => Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "the certificate of {name} was revoked by {} (an admin can issue a new one: understudy ca issue)",
                    r.by
                ),
            )),
        }
    }

    fn mutating(&self) -> bool {
        !(self.method == Method::GET || self.method == Method::HEAD)
    }

    /// Audits the answer `status` (with `detail`) to a caller over HTTPS.
    fn audit(&self, shared: &Shared, status: StatusCode, detail: &str) {
        if let Some(c) = &self.caller {
            let who = c.who();
            audit(
                shared,
                &who,
                Some(c.addr),
                &self.method,
                &self.path,
                status,
                detail,
            );
        }
    }
}

/// The API's guard (axum middleware): refuses what the caller may not do and audits
/// every change and every refusal.
pub async fn guard(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let asked = Asked::of(&req);
    if let Err((status, msg)) = asked.check().and_then(|()| asked.not_revoked(&shared)) {
        asked.audit(&shared, status, &msg);
        return refusal(status, msg);
    }
    let resp = next.run(req).await;
    if !asked.mutating() {
        return resp;
    }
    if resp.status().is_success() || resp.status().is_redirection() {
        asked.audit(&shared, resp.status(), "");
        return resp;
    }
    // A refusal: its reason goes into the audit event too (error answers are small).
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let reason = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| b.error)
        .unwrap_or_default();
    asked.audit(&shared, parts.status, &reason);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The guard for routes that have no leader's state to audit into (a group's own
/// routes): refuses the same way; the caller's change is logged by the member.
pub async fn guard_unaudited(req: Request, next: Next) -> Response {
    let asked = Asked::of(&req);
    let (method, path) = (&asked.method, &asked.path);
    if let Err((status, msg)) = asked.check() {
        tracing::warn!(%method, %path, status = status.as_u16(), "API request refused: {msg}");
        return refusal(status, msg);
    }
    let resp = next.run(req).await;
    if let (true, Some(c)) = (asked.mutating(), &asked.caller) {
        tracing::info!(who = %c.who(), from = %c.addr, %method, %path, status = resp.status().as_u16(), "API change");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Option<Role>) -> Caller {
        Caller {
            name: role.map(|_| "alice".to_owned()),
            role,
            not_before_unix: Some(0),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    #[test]
    fn roles_decide_by_method_and_path() {
        let get = Method::GET;
        let post = Method::POST;
        let viewer = caller(Some(Role::Viewer));
        let operator = caller(Some(Role::Operator));
        let admin = caller(Some(Role::Admin));
        assert!(check(Some(&viewer), &get, "/v1/workloads").is_ok());
        assert_eq!(
            check(Some(&viewer), &post, "/v1/workloads").unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert!(check(Some(&operator), &post, "/v1/workloads").is_ok());
        assert!(check(Some(&operator), &post, "/v1/hosts/a/drain").is_ok());
        assert_eq!(
            check(Some(&operator), &post, "/v1/restore").unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            check(Some(&operator), &get, "/v1/backup").unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            check(Some(&operator), &post, "/v1/cluster/join")
                .unwrap_err()
                .0,
            StatusCode::FORBIDDEN
        );
        assert!(check(Some(&admin), &post, "/v1/restore").is_ok());
        assert!(check(Some(&admin), &post, "/v1/cluster/remove").is_ok());
        // Revoking any name is an admin's; renewing one's own certificate anyone's.
        for path in ["/v1/hosts/a/revoke", "/v1/certificates/alice/revoke"] {
            assert_eq!(
                check(Some(&operator), &post, path).unwrap_err().0,
                StatusCode::FORBIDDEN
            );
            assert!(check(Some(&admin), &post, path).is_ok());
        }
        assert!(check(Some(&viewer), &post, "/v1/renew").is_ok());
        assert_eq!(
            check(Some(&caller(None)), &post, "/v1/renew")
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn without_a_certificate_only_health_and_on_the_plain_listener_only_metrics_too() {
        let anonymous = caller(None);
        let err = check(Some(&anonymous), &Method::GET, "/v1/workloads").unwrap_err();
        assert_eq!(err.0, StatusCode::UNAUTHORIZED);
        assert!(err.1.contains("client certificate"), "{}", err.1);
        assert!(check(Some(&anonymous), &Method::GET, "/v1/health").is_ok());
        assert_eq!(
            check(Some(&anonymous), &Method::GET, "/metrics")
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert!(check(None, &Method::GET, "/metrics").is_ok());
        assert!(check(None, &Method::GET, "/v1/health").is_ok());
        assert_eq!(
            check(None, &Method::GET, "/v1/workloads").unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            check(None, &Method::POST, "/v1/workloads").unwrap_err().0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn host_roles_grant_nothing_on_the_api() {
        let agent = Caller {
            name: Some("host-a".into()),
            role: Some(Role::Agent),
            not_before_unix: Some(0),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        assert_eq!(
            check(Some(&agent), &Method::GET, "/v1/workloads")
                .unwrap_err()
                .0,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn audit_subjects_come_from_the_path() {
        assert_eq!(
            subject("/v1/workloads/web/migrate"),
            (None, Some("web".into()))
        );
        assert_eq!(
            subject("/v1/hosts/host-a/drain"),
            (Some("host-a".into()), None)
        );
        assert_eq!(subject("/v1/maintenance"), (None, None));
    }
}
