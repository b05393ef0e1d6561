//! Cluster identity and mutual TLS.
//!
//! Every certificate is issued by the cluster CA and names one host (subject CN and a DNS
//! SAN) and one role (subject OU). A peer's identity is read from its verified certificate;
//! nothing a peer says in a message can change it. Coordinators also carry the shared name
//! [`COORDINATOR_SAN`], so agents can verify any member of the coordinator group without
//! knowing its host name.

pub mod ca;
pub mod endpoint;
pub mod files;
pub mod https;
pub mod identity;
pub mod live;
pub mod revoked;
pub mod verify;

pub use identity::{PeerIdentity, Role};
pub use verify::Refusal;

/// DNS name every coordinator certificate carries and agents verify.
pub const COORDINATOR_SAN: &str = "coordinator.understudy";

/// Seconds since the Unix epoch now, the clock certificates' validity is counted in.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed:
/// two thirds of the way from its issue to its end. Certificates understudy makes start
/// [`ca::BACKDATE_SECS`] before they are issued; one whose whole span is not longer than that
/// is taken as issued at its start.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let span = not_after - not_before;
    let issued = if span > ca::BACKDATE_SECS {
        not_before + ca::BACKDATE_SECS
    } else {
        not_before
    };
    issued + (not_after - issued) * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca::BACKDATE_SECS;

    #[test]
    fn renewal_is_two_thirds_from_issue() {
        // understudy's certificates: issued BACKDATE_SECS after their start.
        let issued = 1_800_000_000;
        assert_eq!(renew_at(issued - BACKDATE_SECS, issued + 120), issued + 80);
        let year = 365 * 86_400;
        assert_eq!(
            renew_at(issued - BACKDATE_SECS, issued + year),
            issued + year * 2 / 3
        );
        // One not backdated and shorter than the backdate: from its start.
        assert_eq!(renew_at(issued, issued + 90), issued + 60);
    }
}
