//! Revoked host certificates. `understudy host revoke HOST` refuses, from then on, every
//! certificate of HOST that the cluster CA issued before the revocation: it is told by the
//! certificate's start of validity, which `understudy ca issue` puts a fixed
//! [`BACKDATE_SECS`] before the moment of issue, in whole seconds. A certificate issued for
//! the host from the next second after the revocation on is accepted, so re-enrolling it
//! needs no further step. Revocations are
//! records of the coordinator's store, replicated with the rest of its state.

use serde::{Deserialize, Serialize};
use understudy_common::tls::ca::BACKDATE_SECS;

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
        let at_secs = i64::try_from(self.at_unix_ms / 1000).unwrap_or(i64::MAX);
        // Certificates count time in whole seconds: one starting in the second of the
        // revocation may have been issued before it, and is refused too.
        host == self.host && not_before_unix <= at_secs.saturating_sub(BACKDATE_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_issued_before_are_refused_and_later_ones_accepted() {
        let at_secs = 1_800_000_000_i64;
        let r = Revocation {
            host: "host-b".into(),
            at_unix_ms: (at_secs as u64) * 1000 + 250,
            by: "alice (admin)".into(),
        };
        // Issued a day before, and a second before: starts BACKDATE_SECS earlier still.
        assert!(r.refuses("host-b", at_secs - 86_400 - BACKDATE_SECS));
        assert!(r.refuses("host-b", at_secs - 1 - BACKDATE_SECS));
        // Issued in the same second: before or after, it cannot be told; refused.
        assert!(r.refuses("host-b", at_secs - BACKDATE_SECS));
        // Issued a second after.
        assert!(!r.refuses("host-b", at_secs + 1 - BACKDATE_SECS));
        // Another host's certificate.
        assert!(!r.refuses("host-a", at_secs - 86_400));
    }
}
