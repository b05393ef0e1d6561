//! Reconciliation: comparing what one host reports it holds (its [`Inventory`]) with the
//! coordinator's records, and deciding what to correct. Free of I/O: the caller passes the
//! records, which workloads are idle (no operation of the coordinator in flight) and the
//! time, and carries out the fixes.
//!
//! The rules, in the order they apply to a workload:
//!
//! - The generation decides. A host that runs a copy under a *newer* generation than the
//!   record knows is right and the record is corrected to it (the store lost an update).
//!   Any other copy on a host that is not the record's primary is stale and is stopped —
//!   even under the same generation: the record names one primary, never two.
//! - The record follows the primary's report: a copy reported alive makes a record that
//!   says failed, exited or starting say running; a primary that reports no copy in two
//!   inventories in a row makes it failed, naming the host and its agent's start.
//! - The primary is brought up to the record: a copy under an older generation, or whose
//!   periodic epochs are paused with no switchover running, is resumed under the record's.
//! - Shadows: the recorded shadow is (re)told whom to accept epochs from; epochs kept by a
//!   host that is neither primary nor shadow are dropped.
//! - A copy of a workload with no record is stopped if the workload was deleted (its
//!   tombstone), and otherwise adopted: the record is rebuilt from the host's report.

use std::collections::{BTreeMap, BTreeSet};

use understudy_common::inventory::{CopyState, Held, Inventory, LocalCopy};
use understudy_common::workload::Order;

use super::{Tombstone, WorkloadRecord, WorkloadState};

/// One correction to make.
// Fixes are few per inventory; boxing the order would only obscure matches.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Fix {
    /// Replace the record with this corrected one (its `last_correction` says why).
    Correct(WorkloadRecord),
    /// A record rebuilt from the host's report: the coordinator had none.
    Adopt(WorkloadRecord),
    /// Send `order` to `host`.
    Order {
        /// The host.
        host: String,
        /// The order.
        order: Order,
        /// Why, for the log.
        why: String,
    },
    /// Tell the primary `host` to send epochs to `shadows` (the shell looks up their
    /// addresses).
    SetShadow {
        /// The primary.
        host: String,
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// The shadow hosts' names, the recorded `shadow` first.
        shadows: Vec<String>,
    },
}

/// What the coordinator knows, as reconciliation needs it.
#[derive(Debug)]
pub struct Known<'a> {
    /// Every workload record, by name.
    pub records: &'a BTreeMap<String, WorkloadRecord>,
    /// Every deleted workload, by name.
    pub tombstones: &'a BTreeMap<String, Tombstone>,
    /// Workloads with no operation of the coordinator in flight or just finished.
    pub idle: &'a BTreeSet<String>,
}

/// Compares `host`'s inventory with the records. `absent_before` holds the workloads this
/// host's previous inventory lacked although it was their primary; the second set returned
/// is the same for this inventory (give it back next time).
pub fn reconcile(
    host: &str,
    inv: &Inventory,
    known: &Known<'_>,
    absent_before: &BTreeSet<String>,
    now_ms: u64,
) -> (Vec<Fix>, BTreeSet<String>) {
    let mut fixes = Vec::new();
    let mut absent = BTreeSet::new();
    let mut done = BTreeSet::new();
    for held in &inv.workloads {
        let name = &held.workload;
        if held.busy {
            done.insert(name.clone());
            continue;
        }
        match known.records.get(name) {
            None => {
                if let Some(f) = unknown(host, held, known.tombstones.get(name), now_ms) {
                    fixes.extend(f);
                }
                done.insert(name.clone());
            }
            Some(_) if !known.idle.contains(name) => {
                done.insert(name.clone());
            }
            Some(rec) => {
                if let Some(copy) = &held.copy {
                    let before = fixes.len();
                    copy_fixes(host, copy, rec, now_ms, &mut fixes);
                    if fixes.len() > before {
                        done.insert(name.clone());
                        continue;
                    }
                }
                if let Some(f) = shadow_fix(host, held, rec) {
                    fixes.push(f);
                }
                done.insert(name.clone());
            }
        }
    }
    for (name, rec) in known.records {
        if done.contains(name) || !known.idle.contains(name) {
            continue;
        }
        if rec.primary == host
            && matches!(rec.state, WorkloadState::Running | WorkloadState::Starting)
        {
            if absent_before.contains(name) {
                let mut r = rec.clone();
                let why = format!(
                    "not running on {host}: its agent (started {} s ago) holds no copy of it; the recovery point is {}",
                    now_ms.saturating_sub(inv.agent_started_unix_ms) / 1000,
                    recovery_point(rec)
                );
                r.state = WorkloadState::Failed(why.clone());
                r.correct(why, now_ms);
                fixes.push(Fix::Correct(r));
            } else {
                absent.insert(name.clone());
            }
        } else if rec.is_shadow(host) && rec.state == WorkloadState::Running {
            fixes.push(arm_shadow(
                host,
                rec,
                "it no longer expects the workload's epochs",
            ));
        }
    }
    (fixes, absent)
}

fn recovery_point(rec: &WorkloadRecord) -> String {
    match (&rec.last_epoch, &rec.shadow) {
        (Some(e), _) => format!("epoch {} on {}", e.epoch, e.shadow),
        (None, _) => "none (no epoch was committed)".into(),
    }
}

fn arm_shadow(host: &str, rec: &WorkloadRecord, why: &str) -> Fix {
    Fix::Order {
        host: host.to_owned(),
        order: Order::ExpectShadow {
            spec: rec.spec.clone(),
            generation: rec.generation,
            primary: rec.primary.clone(),
        },
        why: format!("{host} is the shadow of {}, but {why}", rec.spec.name),
    }
}

/// A workload the coordinator has no record of.
fn unknown(host: &str, held: &Held, tomb: Option<&Tombstone>, now_ms: u64) -> Option<Vec<Fix>> {
    let name = &held.workload;
    if let Some(t) = tomb {
        let newer = held
            .copy
            .as_ref()
            .is_some_and(|c| c.generation > t.generation);
        if !newer {
            return Some(vec![Fix::Order {
                host: host.to_owned(),
                order: Order::Remove {
                    workload: name.clone(),
                    generation: t.generation,
                },
                why: format!("{name} was deleted (generation {})", t.generation),
            }]);
        }
    }
    let copy = held.copy.as_ref().filter(|c| c.is_alive())?;
    let why = format!(
        "record rebuilt from {host}'s report: the coordinator had no record of {name}, which runs there (pid {}, generation {})",
        copy.pid, copy.generation
    );
    let rec = WorkloadRecord {
        spec: copy.spec.clone(),
        primary: host.to_owned(),
        shadow: copy.shadows.first().cloned(),
        generation: copy.generation,
        state: WorkloadState::Running,
        unprotected: orphan_reason(host, copy),
        last_epoch: None,
        epochs: 0,
        created_unix_ms: now_ms,
        last_migration: None,
        restarts: 0,
        last_exit: None,
        last_correction: Some((why, now_ms)),
        more_shadows: Default::default(),
    };
    let mut fixes = vec![];
    if let Some(s) = copy.shadows.first() {
        fixes.push(arm_shadow(s, &rec, "the record was rebuilt"));
    }
    fixes.insert(0, Fix::Adopt(rec));
    Some(fixes)
}

fn orphan_reason(host: &str, copy: &LocalCopy) -> Option<String> {
    (copy.state == CopyState::Orphaned).then(|| {
        format!(
            "unprotected: {host}'s agent restarted and no longer supervises it (pid {} runs on, without epochs or output collection)",
            copy.pid
        )
    })
}

/// A copy on `host` of a workload with record `rec`.
fn copy_fixes(
    host: &str,
    copy: &LocalCopy,
    rec: &WorkloadRecord,
    now_ms: u64,
    fixes: &mut Vec<Fix>,
) {
    let name = &rec.spec.name;
    if rec.primary != host {
        if copy.generation > rec.generation && copy.is_alive() {
            // The host moved on under a generation the record never saw: follow it. The
            // record's old primary is stopped when it reports its (older) copy.
            let mut r = rec.clone();
            let why = format!(
                "{host} runs {name} under generation {}, newer than the recorded {} on {}: the record follows it",
                copy.generation, rec.generation, rec.primary
            );
            r.primary = host.to_owned();
            let mut others = copy.shadows.iter().filter(|s| *s != host).cloned();
            r.shadow = others.next();
            r.more_shadows.hosts = others.collect();
            r.generation = copy.generation;
            r.state = WorkloadState::Running;
            r.unprotected = orphan_reason(host, copy);
            r.correct(why, now_ms);
            fixes.push(Fix::Correct(r));
            return;
        }
        let why = format!(
            "{host} holds a stale copy of {name} (generation {}, {}) while {} runs it under generation {}",
            copy.generation, copy.state, rec.primary, rec.generation
        );
        let order = if rec.shadow.as_deref() == Some(host) {
            Order::Demote {
                spec: rec.spec.clone(),
                generation: rec.generation,
                primary: rec.primary.clone(),
            }
        } else {
            Order::Release {
                workload: name.clone(),
                generation: rec.generation,
            }
        };
        fixes.push(Fix::Order {
            host: host.to_owned(),
            order,
            why,
        });
        return;
    }
    let mut r = rec.clone();
    let mut why = Vec::new();
    if copy.generation > r.generation {
        why.push(format!(
            "{host} runs it under generation {}, newer than the recorded {}",
            copy.generation, r.generation
        ));
        r.generation = copy.generation;
    }
    match &copy.state {
        CopyState::Running { .. } | CopyState::Orphaned => {
            if r.state != WorkloadState::Running {
                why.push(format!(
                    "{host} reports it running (pid {}), not {}",
                    copy.pid,
                    r.state.name()
                ));
                r.state = WorkloadState::Running;
            }
            let orphan = orphan_reason(host, copy);
            if orphan.is_some() && r.unprotected != orphan {
                why.push(format!("{host}'s agent no longer supervises it"));
                r.unprotected = orphan;
            }
        }
        CopyState::Stopped { final_dump: false } if r.state == WorkloadState::Running => {
            let e = format!(
                "stopped on {host} by a switchover's final epoch, with no dump left there to resume from; the recovery point is {}",
                recovery_point(rec)
            );
            why.push(e.clone());
            r.state = WorkloadState::Failed(e);
        }
        CopyState::Exited if r.state == WorkloadState::Running => {
            let e = format!("exited on {host} (its own report of the exit was lost)");
            why.push(e.clone());
            r.state = WorkloadState::Exited(e);
        }
        _ => {}
    }
    if !why.is_empty() {
        r.correct(why.join("; "), now_ms);
        fixes.push(Fix::Correct(r.clone()));
    }
    // Bring the copy up to the record.
    let resume_why = match &copy.state {
        CopyState::Running { .. } if copy.generation < r.generation => Some(format!(
            "{host} runs it under generation {}, the record says {}",
            copy.generation, r.generation
        )),
        CopyState::Running { epochs: false } => Some(format!(
            "its periodic epochs on {host} are paused with no switchover running"
        )),
        CopyState::Stopped { final_dump: true }
            if matches!(r.state, WorkloadState::Running | WorkloadState::Failed(_)) =>
        {
            Some(format!(
                "{host} stopped it for a switchover that is no longer running; resuming it from its final dump"
            ))
        }
        _ => None,
    };
    if let Some(why) = resume_why {
        fixes.push(Fix::Order {
            host: host.to_owned(),
            order: Order::Resume {
                workload: name.clone(),
                generation: r.generation,
            },
            why,
        });
        return;
    }
    let shadows: Vec<String> = r.shadows().into_iter().map(str::to_owned).collect();
    if matches!(copy.state, CopyState::Running { .. })
        && !shadows.is_empty()
        && copy.shadows != shadows
    {
        fixes.push(Fix::SetShadow {
            host: host.to_owned(),
            workload: name.clone(),
            generation: r.generation,
            shadows,
        });
    }
}

/// The shadow side of `held` against the record.
fn shadow_fix(host: &str, held: &Held, rec: &WorkloadRecord) -> Option<Fix> {
    let sh = held.shadow.as_ref();
    if rec.is_shadow(host) {
        let armed = sh.and_then(|s| s.primary.as_deref()) == Some(rec.primary.as_str());
        return (!armed && rec.state == WorkloadState::Running)
            .then(|| arm_shadow(host, rec, "it does not expect the workload's epochs"));
    }
    if sh.is_some() && rec.primary != host && held.copy.is_none() {
        return Some(Fix::Order {
            host: host.to_owned(),
            order: Order::Remove {
                workload: rec.spec.name.clone(),
                generation: rec.generation,
            },
            why: format!(
                "{host} keeps epochs of {} but is no longer its shadow",
                rec.spec.name
            ),
        });
    }
    None
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
