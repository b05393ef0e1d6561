//! Revoked certificates as the coordinator records them, by certificate name (a host's,
//! a person's or a tool's: one namespace of the cluster CA): records of its store,
//! replicated with the rest of its state, sent to every agent and checked by the operator
//! API's guard. Which certificates a revocation refuses is [`RevokedHost::refuses`]: a
//! certificate issued for the name from the next second after the revocation on is
//! accepted, so re-enrolling a host or re-issuing a person's certificate needs no further
//! step.

use serde::{Deserialize, Serialize};
use understudy_common::tls::revoked::RevokedHost;

/// One host's revocation (a newer one replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The host whose certificates are refused.
    pub host: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Who revoked them (the caller's certificate name and role).
    pub by: String,
}

impl Revocation {
    /// Whether it refuses a certificate of `host` valid from `not_before_unix` (seconds).
    pub fn refuses(&self, host: &str, not_before_unix: i64) -> bool {
        self.for_agents().refuses(host, not_before_unix)
    }

    /// The revocation as agents are told it.
    pub fn for_agents(&self) -> RevokedHost {
        RevokedHost {
            host: self.host.clone(),
            at_unix_ms: self.at_unix_ms,
        }
    }
}
