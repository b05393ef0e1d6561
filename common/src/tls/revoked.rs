//! Revoked host certificates as every party checks them. `understudy host revoke HOST`
//! refuses each certificate of HOST that the cluster CA issued before the revocation; a
//! certificate is told by its start of validity, which certificates understudy issues put
//! [`BACKDATE_SECS`] before the moment of issue, in whole seconds.
//!
//! The coordinator keeps revocations in its store; it sends the whole list to each agent
//! when the agent registers and again on every revocation ([`Revocations`]). An agent holds
//! it in a [`RevokedList`], which its data plane's certificate verifiers consult at every
//! handshake and its open connections watch, so that a revoked peer is refused and cut off.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ca::BACKDATE_SECS;

/// One host's revocation, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedHost {
    /// The host whose certificates are refused.
    pub host: String,
    /// When it was revoked, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl RevokedHost {
    /// Whether it refuses a certificate of `host` valid from `not_before_unix` (seconds).
    pub fn refuses(&self, host: &str, not_before_unix: i64) -> bool {
        let at_secs = i64::try_from(self.at_unix_ms / 1000).unwrap_or(i64::MAX);
        // Certificates count time in whole seconds: one starting in the second of the
        // revocation may have been issued before it, and is refused too.
        host == self.host && not_before_unix <= at_secs.saturating_sub(BACKDATE_SECS)
    }
}

/// Sent by the coordinator to an agent on a unidirectional stream of its own, after the
/// agent registers and whenever a host is revoked: every revocation (the list replaces the
/// one the agent had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// The revoked hosts.
    pub hosts: Vec<RevokedHost>,
}

/// The revocations an agent knows, shared by its verifiers and its connections. Cloning
/// shares the list.
#[derive(Debug, Clone)]
pub struct RevokedList {
    tx: Arc<tokio::sync::watch::Sender<Arc<Vec<RevokedHost>>>>,
}

impl Default for RevokedList {
    fn default() -> Self {
        RevokedList {
            tx: Arc::new(tokio::sync::watch::Sender::new(Arc::new(Vec::new()))),
        }
    }
}

impl RevokedList {
    /// Adds `hosts` to the list, keeping each host's latest revocation; connections
    /// watching it are told. Revocations are never lifted (a certificate issued after one
    /// passes it), so a list from a coordinator that is behind cannot undo one.
    pub fn merge(&self, hosts: Vec<RevokedHost>) {
        self.tx.send_modify(|list| {
            let mut merged: Vec<RevokedHost> = list.as_ref().clone();
            for h in hosts {
                match merged.iter_mut().find(|m| m.host == h.host) {
                    Some(m) => m.at_unix_ms = m.at_unix_ms.max(h.at_unix_ms),
                    None => merged.push(h),
                }
            }
            *list = Arc::new(merged);
        });
    }

    /// The revocation refusing a certificate of `host` valid from `not_before_unix`.
    pub fn refusing(&self, host: &str, not_before_unix: i64) -> Option<RevokedHost> {
        self.tx
            .borrow()
            .iter()
            .find(|r| r.refuses(host, not_before_unix))
            .cloned()
    }

    /// Told of every later change to the list.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<Vec<RevokedHost>>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_issued_before_are_refused_and_later_ones_accepted() {
        let at_secs = 1_800_000_000_i64;
        let r = RevokedHost {
            host: "host-b".into(),
            at_unix_ms: (at_secs as u64) * 1000 + 250,
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

    #[tokio::test]
    async fn a_merged_list_refuses_wakes_its_watchers_and_is_never_undone() {
        let list = RevokedList::default();
        let mut rx = list.watch();
        assert!(list.refusing("host-b", 0).is_none());
        let at = |ms| RevokedHost {
            host: "host-b".into(),
            at_unix_ms: ms,
        };
        // 2001-09-09 and ten days later, in seconds of certificate start.
        let (early, late) = (1_000_000_000_000, 1_000_864_000_000);
        let issued_between = 1_000_432_000 - BACKDATE_SECS;
        list.clone().merge(vec![at(late)]);
        rx.changed().await.unwrap();
        assert!(list.refusing("host-b", issued_between).is_some());
        assert!(list.refusing("host-a", 0).is_none());
        // An older or empty list (from a coordinator that is behind) undoes nothing.
        list.merge(vec![at(early)]);
        list.merge(Vec::new());
        assert!(list.refusing("host-b", issued_between).is_some());
    }
}
