//! The enrollment API: join tokens (`POST`/`GET /v1/tokens`, admin) and `POST /v1/join`,
//! which a host without a certificate calls with a token and a certificate request for a
//! key it made itself; the coordinator signs it with the cluster CA (`[enrollment]`) and
//! spends the token, both under one lock so that a token joins one host once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use understudy_common::protocol::RenewRequest;
use understudy_common::tls::ca::{sign_request, PemPair, Validity};
use understudy_common::tls::identity::validate_host_name;
use understudy_common::tls::Role;

use super::auth::Caller;
use super::workloads::{err, ApiError};
use super::{wall_ms, Shared};
use crate::tokens::{self, JoinToken, TokenView};

/// What a coordinator needs to sign joining hosts' certificates (from `[enrollment]`).
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The cluster CA, key included.
    pub ca: Arc<PemPair>,
    /// How long a signed certificate is valid.
    pub cert_lifetime: Duration,
}

/// Largest certificate request accepted (an ECDSA one is under 1 KiB).
const MAX_CSR: usize = 16 * 1024;

/// Spending tokens is serialised: check and mark as one step.
static SPENDING: Mutex<()> = Mutex::new(());

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// How long it may be spent (`1h`, `30m`; at most 7 days).
    pub ttl: String,
    /// The role of the certificate it buys (default and today only `agent`).
    #[serde(default)]
    pub role: Option<String>,
    /// The only host name it may be spent for; needed to re-enroll a known host.
    #[serde(default)]
    pub host: Option<String>,
}

/// The answer to `POST /v1/tokens`: the token (shown this once) and its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    /// `ID.SECRET`, for `understudy-agent join --token`.
    pub token: String,
    /// Its record, without the secret.
    pub record: TokenView,
}

/// `POST /v1/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token.
    pub token: String,
    /// The host's name (the certificate's).
    pub name: String,
    /// A PEM certificate request for the host's key.
    pub csr: String,
}

/// The answer to `POST /v1/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// The host's certificate (PEM).
    pub cert: String,
    /// Until when it is valid (seconds since the Unix epoch).
    pub not_after_unix: i64,
}

/// The routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{id}", axum::routing::delete(forget))
        .route("/v1/join", post(join))
        .route("/v1/renew", post(renew_caller))
}

/// Renews the caller's own certificate (a person's or a tool's on the operator API, which
/// the CLI does two thirds through its lifetime): signs the request's key for the name and
/// role of the certificate the caller presented, for the configured lifetime. A revoked
/// certificate never gets here (the API's guard refuses it).
async fn renew_caller(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    b: Result<Json<RenewRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Joined>, ApiError> {
    let req = body(b)?;
    let Some(axum::Extension(Caller {
        name: Some(name),
        role: Some(role),
        ..
    })) = caller
    else {
        return Err(err(401, "renewing needs the certificate to renew"));
    };
    match renew(&shared, &name, role, &req.csr) {
        Ok((cert, validity)) => Ok(Json(Joined {
            cert,
            not_after_unix: validity.not_after.unix_timestamp(),
        })),
        Err(e @ RenewError::NotSigning) => Err(err(409, e.to_string())),
        Err(e) => Err(err(400, e.to_string())),
    }
}

/// Why a renewal was not signed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// This coordinator holds no CA key.
    #[error("this coordinator does not sign certificates: its config has no [enrollment] ca_key")]
    NotSigning,
    /// The certificate request is too large or not valid.
    #[error("csr: {0}")]
    Request(String),
}

fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| err(400, e.body_text()))
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    err(
        503,
        format!("the join tokens could not be read or written: {e}"),
    )
}

async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let all = shared.store().tokens().map_err(store_err)?;
    Ok(Json(all.iter().map(TokenView::from).collect()))
}

async fn forget(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let known = {
        let _g = SPENDING.lock().unwrap_or_else(|e| e.into_inner());
        shared.store().forget_token(&id).map_err(store_err)?
    };
    if !known {
        return Err(err(404, format!("no join token {id:?}")));
    }
    let by = caller.map_or_else(|| "an unknown caller".to_owned(), |c| c.who());
    shared.event(
        "token",
        (None, None),
        format!("{by} deleted join token {id}: it can no longer be used"),
        Vec::new(),
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn create(
    State(shared): State<Arc<Shared>>,
    caller: Option<axum::Extension<Caller>>,
    req: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let req = body(req)?;
    let ttl = humantime::parse_duration(&req.ttl)
        .map_err(|e| err(400, format!("ttl: {:?}: {e}", req.ttl)))?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if !(1000..=tokens::MAX_TTL_MS).contains(&ttl_ms) {
        return Err(err(
            400,
            format!("ttl: {} is not between 1s and 7days", req.ttl),
        ));
    }
    let role = match req.role.as_deref().unwrap_or("agent") {
        "agent" => Role::Agent,
        other => {
            return Err(err(
                400,
                format!("role: {other:?}: join tokens are for agents (role agent); coordinators join a group with 'understudy cluster join'"),
            ))
        }
    };
    if let Some(h) = &req.host {
        validate_host_name(h).map_err(|e| err(400, format!("host: {e}")))?;
    }
    let mut random = [0u8; tokens::ID_BYTES + tokens::SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| err(503, "no randomness from the operating system for the token"))?;
    let by = caller.map_or_else(|| "an unknown caller".to_owned(), |c| c.who());
    let now = wall_ms();
    let (token, record) = tokens::create(
        tokens::Request {
            role,
            host: req.host.clone(),
            ttl_ms,
        },
        &by,
        now,
        &random,
    );
    let stale: Vec<String> = {
        let _g = SPENDING.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<String> = shared
            .store()
            .tokens()
            .map_err(store_err)?
            .into_iter()
            .filter(|t| tokens::stale(t, now))
            .map(|t| t.id)
            .collect();
        shared
            .store()
            .save_token(&record, &stale)
            .map_err(store_err)?;
        stale
    };
    shared.event(
        "token",
        (req.host.as_deref(), None),
        format!(
            "{by} made join token {} for role {role} ({}), valid for {}{}",
            record.id,
            req.host
                .as_deref()
                .map_or("any new host".to_owned(), |h| format!("host {h}")),
            humantime::format_duration(Duration::from_millis(ttl_ms)),
            if stale.is_empty() {
                String::new()
            } else {
                format!("; forgot {} spent or expired", stale.len())
            }
        ),
        Vec::new(),
    );
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            token,
            record: TokenView::from(&record),
        }),
    ))
}

async fn join(
    State(shared): State<Arc<Shared>>,
    req: Result<Json<JoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Joined>, ApiError> {
    let req = body(req)?;
    let Some(enrollment) = shared.enrollment() else {
        return Err(err(
            503,
            "this coordinator does not sign certificates: its config has no [enrollment] ca_key",
        ));
    };
    validate_host_name(&req.name).map_err(|e| err(400, format!("name: {e}")))?;
    if req.csr.len() > MAX_CSR {
        return Err(err(400, format!("csr: larger than {MAX_CSR} bytes")));
    }
    let refused = |r: tokens::Refusal| err(403, r.to_string());
    let (id, _) = tokens::parse(&req.token).map_err(refused)?;

    let _g = SPENDING.lock().unwrap_or_else(|e| e.into_inner());
    let now = wall_ms();
    let record: Option<JoinToken> = shared
        .store()
        .tokens()
        .map_err(store_err)?
        .into_iter()
        .find(|t| t.id == id);
    let mut record = tokens::check(record.as_ref(), &req.token, &req.name, now)
        .map_err(refused)?
        .clone();
    // A token made for any host cannot take the name of one the coordinator knows (it
    // would stand in for it); re-enrolling a known host takes a token made for it.
    if record.host.is_none() && shared.hosts().iter().any(|h| h.name == req.name) {
        return Err(err(
            409,
            format!(
                "name: {} is a host this coordinator knows; re-enroll it with a token made for it ('understudy token create --host {}')",
                req.name, req.name
            ),
        ));
    }
    let validity = Validity::from_now(enrollment.cert_lifetime);
    let cert = sign_request(&enrollment.ca, &req.csr, &req.name, record.role, validity)
        .map_err(|e| err(400, format!("csr: {e}")))?;
    record.used = Some((req.name.clone(), now));
    shared.store().save_token(&record, &[]).map_err(store_err)?;
    drop(_g);
    shared.event(
        "join",
        (Some(&req.name), None),
        format!(
            "{} joined with token {} (made by {}); its {} certificate is valid until {}",
            req.name, record.id, record.created_by, record.role, validity.not_after
        ),
        Vec::new(),
    );
    Ok(Json(Joined {
        cert,
        not_after_unix: validity.not_after.unix_timestamp(),
    }))
}

/// Signs a renewal for `name` (the caller's verified certificate names it, in `role`): the
/// public key of `csr`, for the configured lifetime; the certificate and its validity.
pub fn renew(
    shared: &Shared,
    name: &str,
    role: Role,
    csr: &str,
) -> Result<(String, Validity), RenewError> {
    let enrollment = shared.enrollment().ok_or(RenewError::NotSigning)?;
    if csr.len() > MAX_CSR {
        return Err(RenewError::Request(format!("larger than {MAX_CSR} bytes")));
    }
    let validity = Validity::from_now(enrollment.cert_lifetime);
    let cert = sign_request(&enrollment.ca, csr, name, role, validity)
        .map_err(|e| RenewError::Request(e.to_string()))?;
    shared.event(
        "renew",
        (Some(name), None),
        format!(
            "{name} renewed its {role} certificate (with a key of its own making), valid until {}",
            validity.not_after
        ),
        Vec::new(),
    );
    Ok((cert, validity))
}
