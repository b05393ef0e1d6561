//! The workload side of the coordinator's shared state: the records, the tombstones of
//! deleted workloads, which workloads an operation holds right now (claims), and what
//! reconciliation remembers between inventories. Every change is written to the store
//! under the same lock that orders it, so the store never holds an older change last.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use understudy_common::inventory::Inventory;

use super::{wall_ms, Shared};
use crate::workloads::migration::Migration;
use crate::workloads::reconcile::{reconcile, Fix, Known};
use crate::workloads::{Tombstone, WorkloadRecord, WorkloadState};

/// How long after an operation ends before reconciliation judges the workload again (a
/// report taken before the operation finished may still be on its way).
const SETTLE: Duration = Duration::from_secs(2);

/// Workloads no operation holds, and none ended in the last [`SETTLE`].
fn idle_in(b: &Book) -> BTreeSet<String> {
    let now = Instant::now();
    b.records
        .keys()
        .filter(|n| !b.claims.contains_key(*n))
        .filter(|n| {
            b.settled
                .get(*n)
                .is_none_or(|t| now.duration_since(*t) >= SETTLE)
        })
        .cloned()
        .collect()
}

/// The workload records and what goes with them.
#[derive(Debug)]
pub struct Book {
    records: BTreeMap<String, WorkloadRecord>,
    tombstones: BTreeMap<String, Tombstone>,
    claims: HashMap<String, &'static str>,
    settled: HashMap<String, Instant>,
    absent: HashMap<String, BTreeSet<String>>,
    floors: HashMap<String, u64>,
    /// Failovers that failed in a row, and when the last one did: the next waits
    /// ([`crate::workloads::failover::retry_after`]).
    failed_failovers: HashMap<String, (u32, Instant)>,
}

impl Book {
    /// The book of the given records.
    pub fn new(records: Vec<WorkloadRecord>, tombstones: Vec<Tombstone>) -> Self {
        Book {
            records: records
                .into_iter()
                .map(|r| (r.spec.name.clone(), r))
                .collect(),
            tombstones: tombstones
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
            claims: HashMap::new(),
            settled: HashMap::new(),
            absent: HashMap::new(),
            floors: HashMap::new(),
            failed_failovers: HashMap::new(),
        }
    }
}

/// An operation's hold on one workload: while it lives, no other operation (migrate,
/// delete, a reconciliation order) starts on the workload. Released when dropped.
#[derive(Debug)]
pub struct Claim {
    shared: Arc<Shared>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut b = self.shared.book();
        b.claims.remove(&self.name);
        b.settled.insert(self.name.clone(), Instant::now());
    }
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist_workload(&self, rec: &WorkloadRecord, migration: Option<&Migration>) {
        if let Err(e) = self.store.save_workload(rec, migration) {
            tracing::error!(workload = %rec.spec.name, "could not persist workload: {e}");
        }
    }

    /// Takes workload `name` for operation `what`, or says which operation holds it.
    pub fn claim(self: &Arc<Self>, name: &str, what: &'static str) -> Result<Claim, String> {
        let mut b = self.book();
        if let Some(other) = b.claims.get(name) {
            return Err(format!("workload {name:?} is busy: {other} is in progress"));
        }
        b.claims.insert(name.to_owned(), what);
        Ok(Claim {
            shared: self.clone(),
            name: name.to_owned(),
        })
    }

    /// Whether an operation holds workload `name`.
    pub fn is_claimed(&self, name: &str) -> bool {
        self.book().claims.contains_key(name)
    }

    /// A copy of one workload's record.
    pub fn workload(&self, name: &str) -> Option<WorkloadRecord> {
        self.book().records.get(name).cloned()
    }

    /// Every workload.
    pub fn workload_list(&self) -> Vec<WorkloadRecord> {
        self.book().records.values().cloned().collect()
    }

    /// Changes a workload's record with `f` and persists it; returns the new record.
    pub fn update_workload(
        &self,
        name: &str,
        f: impl FnOnce(&mut WorkloadRecord),
    ) -> Option<WorkloadRecord> {
        let mut b = self.book();
        let rec = b.records.get_mut(name)?;
        f(rec);
        let rec = rec.clone();
        self.persist_workload(&rec, None);
        Some(rec)
    }

    /// Persists a switchover's state, and its workload's record with the generation and
    /// state it implies, in one transaction: what the store says is what the driver does.
    pub fn save_migration(&self, m: &Migration, f: impl FnOnce(&mut WorkloadRecord)) {
        let mut b = self.book();
        let Some(rec) = b.records.get_mut(m.workload()) else {
            return;
        };
        rec.generation = rec.generation.max(m.current_generation());
        f(rec);
        let rec = rec.clone();
        self.persist_workload(&rec, Some(m));
    }

    /// Adds a new workload; false if the name is taken.
    pub fn insert_workload(&self, rec: WorkloadRecord) -> bool {
        let mut b = self.book();
        let name = rec.spec.name.clone();
        if b.records.contains_key(&name) {
            return false;
        }
        if b.tombstones.remove(&name).is_some() {
            if let Err(e) = self.store.remove_tombstone(&name) {
                tracing::error!(workload = %name, "could not drop the tombstone: {e}");
            }
        }
        self.persist_workload(&rec, None);
        b.records.insert(name, rec);
        true
    }

    /// Forgets a workload, leaving a tombstone at `generation` (that of its `Remove`
    /// orders). Without `generation` (nothing was ever started) no tombstone is left.
    pub fn remove_workload(&self, name: &str, generation: Option<u64>) -> Option<WorkloadRecord> {
        let mut b = self.book();
        b.failed_failovers.remove(name);
        let rec = b.records.remove(name)?;
        let tomb = Tombstone {
            name: name.to_owned(),
            generation: generation.unwrap_or(rec.generation),
            deleted_unix_ms: wall_ms(),
        };
        if let Err(e) = self.store.delete_workload(name, &tomb) {
            tracing::error!(workload = name, "could not delete workload record: {e}");
        }
        if generation.is_some() {
            b.tombstones.insert(name.to_owned(), tomb);
        } else if let Err(e) = self.store.remove_tombstone(name) {
            tracing::error!(workload = name, "could not drop the tombstone: {e}");
        }
        drop(b);
        self.migrations_lock().remove(name);
        Some(rec)
    }

    /// The generation a new workload called `name` starts at: above its tombstone's and
    /// above anything an agent has seen for the name (a store that lost its tombstones).
    pub fn first_generation(&self, name: &str) -> u64 {
        let b = self.book();
        let tomb = b.tombstones.get(name).map_or(0, |t| t.generation);
        let floor = b.floors.get(name).copied().unwrap_or(0);
        tomb.max(floor) + 1
    }

    /// Compares `host`'s inventory with the records: applies the record corrections at
    /// once (persisted) and returns the orders to send, each with the claim it holds.
    pub fn reconcile_host(
        self: &Arc<Self>,
        host: &str,
        inv: &Inventory,
    ) -> Vec<(Fix, Option<Claim>)> {
        let mut b = self.book();
        for (name, g) in &inv.fence {
            let f = b.floors.entry(name.clone()).or_insert(0);
            *f = (*f).max(*g);
        }
        let idle = idle_in(&b);
        let absent_before = b.absent.remove(host).unwrap_or_default();
        let (fixes, absent) = reconcile(
            host,
            inv,
            &Known {
                records: &b.records,
                tombstones: &b.tombstones,
                idle: &idle,
            },
            &absent_before,
            wall_ms(),
        );
        b.absent.insert(host.to_owned(), absent);
        let mut out = Vec::new();
        for fix in fixes {
            match &fix {
                Fix::Correct(rec) | Fix::Adopt(rec) => {
                    if let Some((why, _)) = &rec.last_correction {
                        tracing::warn!(workload = %rec.spec.name, host, "record corrected: {why}");
                    }
                    self.persist_workload(rec, None);
                    b.records.insert(rec.spec.name.clone(), rec.clone());
                }
                Fix::Order { order, .. } => {
                    let name = order.target().0.to_owned();
                    if b.claims.contains_key(&name) {
                        continue;
                    }
                    b.claims
                        .insert(name.clone(), "a correction from a host's report");
                    let claim = Claim {
                        shared: self.clone(),
                        name,
                    };
                    out.push((fix, Some(claim)));
                }
                Fix::SetShadow { workload, .. } => {
                    if b.claims.contains_key(workload) {
                        continue;
                    }
                    b.claims
                        .insert(workload.clone(), "a correction from a host's report");
                    let claim = Claim {
                        shared: self.clone(),
                        name: workload.clone(),
                    };
                    out.push((fix, Some(claim)));
                }
            }
        }
        out
    }

    /// The leases `host` holds now (see [`crate::workloads::failover`]).
    pub fn leases_for(&self, host: &str) -> Vec<understudy_common::protocol::Lease> {
        let mut leases =
            crate::workloads::failover::leases(host, self.book().records.values(), &self.failover);
        for l in &mut leases {
            l.data_key = self
                .data_key(&l.workload)
                .map_err(
                    |e| tracing::warn!(workload = %l.workload, "no data key for the lease: {e}"),
                )
                .ok();
        }
        leases
    }

    /// Workload `name`'s data key (made on first use).
    pub fn data_key(&self, name: &str) -> Result<understudy_common::seal::KeyBytes, String> {
        self.store.data_key(name).map_err(|e| e.to_string())
    }

    /// The lease a copy of `spec`'s workload runs under on its primary, ms (`None`: none).
    pub fn lease_of(&self, spec: &understudy_common::workload::WorkloadSpec) -> Option<u64> {
        crate::workloads::failover::lease_ms(spec, &self.failover)
    }

    /// Failover decisions for the idle workloads now.
    pub fn failover_decisions(&self) -> Vec<crate::workloads::failover::Decision> {
        let records: Vec<WorkloadRecord> = self.workload_list();
        let idle = {
            let b = self.book();
            let mut idle = idle_in(&b);
            // A failover that failed is tried again, but less often each time.
            idle.retain(|n| {
                b.failed_failovers.get(n).is_none_or(|(failures, at)| {
                    at.elapsed() >= crate::workloads::failover::retry_after(*failures)
                })
            });
            idle
        };
        crate::workloads::failover::decide(&records, |h| self.host_now(h), &idle, &self.failover)
    }

    /// Which idle workloads have a shadow whose host has been silent long enough to be
    /// replaced ([`crate::workloads::failover::stranded_shadows`]).
    pub fn stranded_shadows(&self) -> Vec<crate::workloads::failover::StrandedShadow> {
        let records: Vec<WorkloadRecord> = self.workload_list();
        let idle = idle_in(&self.book());
        crate::workloads::failover::stranded_shadows(
            &records,
            |h| self.host_now(h),
            &idle,
            &self.failover,
        )
    }

    /// Notes that a failover of `name` failed; returns how many failed in a row and how
    /// long until the next is tried.
    pub fn failover_failed(&self, name: &str) -> (u32, Duration) {
        let mut b = self.book();
        let failures = b
            .failed_failovers
            .get(name)
            .map_or(1, |(n, _)| n.saturating_add(1));
        b.failed_failovers
            .insert(name.to_owned(), (failures, Instant::now()));
        (failures, crate::workloads::failover::retry_after(failures))
    }

    /// Notes that a failover of `name` succeeded: the next one, if any, is not held back.
    pub fn failover_succeeded(&self, name: &str) {
        self.book().failed_failovers.remove(name);
    }

    /// Whether a running workload's primary host is currently disconnected, for display:
    /// no epochs are taken while its agent is away.
    pub fn primary_unreachable(&self, rec: &WorkloadRecord) -> Option<String> {
        if rec.state != WorkloadState::Running || self.is_connected(&rec.primary) {
            return None;
        }
        Some(format!(
            "primary unreachable: {}'s agent is disconnected, no epochs are taken",
            rec.primary
        ))
    }

    /// Whether a workload's shadow host is currently disconnected, for display.
    pub fn shadow_unreachable(&self, rec: &WorkloadRecord) -> Option<String> {
        let shadow = rec.shadow.as_deref()?;
        if rec.state != WorkloadState::Running || self.is_connected(shadow) {
            return None;
        }
        Some(format!("shadow unreachable: {shadow} is disconnected"))
    }
}
