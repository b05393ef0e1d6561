//! What operators say about hosts (cordon, drain, maintenance windows) and the event log,
//! as the running coordinator keeps them: in memory for the engine and the API, persisted
//! on every change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{wall_ms, Shared};
use crate::admin::{Drain, HostAdmin};
use crate::decide::Window;
use crate::events::{Event, Filter, Log};
use crate::revocation::Revocation;
use crate::store::StoreError;
use crate::workloads::WorkloadState;

/// The operators' records and the event log.
#[derive(Debug, Default)]
pub struct Admin {
    hosts: BTreeMap<String, HostAdmin>,
    events: Log,
    next_window: u64,
    revocations: BTreeMap<String, Revocation>,
    /// When a revoked host's refusal was last audited (at most once a minute each).
    refusals_audited: BTreeMap<String, std::time::Instant>,
}

impl Admin {
    /// As loaded from the store.
    pub fn new(hosts: Vec<HostAdmin>, events: Vec<Event>, revocations: Vec<Revocation>) -> Self {
        let next_window = hosts
            .iter()
            .flat_map(|h| h.maintenance.iter().map(|(id, _)| *id))
            .max()
            .map_or(1, |m| m + 1);
        Admin {
            hosts: hosts.into_iter().map(|h| (h.host.clone(), h)).collect(),
            events: Log::new(events),
            next_window,
            revocations: revocations
                .into_iter()
                .map(|r| (r.host.clone(), r))
                .collect(),
            refusals_audited: BTreeMap::new(),
        }
    }
}

/// A maintenance window as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowView {
    /// Its id (for `maintenance remove`).
    pub id: u64,
    /// The host.
    pub host: String,
    /// The window.
    pub window: Window,
}

/// A drain as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// The host.
    pub host: String,
    /// Whether the drain still runs.
    pub running: bool,
    /// The drain, while it runs.
    pub drain: Option<Drain>,
    /// Workloads whose primary is still the host.
    pub primaries_left: Vec<String>,
    /// Workloads whose shadow is still the host.
    pub shadows_left: Vec<String>,
    /// Per workload on the host when the drain started: where it is now, and the live
    /// phase or last outcome of its move.
    pub workloads: Vec<(String, String)>,
}

impl Shared {
    fn admin(&self) -> std::sync::MutexGuard<'_, Admin> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What operators said about `host`.
    pub fn host_admin(&self, host: &str) -> HostAdmin {
        self.admin()
            .hosts
            .get(host)
            .cloned()
            .unwrap_or_else(|| HostAdmin::new(host))
    }

    /// Every host's record.
    pub fn host_admins(&self) -> Vec<HostAdmin> {
        self.admin().hosts.values().cloned().collect()
    }

    /// Every revocation, by host.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.admin().revocations.values().cloned().collect()
    }

    /// Refuses from now on every certificate of `host` issued before now, and closes its
    /// connection. Persisted (replicated) before it takes effect.
    pub fn revoke(&self, host: &str, by: &str) -> Result<Revocation, StoreError> {
        let r = Revocation {
            host: host.to_owned(),
            at_unix_ms: wall_ms(),
            by: by.to_owned(),
        };
        self.store.save_revocation(&r)?;
        self.admin().revocations.insert(host.to_owned(), r.clone());
        self.close_revoked(host);
        Ok(r)
    }

    /// The revocation that refuses a certificate of `host` valid from `not_before_unix`;
    /// audits the refusal (at most once a minute per host).
    pub fn refused_by_revocation(&self, host: &str, not_before_unix: i64) -> Option<Revocation> {
        let mut a = self.admin();
        let r = a
            .revocations
            .get(host)
            .filter(|r| r.refuses(host, not_before_unix))?
            .clone();
        let audit = a
            .refusals_audited
            .get(host)
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
        if audit {
            a.refusals_audited
                .insert(host.to_owned(), std::time::Instant::now());
        }
        drop(a);
        if audit {
            self.event(
                "audit",
                (Some(host), None),
                format!(
                    "refused {host}: its certificate was revoked by {} (issue it a new one to let it back)",
                    r.by
                ),
                Vec::new(),
            );
        }
        Some(r)
    }

    /// Changes what operators said about `host` with `f`, persists it, and returns it.
    pub fn update_host_admin(&self, host: &str, f: impl FnOnce(&mut HostAdmin)) -> HostAdmin {
        let mut a = self.admin();
        let rec = a
            .hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostAdmin::new(host));
        f(rec);
        rec.forget_past(wall_ms());
        let rec = rec.clone();
        if rec.is_empty() {
            a.hosts.remove(host);
        }
        drop(a);
        if let Err(e) = self.store.save_host_admin(&rec) {
            tracing::error!(
                host,
                "could not persist what operators said about the host: {e}"
            );
        }
        rec
    }

    /// Adds a maintenance window on `host`; returns its id.
    pub fn add_window(&self, host: &str, window: Window) -> u64 {
        let id = {
            let mut a = self.admin();
            let id = a.next_window;
            a.next_window += 1;
            id
        };
        self.update_host_admin(host, |h| h.maintenance.push((id, window)));
        id
    }

    /// Removes maintenance window `id`; false if there is none.
    pub fn remove_window(&self, id: u64) -> bool {
        let host = self
            .admin()
            .hosts
            .values()
            .find(|h| h.maintenance.iter().any(|(i, _)| *i == id))
            .map(|h| h.host.clone());
        let Some(host) = host else {
            return false;
        };
        self.update_host_admin(&host, |h| h.maintenance.retain(|(i, _)| *i != id));
        true
    }

    /// Every maintenance window that has not ended.
    pub fn windows(&self) -> Vec<WindowView> {
        let now = wall_ms();
        let mut out: Vec<WindowView> = self
            .admin()
            .hosts
            .values()
            .flat_map(|h| {
                h.maintenance
                    .iter()
                    .filter(|(_, w)| w.start_ms.saturating_add(w.duration_ms) > now)
                    .map(|(id, w)| WindowView {
                        id: *id,
                        host: h.host.clone(),
                        window: w.clone(),
                    })
            })
            .collect();
        out.sort_by_key(|w| (w.window.start_ms, w.id));
        out
    }

    /// Records an event (and logs it).
    pub fn event(
        &self,
        kind: &str,
        subject: (Option<&str>, Option<&str>),
        message: String,
        inputs: Vec<(String, String)>,
    ) {
        tracing::info!(
            kind,
            host = subject.0.unwrap_or(""),
            workload = subject.1.unwrap_or(""),
            "{message}"
        );
        self.metrics.event(kind);
        let (event, _) = self
            .admin()
            .events
            .push(wall_ms(), kind, subject, message, inputs);
        if let Err(e) = self.store.append_event(&event) {
            tracing::error!("could not persist an event: {e}");
        }
    }

    /// The newest events that pass `filter`, oldest first, at most `limit`.
    pub fn events(&self, filter: &Filter, limit: usize) -> Vec<Event> {
        self.admin().events.read(filter, limit)
    }

    /// Where `host`'s drain stands.
    pub fn drain_status(&self, host: &str) -> DrainStatus {
        let admin = self.host_admin(host);
        let records = self.workload_list();
        // A workload that exited, failed or is lost runs nowhere: there is nothing to move.
        let primaries_left = records
            .iter()
            .filter(|r| {
                r.primary == host
                    && matches!(
                        r.state,
                        WorkloadState::Starting | WorkloadState::Running | WorkloadState::Migrating
                    )
            })
            .map(|r| r.spec.name.clone())
            .collect();
        let shadows_left = records
            .iter()
            .filter(|r| r.is_shadow(host))
            .map(|r| r.spec.name.clone())
            .collect();
        let names = admin
            .drain
            .as_ref()
            .map(|d| d.workloads.clone())
            .unwrap_or_default();
        let workloads = names
            .iter()
            .map(|n| {
                let rec = records.iter().find(|r| &r.spec.name == n);
                let live = super::switchover::live_status(self, n);
                let text = match (rec, live) {
                    (None, _) => "deleted".to_owned(),
                    (Some(_), Some(m)) if m.outcome.is_none() => {
                        format!("moving to {}: {}", m.to, m.phase.name())
                    }
                    (Some(r), _) if r.primary != host => format!("on {}", r.primary),
                    (Some(r), Some(m)) => format!(
                        "on {} ({}{})",
                        r.primary,
                        m.outcome.unwrap_or_default(),
                        m.error.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                    (Some(r), None) => format!("on {}, waiting", r.primary),
                };
                (n.clone(), text)
            })
            .collect();
        DrainStatus {
            host: host.to_owned(),
            running: admin.drain.is_some(),
            drain: admin.drain,
            primaries_left,
            shadows_left,
            workloads,
        }
    }
}
