//! Join tokens: `understudy token create --ttl 1h` makes one; `understudy-agent join
//! --token T` spends it to have the coordinator sign a certificate for a key made on the
//! host. A token is `ID.SECRET`: the store keeps the id, a hash of the secret (never the
//! secret), its role, an optional host it is for, its expiry and, once spent, who spent it.
//! Whether a token may be spent is decided here, without I/O; the server reads and writes
//! the records and serialises the spending.

use serde::{Deserialize, Serialize};
use understudy_common::tls::Role;

/// Bytes of randomness in a token's id and secret.
pub const ID_BYTES: usize = 6;
/// Bytes of randomness in a token's secret.
pub const SECRET_BYTES: usize = 20;
/// The longest a token may live.
pub const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long a spent or expired token is kept (listed) before it is forgotten.
pub const KEEP_AFTER_MS: u64 = 24 * 3600 * 1000;

/// One join token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Its public half (hex), the store key.
    pub id: String,
    /// blake3 of the secret half (hex).
    pub secret_hash: String,
    /// The role of the certificate it buys (today only `agent`).
    pub role: Role,
    /// The host name it may be spent for; `None`: any name not revoked.
    pub host: Option<String>,
    /// Who made it (certificate name and role).
    pub created_by: String,
    /// When, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Until when it may be spent.
    pub expires_unix_ms: u64,
    /// Once spent: by which host, when.
    pub used: Option<(String, u64)>,
}

/// Why a token was refused. The messages never repeat the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not of the form `ID.SECRET`.
    #[error(
        "token: not a join token (expected ID.SECRET as printed by 'understudy token create')"
    )]
    Malformed,
    /// No such token, or its secret does not match (not told apart, so that ids cannot be
    /// probed).
    #[error("token: unknown token {0} (or not its secret)")]
    Unknown(String),
    /// Spent already.
    #[error("token: {id} was already used by host {by}; a token joins one host once")]
    Used {
        /// The token's id.
        id: String,
        /// Who spent it.
        by: String,
    },
    /// Past its expiry.
    #[error("token: {id} expired {ago_s} s ago; make a new one with 'understudy token create'")]
    Expired {
        /// The token's id.
        id: String,
        /// How long ago.
        ago_s: u64,
    },
    /// Made for another host.
    #[error("name: token {id} is for host {host}, not {asked}")]
    OtherHost {
        /// The token's id.
        id: String,
        /// The host it is for.
        host: String,
        /// The name asked for.
        asked: String,
    },
}

/// Splits `ID.SECRET`.
pub fn parse(token: &str) -> Result<(&str, &str), Refusal> {
    let (id, secret) = token.trim().split_once('.').ok_or(Refusal::Malformed)?;
    let hex = |s: &str, n: usize| s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(id, ID_BYTES) && hex(secret, SECRET_BYTES) {
        Ok((id, secret))
    } else {
        Err(Refusal::Malformed)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its role.
    pub role: Role,
    /// The host it is for, if only one.
    pub host: Option<String>,
    /// How long it may be spent, in milliseconds.
    pub ttl_ms: u64,
}

/// Makes a token from `random` (`ID_BYTES + SECRET_BYTES` random bytes): the string to give
/// the host (shown once) and the record to keep.
pub fn create(
    req: Request,
    by: &str,
    now_ms: u64,
    random: &[u8; ID_BYTES + SECRET_BYTES],
) -> (String, JoinToken) {
    let id = hex(&random[..ID_BYTES]);
    let secret = hex(&random[ID_BYTES..]);
    let record = JoinToken {
        id: id.clone(),
        secret_hash: hash(&secret),
        role: req.role,
        host: req.host,
        created_by: by.to_owned(),
        created_unix_ms: now_ms,
        expires_unix_ms: now_ms.saturating_add(req.ttl_ms),
        used: None,
    };
    (format!("{id}.{secret}"), record)
}

/// Whether `record` (the token whose id `token` names, if the store has one) may be spent
/// now by host `name`; the record if so.
pub fn check<'a>(
    record: Option<&'a JoinToken>,
    token: &str,
    name: &str,
    now_ms: u64,
) -> Result<&'a JoinToken, Refusal> {
    let (id, secret) = parse(token)?;
    let record = record
        .filter(|r| r.id == id)
        .ok_or_else(|| Refusal::Unknown(id.to_owned()))?;
    // blake3's Hash compares in constant time.
    let matches = blake3::Hash::from_hex(&record.secret_hash)
        .is_ok_and(|h| h == blake3::hash(secret.as_bytes()));
    if !matches {
        return Err(Refusal::Unknown(id.to_owned()));
    }
    if let Some((by, _)) = &record.used {
        return Err(Refusal::Used {
            id: id.to_owned(),
            by: by.clone(),
        });
    }
    if now_ms >= record.expires_unix_ms {
        return Err(Refusal::Expired {
            id: id.to_owned(),
            ago_s: (now_ms - record.expires_unix_ms) / 1000,
        });
    }
    if let Some(host) = record.host.as_deref().filter(|h| *h != name) {
        return Err(Refusal::OtherHost {
            id: id.to_owned(),
            host: host.to_owned(),
            asked: name.to_owned(),
        });
    }
    Ok(record)
}

/// Whether a token can be forgotten: spent or expired more than [`KEEP_AFTER_MS`] ago.
pub fn stale(record: &JoinToken, now_ms: u64) -> bool {
    let done = record
        .used
        .as_ref()
        .map_or(record.expires_unix_ms, |(_, at)| *at);
    now_ms.saturating_sub(done) > KEEP_AFTER_MS
}

/// A token as `understudy token list` shows it: everything but the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its id.
    pub id: String,
    /// Its role.
    pub role: Role,
    /// The host it is for, if only one.
    pub host: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// When it expires (ms since the Unix epoch).
    pub expires_unix_ms: u64,
    /// Who spent it, when.
    pub used: Option<(String, u64)>,
}

impl From<&JoinToken> for TokenView {
    fn from(t: &JoinToken) -> Self {
        TokenView {
            id: t.id.clone(),
            role: t.role,
            host: t.host.clone(),
            created_by: t.created_by.clone(),
            expires_unix_ms: t.expires_unix_ms,
            used: t.used.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn token(host: Option<&str>) -> (String, JoinToken) {
        let random = [7u8; ID_BYTES + SECRET_BYTES];
        let req = Request {
            role: Role::Agent,
            host: host.map(str::to_owned),
            ttl_ms: 3_600_000,
        };
        create(req, "alice (admin)", NOW, &random)
    }

    #[test]
    fn a_fresh_token_is_accepted_once_and_its_secret_is_not_kept() {
        let (t, mut rec) = token(None);
        assert!(!format!("{rec:?}").contains(t.split_once('.').unwrap().1));
        assert_eq!(check(Some(&rec), &t, "host-j", NOW + 1000), Ok(&rec));
        rec.used = Some(("host-j".into(), NOW + 1000));
        assert_eq!(
            check(Some(&rec), &t, "host-k", NOW + 2000).cloned(),
            Err(Refusal::Used {
                id: rec.id.clone(),
                by: "host-j".into()
            })
        );
    }

    #[test]
    fn expired_unknown_wrong_secret_and_other_host_are_refused() {
        let (t, rec) = token(Some("host-j"));
        let expired = check(Some(&rec), &t, "host-j", NOW + 3_600_000 + 5_000);
        assert!(
            matches!(expired, Err(Refusal::Expired { ago_s: 5, .. })),
            "{expired:?}"
        );
        assert!(matches!(
            check(None, &t, "host-j", NOW),
            Err(Refusal::Unknown(_))
        ));
        let (id, _) = t.split_once('.').unwrap();
        let wrong = format!("{id}.{}", "0".repeat(2 * SECRET_BYTES));
        assert!(matches!(
            check(Some(&rec), &wrong, "host-j", NOW),
            Err(Refusal::Unknown(_))
        ));
        assert!(matches!(
            check(Some(&rec), &t, "host-k", NOW),
            Err(Refusal::OtherHost { .. })
        ));
        for bad in ["", "abc", "zz.zz", &format!("{id}.short")] {
            assert_eq!(
                check(Some(&rec), bad, "host-j", NOW),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn spent_and_expired_tokens_are_forgotten_a_day_later() {
        let (_, mut rec) = token(None);
        assert!(!stale(&rec, NOW + 3_600_000 + KEEP_AFTER_MS));
        assert!(stale(&rec, NOW + 3_600_000 + KEEP_AFTER_MS + 1));
        rec.used = Some(("h".into(), NOW + 10));
        assert!(stale(&rec, NOW + 10 + KEEP_AFTER_MS + 1));
    }
}
