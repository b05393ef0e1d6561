//! Risk against cost, guardrails and targets: from the triggers that hold, the moves to
//! make now and why, and the moves not made and why not.
//!
//! For each running workload on a triggered host: benefit = the trigger's probability ×
//! the workload's priority; cost = its predicted freeze × `cost_per_freeze_s` + the bytes
//! the move sends × `cost_per_gib` + the moves already under way × `cost_per_running_move`.
//! An automatic move is made when benefit − cost exceeds the threshold; candidates go in
//! order of that score, operator moves (drain, maintenance) first whatever their score.
//!
//! Guardrails: a cool-down per workload after any move; at most `max_moves_per_host` moves
//! from or to a host and `max_moves` in the cluster at once; an hourly budget of automatic
//! moves after which the engine only advises; while more than `shared_trouble_share` of the
//! connected hosts are in trouble at once, it only advises too (a shared cause); the mode
//! (`off`, `advise`, `act`) for automatic moves. A target is connected, not cordoned,
//! draining, triggered or near a maintenance window, healthy enough, and keeps its memory
//! headroom by its forecast with the workload on it. Preferred: a target in another zone
//! than the host in trouble (where hosts carry zones), then the workload's shadow (it
//! already holds its epochs), then the healthiest, then the one with the most memory to
//! spare.

use std::collections::{BTreeMap, HashMap};

use understudy_common::telemetry::HealthLevel;

use super::triggers::{self, Trigger};
use super::{Fleet, HostView, Memory, Mode, Settings, WorkloadView};

const GIB: f64 = (1u64 << 30) as f64;
const HOUR_MS: u64 = 3_600_000;

/// What to do about one workload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Move it to this host now.
    Move {
        /// The target.
        to: String,
    },
    /// It should move there, but the engine may not move it by itself.
    Advise {
        /// The target.
        to: String,
        /// Why it is only advice (the mode, the budget).
        why: String,
    },
    /// It stays for now.
    Hold {
        /// Why (cool-down, no target, concurrency, score below the threshold).
        why: String,
    },
}

/// A decision about one workload on a triggered host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// The workload.
    pub workload: String,
    /// The host it runs on.
    pub from: String,
    /// Why it is considered.
    pub trigger: Trigger,
    /// Probability × priority.
    pub benefit: f64,
    /// The move's cost.
    pub cost: f64,
    /// `benefit - cost`.
    pub score: f64,
    /// What to do.
    pub action: Action,
}

/// Why `host` cannot take a workload now, if it cannot.
fn unfit(
    host: &HostView,
    s: &Settings,
    triggered: &BTreeMap<String, Trigger>,
    now_ms: u64,
) -> Option<String> {
    let name = &host.name;
    if !host.connected {
        return Some(format!("{name} disconnected"));
    }
    if host.cordoned || host.draining {
        return Some(format!("{name} cordoned"));
    }
    if host
        .maintenance
        .iter()
        .any(|w| w.near(now_ms, s.maintenance_lead_ms))
    {
        return Some(format!("{name} in or near maintenance"));
    }
    if let Some(t) = triggered.get(name) {
        return Some(format!(
            "{name} itself at risk ({}: {})",
            t.kind.as_str(),
            t.detail
        ));
    }
    match &host.health {
        // No assessment yet (a model still learning the host) is not bad health.
        Some(h) if h.level != HealthLevel::Degraded && h.score < s.target_health_min => Some(
            format!("{name} health {} below {}", h.score, s.target_health_min),
        ),
        _ => None,
    }
}

/// The share of `host`'s memory in use, as its forecast has it at worst.
fn memory_forecast(host: &HostView) -> f32 {
    let forecast = host.health.as_ref().and_then(|h| {
        h.forecasts
            .iter()
            .filter(|f| f.metric == "mem_u")
            .map(|f| f.upper)
            .reduce(f32::max)
    });
    forecast.unwrap_or(0.0).max(host.memory_used)
}

/// The move's cost to `to`.
fn cost(w: &WorkloadView, to: &str, running_moves: usize, fleet: &Fleet, s: &Settings) -> f64 {
    let link = fleet.link_bytes_per_s.max(1.0);
    // To its shadow, only what changed since the last epoch goes; elsewhere, everything.
    let bytes = if w.shadow.as_deref() == Some(to) {
        w.dirty_bytes_per_s.max(0.0)
    } else {
        w.bytes as f64
    };
    let freeze_s = w
        .last_freeze_ms
        .map_or(bytes / link, |ms| ms as f64 / 1000.0);
    freeze_s * s.cost_per_freeze_s
        + bytes / GIB * s.cost_per_gib
        + running_moves as f64 * s.cost_per_running_move
}

struct Candidate<'a> {
    w: &'a WorkloadView,
    /// The source host's own limit on moves at once (a drain's), if any.
    source_limit: Option<usize>,
    trigger: Trigger,
    to: Result<String, String>,
    benefit: f64,
    cost: f64,
}

impl Candidate<'_> {
    fn operator(&self) -> bool {
        self.trigger.kind.is_operator()
    }
    fn score(&self) -> f64 {
        self.benefit - self.cost
    }
}

/// Counts of moves under way and decided, per host and in all.
#[derive(Default)]
struct Load {
    per_host: HashMap<String, usize>,
    total: usize,
}

impl Load {
    fn busy(&self, host: &str) -> usize {
        self.per_host.get(host).copied().unwrap_or(0)
    }
    fn add(&mut self, hosts: &[&str]) {
        for h in hosts {
            *self.per_host.entry((*h).to_owned()).or_default() += 1;
        }
        self.total += 1;
    }
}

/// The decisions for the fleet at `now_ms`, operator moves first, then by score; brings
/// `memory` up to date.
pub fn decide(fleet: &Fleet, s: &Settings, memory: &mut Memory, now_ms: u64) -> Vec<Decision> {
    let triggered = triggers::evaluate(&fleet.hosts, s, memory, now_ms);
    if triggered.is_empty() {
        return Vec::new();
    }
    let shared = shared_trouble(&fleet.hosts, &triggered, s, now_ms);
    let mut load = Load::default();
    for w in fleet.workloads.iter().filter(|w| w.moving) {
        load.add(&[&w.primary]);
    }
    let running_moves = load.total;
    let mut targets: Vec<Target> = fleet
        .hosts
        .iter()
        .filter(|h| unfit(h, s, &triggered, now_ms).is_none())
        .map(|h| Target {
            host: h,
            score: match &h.health {
                Some(x) if x.level != HealthLevel::Degraded => x.score,
                _ => s.target_health_min,
            },
            memory: memory_forecast(h),
        })
        .collect();
    targets.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(a.memory.total_cmp(&b.memory))
            .then(a.host.name.cmp(&b.host.name))
    });
    let index: HashMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.host.name.as_str(), i))
        .collect();
    let by_name: HashMap<&str, &HostView> =
        fleet.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    let mut candidates: Vec<Candidate> = fleet
        .workloads
        .iter()
        .filter(|w| w.running && !w.moving)
        .filter_map(|w| {
            let trigger = triggered.get(&w.primary)?.clone();
            if !trigger.kind.is_operator() && s.mode == Mode::Off {
                return None;
            }
            let source = by_name.get(w.primary.as_str());
            let to = pick_target(
                w,
                source.and_then(|h| h.zone.as_ref()),
                &targets,
                &index,
                fleet,
                s,
                &triggered,
                now_ms,
            );
            let cost = to
                .as_ref()
                .map_or(0.0, |t| cost(w, t, running_moves, fleet, s));
            let source_limit = source.and_then(|h| h.max_moves);
            Some(Candidate {
                w,
                source_limit,
                benefit: trigger.probability * w.priority,
                trigger,
                to,
                cost,
            })
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.operator()
            .cmp(&a.operator())
            .then(b.score().total_cmp(&a.score()))
            .then(a.w.name.cmp(&b.w.name))
    });
    let mut budget = s.moves_per_hour as usize
        - fleet
            .recent_moves_ms
            .iter()
            .filter(|t| now_ms.saturating_sub(**t) < HOUR_MS)
            .count()
            .min(s.moves_per_hour as usize);
    candidates
        .into_iter()
        .map(|c| {
            let action = act(&c, s, &mut load, &mut budget, shared.as_deref(), now_ms);
            Decision {
                workload: c.w.name.clone(),
                from: c.w.primary.clone(),
                benefit: c.benefit,
                cost: c.cost,
                score: c.score(),
                trigger: c.trigger,
                action,
            }
        })
        .collect()
}

/// A fit target with what ranking it needs, computed once per tick.
struct Target<'a> {
    host: &'a HostView,
    /// Its health score (a host without an assessment yet ranks as just fit).
    score: u8,
    /// Its memory in use by its forecast, as a share.
    memory: f32,
}

/// The best target for `w` among the fit `targets` (sorted best first by health, then
/// spare memory, then name; `index` finds one by name), or why there is none.
#[allow(clippy::too_many_arguments)] // the tick's precomputed views, passed down once
fn pick_target(
    w: &WorkloadView,
    source_zone: Option<&String>,
    targets: &[Target],
    index: &HashMap<&str, usize>,
    fleet: &Fleet,
    s: &Settings,
    triggered: &BTreeMap<String, Trigger>,
    now_ms: u64,
) -> Result<String, String> {
    // With zones, away from the trouble's failure domain.
    let zone_ok = |t: &Target| source_zone.is_none() || t.host.zone.as_ref() != source_zone;
    let fits = |t: &Target| {
        t.host.name != w.primary
            && (t.host.memory_bytes == 0
                || f64::from(t.memory) + w.bytes as f64 / t.host.memory_bytes as f64
                    <= f64::from(1.0 - s.target_memory_headroom))
    };
    let shadow = w
        .shadow
        .as_deref()
        .and_then(|name| index.get(name))
        .map(|i| &targets[*i])
        .filter(|t| fits(t));
    // Outside the troubled zone first; there, the shadow first, then the best ranked.
    let best = shadow
        .filter(|t| zone_ok(t))
        .or_else(|| targets.iter().find(|t| fits(t) && zone_ok(t)))
        .or(shadow)
        .or_else(|| targets.iter().find(|t| fits(t)));
    if let Some(t) = best {
        return Ok(t.host.name.clone());
    }
    let why: Vec<String> = fleet
        .hosts
        .iter()
        .filter(|h| h.name != w.primary)
        .map(|h| {
            unfit(h, s, triggered, now_ms)
                .unwrap_or_else(|| format!("{} lacks the memory headroom", h.name))
        })
        .collect();
    Err(if why.is_empty() {
        "no target: no other host".into()
    } else {
        format!("no target: {}", why.join("; "))
    })
}

/// Why automatic moves (and shadow moves) are held now because many hosts are in trouble at
/// once (see [`Settings::shared_trouble_share`]), if they are; `triggered` is what
/// [`triggers::evaluate`] says of `hosts`. A host counts when it has a trigger or shows
/// trouble that has not held long enough to be one yet ([`triggers::showing`]).
pub fn shared_trouble(
    hosts: &[HostView],
    triggered: &BTreeMap<String, Trigger>,
    s: &Settings,
    now_ms: u64,
) -> Option<String> {
    let connected = hosts.iter().filter(|h| h.connected).count();
    let mut troubled = triggers::showing(hosts, s, now_ms);
    troubled.extend(
        triggered
            .values()
            .filter(|t| !t.kind.is_operator())
            .map(|t| t.host.clone()),
    );
    let troubled: Vec<&str> = troubled.iter().map(String::as_str).collect();
    let n = troubled.len();
    if n < 2 || n as f64 <= f64::from(s.shared_trouble_share) * connected as f64 {
        return None;
    }
    const NAMED: usize = 4;
    let more = if n > NAMED {
        format!(" and {} more", n - NAMED)
    } else {
        String::new()
    };
    Some(format!(
        "{n} of {connected} connected hosts in trouble at once ({}{more}; more than {}): \
         a shared cause is likelier than that many failing hosts",
        troubled[..n.min(NAMED)].join(", "),
        s.shared_trouble_share
    ))
}

/// The workloads that run with no shadow although a shadow could be armed for them now:
/// running, not moving, their primary connected. No host was free to shadow them when
/// they were placed or moved (or the one chosen refused); placement picks one for each.
pub fn unshadowed(fleet: &Fleet) -> Vec<&WorkloadView> {
    let connected = |h: &str| fleet.hosts.iter().any(|v| v.name == h && v.connected);
    fleet
        .workloads
        .iter()
        .filter(|w| w.shadow.is_none() && w.running && !w.moving && connected(&w.primary))
        .collect()
}

fn act(
    c: &Candidate,
    s: &Settings,
    load: &mut Load,
    budget: &mut usize,
    shared: Option<&str>,
    now_ms: u64,
) -> Action {
    let hold = |why: String| Action::Hold { why };
    let automatic = !c.operator();
    if automatic {
        if let Some(last) = c.w.last_move_ms {
            let ago = now_ms.saturating_sub(last);
            if ago < s.cooldown_ms {
                return hold(format!(
                    "moved {} s ago; cool-down {} s",
                    ago / 1000,
                    s.cooldown_ms / 1000
                ));
            }
        }
    }
    let to = match &c.to {
        Ok(to) => to.clone(),
        Err(why) => return hold(why.clone()),
    };
    if automatic && c.score() <= s.threshold {
        return hold(format!(
            "score {:.2} (benefit {:.2} − cost {:.2}) not above {}",
            c.score(),
            c.benefit,
            c.cost,
            s.threshold
        ));
    }
    if load.total >= s.max_moves {
        return hold(format!(
            "{} moves under way in the cluster (at most {})",
            load.total, s.max_moves
        ));
    }
    for (host, limit) in [
        (
            c.w.primary.as_str(),
            c.source_limit.unwrap_or(s.max_moves_per_host),
        ),
        (to.as_str(), s.max_moves_per_host),
    ] {
        if load.busy(host) >= limit {
            return hold(format!(
                "{} moves under way on {host} (at most {limit})",
                load.busy(host),
            ));
        }
    }
    if automatic && s.mode == Mode::Advise {
        return Action::Advise {
            to,
            why: "decisions mode is advise".into(),
        };
    }
    if let (true, Some(why)) = (automatic, shared) {
        return Action::Advise {
            to,
            why: why.to_owned(),
        };
    }
    if automatic && *budget == 0 {
        return Action::Advise {
            to,
            why: format!(
                "the budget of {} automatic moves per hour is spent",
                s.moves_per_hour
            ),
        };
    }
    load.add(&[&c.w.primary, &to]);
    if automatic {
        *budget -= 1;
    }
    Action::Move { to }
}
