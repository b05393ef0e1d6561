//! Reading a host's name and role out of a certificate.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Runs workloads and shadows them; connects to coordinators and to other agents.
    Agent,
    /// Member of the coordinator group; accepts agents.
    Coordinator,
    /// A person or tool that reads the operator API.
    Viewer,
    /// Also migrates, drains, cordons, manages maintenance, and creates and deletes
    /// workloads that run as a user other than root.
    Operator,
    /// Also creates root workloads, manages the group's membership and restores backups.
    Admin,
}

impl Role {
    /// The spelling used in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Coordinator => "coordinator",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The operator API's roles, least privileged first.
    pub const API: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Whether this role may do what `needed` may, on the operator API (viewer < operator <
    /// admin; host roles grant nothing there).
    pub fn allows(self, needed: Role) -> bool {
        let rank = |r: Role| Role::API.iter().position(|a| *a == r);
        matches!((rank(self), rank(needed)), (Some(a), Some(b)) if a >= b)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "coordinator" => Ok(Role::Coordinator),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected agent, coordinator, viewer, operator or admin"
            )),
        }
    }
}

/// Who a verified peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Host name from the certificate's subject CN.
    pub name: String,
    /// Role from the certificate's subject OU, if it names a known role.
    pub role: Option<Role>,
    /// End of the certificate's validity, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Start of the certificate's validity, seconds since the Unix epoch.
    pub not_before_unix: i64,
}

/// Why a certificate's identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    /// The subject has no common name.
    #[error("certificate subject has no common name")]
    NoCommonName,
}

/// Reads the identity from a DER certificate. Does not verify it.
pub fn read_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(IdentityError::NoCommonName)?
        .to_owned();
    let role = subject
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .find_map(|ou| ou.parse().ok());
    Ok(PeerIdentity {
        name,
        role,
        not_after_unix: parsed.validity().not_after.timestamp(),
        not_before_unix: parsed.validity().not_before.timestamp(),
    })
}

/// Checks that `name` is usable as a host name in certificates: 1–63 characters of
/// lowercase letters, digits and `-`, not starting or ending with `-`.
pub fn validate_host_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > 63
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "host name {name:?} must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}

/// The host name of the peer of a QUIC connection, from its verified certificate; `None`
/// if it presented none.
pub fn peer_name(conn: &quinn::Connection) -> Option<String> {
    peer_identity(conn).map(|id| id.name)
}

/// The identity in the certificate the peer of `conn` presented (already verified).
pub fn peer_identity(conn: &quinn::Connection) -> Option<PeerIdentity> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    read_identity(certs.first()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_roles_are_ordered_and_host_roles_grant_nothing_there() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Coordinator.allows(Role::Viewer));
        assert!(!Role::Agent.allows(Role::Viewer));
    }

    #[test]
    fn host_names() {
        assert!(validate_host_name("host-a").is_ok());
        assert!(validate_host_name("Host_A").is_err());
        assert!(validate_host_name("").is_err());
        assert!(validate_host_name("-a").is_err());
    }
}
