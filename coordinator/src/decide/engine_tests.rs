//! The decision engine on fabricated fleets with a fake clock.

use understudy_common::telemetry::{Forecast, HealthLevel, HealthReport, Risk};

use super::*;

const MIN: u64 = 60_000;
const T0: u64 = 1_000_000_000;

/// The defaults, with a health hysteresis of 3 heartbeats (the fleets here are fabricated
/// heartbeat by heartbeat).
fn defaults() -> Settings {
    Settings {
        health_heartbeats: 3,
        ..Settings::default()
    }
}

fn health(score: u8) -> HealthReport {
    HealthReport {
        score,
        level: if score >= 80 {
            HealthLevel::Healthy
        } else if score >= 70 {
            HealthLevel::Warning
        } else {
            HealthLevel::Critical
        },
        anomaly: 0.0,
        anomaly_threshold: 1.0,
        top: Vec::new(),
        note: None,
        forecasts: Vec::new(),
        risk: None,
        kernel_errors: Vec::new(),
        percentile: None,
    }
}

fn host(name: &str, score: u8) -> HostView {
    HostView {
        name: name.into(),
        connected: true,
        health: Some(health(score)),
        low_health_beats: 0,
        memory_bytes: 16 << 30,
        memory_used: 0.3,
        cordoned: false,
        draining: false,
        max_moves: None,
        maintenance: Vec::new(),
        zone: None,
    }
}

fn workload(name: &str, primary: &str, shadow: &str) -> WorkloadView {
    WorkloadView {
        name: name.into(),
        primary: primary.into(),
        shadow: Some(shadow.into()),
        running: true,
        moving: false,
        priority: 1.0,
        bytes: 256 << 20,
        dirty_bytes_per_s: 1e6,
        last_freeze_ms: Some(300),
        last_move_ms: None,
    }
}

/// Hosts a (the one in trouble), b and c, all healthy, one workload on a shadowed by b.
fn fleet() -> Fleet {
    Fleet {
        hosts: vec![host("a", 95), host("b", 95), host("c", 90)],
        workloads: vec![workload("kv", "a", "b")],
        recent_moves_ms: Vec::new(),
        link_bytes_per_s: 100e6,
    }
}

fn sick(f: &mut Fleet, score: u8, beats: u32) {
    f.hosts[0].health = Some(health(score));
    f.hosts[0].low_health_beats = beats;
}

fn moves(d: &[Decision]) -> Vec<(String, String)> {
    d.iter()
        .filter_map(|d| match &d.action {
            Action::Move { to } => Some((d.workload.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

fn held(d: &[Decision], workload: &str) -> String {
    match &d.iter().find(|d| d.workload == workload).unwrap().action {
        Action::Hold { why } => why.clone(),
        other => panic!("{workload}: {other:?}"),
    }
}

#[test]
fn a_healthy_fleet_moves_nothing() {
    let mut m = Memory::default();
    assert!(decide(&fleet(), &defaults(), &mut m, T0).is_empty());
}

#[test]
fn low_health_moves_to_the_shadow_only_after_its_heartbeats() {
    let s = defaults();
    let mut f = fleet();
    let mut m = Memory::default();
    sick(&mut f, 40, 2);
    assert!(decide(&f, &s, &mut m, T0).is_empty(), "2 of 3 heartbeats");
    sick(&mut f, 40, 3);
    let d = decide(&f, &s, &mut m, T0);
    assert_eq!(moves(&d), vec![("kv".into(), "b".into())]);
    assert_eq!(d[0].trigger.kind, TriggerKind::Health);
    assert!(
        d[0].trigger
            .detail
            .contains("health 40 below 70 for 3 heartbeats"),
        "{}",
        d[0].trigger.detail
    );
    // Health recovering before the hysteresis passes: the count starts again.
    sick(&mut f, 85, 0);
    assert!(decide(&f, &s, &mut m, T0 + MIN).is_empty());
}

#[test]
fn a_risk_must_hold_for_its_persistence_before_it_moves_anything() {
    let s = defaults();
    let mut f = fleet();
    let mut m = Memory::default();
    let mut h = health(90);
    h.risk = Some(Risk {
        probability: 0.8,
        horizon_secs: 300,
        cause: "mem_u".into(),
    });
    f.hosts[0].health = Some(h);
    assert!(decide(&f, &s, &mut m, T0).is_empty());
    assert!(decide(&f, &s, &mut m, T0 + 29_000).is_empty());
    let d = decide(&f, &s, &mut m, T0 + 30_000);
    assert_eq!(moves(&d).len(), 1);
    assert!(d[0]
        .trigger
        .detail
        .contains("failure risk 0.80 within 300 s (mem_u)"));
    // A gap resets it.
    f.hosts[0].health = Some(health(90));
    assert!(decide(&f, &s, &mut m, T0 + 31_000).is_empty());
    f.hosts[0].health.as_mut().unwrap().risk = Some(Risk {
        probability: 0.8,
        horizon_secs: 300,
        cause: "mem_u".into(),
    });
    assert!(decide(&f, &s, &mut m, T0 + 32_000).is_empty());
}

#[test]
fn predicted_exhaustion_and_error_bursts_are_triggers_named_with_their_inputs() {
    let s = Settings {
        persist_ms: 0,
        ..defaults()
    };
    let mut f = fleet();
    let mut m = Memory::default();
    f.hosts[0].health.as_mut().unwrap().forecasts = vec![Forecast {
        metric: "mem_u".into(),
        horizon_secs: 300,
        central: 0.9,
        upper: 0.97,
    }];
    let d = decide(&f, &s, &mut m, T0);
    assert_eq!(d[0].trigger.kind, TriggerKind::Exhaustion);
    assert!(d[0]
        .trigger
        .detail
        .starts_with("mem_u forecast to reach 0.97"));
    assert_eq!(moves(&d).len(), 1);

    // A disk forecast to stay busy is saturated, not running out: no trigger, no move.
    let mut f = fleet();
    f.hosts[0].health.as_mut().unwrap().forecasts = vec![Forecast {
        metric: "disk_u".into(),
        horizon_secs: 300,
        central: 1.0,
        upper: 1.0,
    }];
    assert!(decide(&f, &s, &mut Memory::default(), T0).is_empty());

    let mut f = fleet();
    f.hosts[0].health.as_mut().unwrap().kernel_errors = vec![("edac".into(), 12)];
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert_eq!(d[0].trigger.kind, TriggerKind::Errors);
    assert!(
        d[0].trigger.detail.contains("edac 12"),
        "{}",
        d[0].trigger.detail
    );
    assert_eq!(moves(&d).len(), 1);
}

#[test]
fn a_maintenance_window_empties_its_host_whatever_the_mode_and_takes_nothing_in() {
    let s = Settings {
        mode: Mode::Off,
        ..defaults()
    };
    let mut f = fleet();
    f.workloads.push(workload("db", "c", "a"));
    f.hosts[0].maintenance = vec![Window {
        start_ms: T0 + 5 * MIN,
        duration_ms: 60 * MIN,
        reason: "firmware".into(),
    }];
    let mut m = Memory::default();
    let d = decide(&f, &s, &mut m, T0);
    assert_eq!(moves(&d), vec![("kv".into(), "b".into())]);
    assert!(d[0].trigger.detail.contains("opens in 300 s: firmware"));
    // Too early: outside the lead time nothing happens.
    assert!(decide(&f, &s, &mut m, T0 - 10 * MIN).is_empty());
    // During the window a is no target, even for a workload whose shadow it is (kv has
    // left by then).
    f.workloads.remove(0);
    f.hosts[2].health = Some(health(30));
    f.hosts[2].low_health_beats = 5;
    let s = Settings {
        mode: Mode::Act,
        ..s
    };
    let d = decide(&f, &s, &mut m, T0 + 10 * MIN);
    let db = d.iter().find(|d| d.workload == "db").unwrap();
    assert_eq!(db.action, Action::Move { to: "b".into() });
}

#[test]
fn a_drain_moves_one_at_a_time_per_host() {
    let s = defaults();
    let mut f = fleet();
    f.workloads = vec![
        workload("w1", "a", "b"),
        workload("w2", "a", "c"),
        workload("w3", "a", "b"),
    ];
    f.hosts[0].draining = true;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert_eq!(moves(&d).len(), 1, "{d:?}");
    assert_eq!(
        d.iter()
            .filter(|d| d.trigger.kind == TriggerKind::Drain)
            .count(),
        3
    );
    let waiting = d
        .iter()
        .filter(|d| matches!(&d.action, Action::Hold { why } if why.contains("on a (at most 1)")))
        .count();
    assert_eq!(waiting, 2);
    // With one under way, the others keep waiting.
    f.workloads[0].moving = true;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty());
    // A drain's own parallelism: two at once from a (to b and c, one each).
    f.workloads[0].moving = false;
    f.hosts[0].max_moves = Some(2);
    assert_eq!(moves(&decide(&f, &s, &mut Memory::default(), T0)).len(), 2);
}

#[test]
fn advise_mode_records_and_moves_nothing() {
    let s = Settings {
        mode: Mode::Advise,
        ..defaults()
    };
    let mut f = fleet();
    sick(&mut f, 20, 10);
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty());
    assert_eq!(
        d[0].action,
        Action::Advise {
            to: "b".into(),
            why: "decisions mode is advise".into()
        }
    );
}

#[test]
fn with_no_fit_target_nothing_moves_and_each_host_says_why() {
    let s = defaults();
    let mut f = fleet();
    sick(&mut f, 20, 10);
    f.hosts[1].cordoned = true;
    f.hosts[2].health = Some(health(75));
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty());
    let why = held(&d, "kv");
    assert!(why.contains("b cordoned"), "{why}");
    assert!(why.contains("c health 75 below 80"), "{why}");
}

#[test]
fn a_workload_never_moves_back_within_its_cool_down() {
    let s = defaults();
    let mut f = fleet();
    // kv moved a → b a minute ago; now b is sick and a has recovered at once.
    f.workloads[0].primary = "b".into();
    f.workloads[0].shadow = Some("a".into());
    f.workloads[0].last_move_ms = Some(T0 - MIN);
    f.hosts[1].health = Some(health(20));
    f.hosts[1].low_health_beats = 10;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty());
    assert!(held(&d, "kv").contains("cool-down 1800 s"));
    let d = decide(&f, &s, &mut Memory::default(), T0 + 30 * MIN);
    assert_eq!(moves(&d), vec![("kv".into(), "a".into())]);
}

#[test]
fn past_the_hourly_budget_the_engine_only_advises() {
    let s = Settings {
        moves_per_hour: 2,
        ..defaults()
    };
    let mut f = fleet();
    sick(&mut f, 20, 10);
    f.recent_moves_ms = vec![T0 - 2 * HOUR, T0 - 30 * MIN, T0 - MIN];
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(
        matches!(&d[0].action, Action::Advise { why, .. } if why.contains("budget of 2")),
        "{d:?}"
    );
    f.recent_moves_ms = vec![T0 - 2 * HOUR, T0 - MIN];
    assert_eq!(moves(&decide(&f, &s, &mut Memory::default(), T0)).len(), 1);
}

const HOUR: u64 = 60 * MIN;

#[test]
fn a_move_that_costs_more_than_it_saves_is_not_made() {
    let s = defaults();
    let mut f = fleet();
    // Barely sick (benefit 0.35 × 0.5) and a 20 s freeze (cost 1.0).
    sick(&mut f, 65, 10);
    f.workloads[0].priority = 0.5;
    f.workloads[0].last_freeze_ms = Some(20_000);
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty());
    assert!(
        held(&d, "kv").contains("not above 0.3"),
        "{}",
        held(&d, "kv")
    );
}

#[test]
fn candidates_go_by_score_and_concurrency_holds_the_rest() {
    let s = Settings {
        max_moves: 1,
        ..defaults()
    };
    let mut f = fleet();
    sick(&mut f, 10, 10);
    f.workloads = vec![workload("low", "a", "b"), workload("high", "a", "c")];
    f.workloads[0].priority = 0.5;
    f.workloads[1].priority = 4.0;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert_eq!(d[0].workload, "high");
    assert_eq!(moves(&d), vec![("high".into(), "c".into())]);
    assert!(held(&d, "low").contains("in the cluster (at most 1)"));
}

#[test]
fn a_target_without_memory_headroom_is_passed_over() {
    let s = defaults();
    let mut f = fleet();
    sick(&mut f, 10, 10);
    f.workloads[0].bytes = 4 << 30;
    // b's memory is forecast to be 85 % used: 4 GiB more of 16 would leave no headroom.
    let mut h = health(95);
    h.forecasts = vec![Forecast {
        metric: "mem_u".into(),
        horizon_secs: 300,
        central: 0.8,
        upper: 0.85,
    }];
    f.hosts[1].health = Some(h);
    assert_eq!(
        moves(&decide(&f, &s, &mut Memory::default(), T0)),
        vec![("kv".into(), "c".into())]
    );
}

#[test]
fn with_zones_the_target_is_outside_the_troubled_hosts_zone() {
    let s = defaults();
    let mut f = fleet();
    for (h, z) in f.hosts.iter_mut().zip(["z1", "z1", "z2"]) {
        h.zone = Some(z.into());
    }
    sick(&mut f, 10, 10);
    // The shadow b shares a's zone: c, in another, is preferred.
    assert_eq!(
        moves(&decide(&f, &s, &mut Memory::default(), T0)),
        vec![("kv".into(), "c".into())]
    );
    // Without zones, the shadow.
    for h in &mut f.hosts {
        h.zone = None;
    }
    assert_eq!(
        moves(&decide(&f, &s, &mut Memory::default(), T0)),
        vec![("kv".into(), "b".into())]
    );
}

#[test]
fn a_host_without_an_assessment_yet_is_a_target_after_the_healthy_ones() {
    let s = defaults();
    let mut f = fleet();
    sick(&mut f, 10, 10);
    f.hosts[1].health = Some(HealthReport {
        level: HealthLevel::Degraded,
        score: 0,
        ..health(0)
    });
    f.workloads[0].shadow = None;
    assert_eq!(
        moves(&decide(&f, &s, &mut Memory::default(), T0)),
        vec![("kv".into(), "c".into())],
        "c (90) before b (no assessment)"
    );
    f.hosts[2].cordoned = true;
    assert_eq!(
        moves(&decide(&f, &s, &mut Memory::default(), T0)),
        vec![("kv".into(), "b".into())]
    );
}

#[test]
fn a_disconnected_host_has_no_triggers_it_is_failovers_business() {
    let s = defaults();
    let mut f = fleet();
    sick(&mut f, 10, 10);
    f.hosts[0].connected = false;
    assert!(decide(&f, &s, &mut Memory::default(), T0).is_empty());
}

#[test]
fn a_shared_cause_is_seen_before_every_host_it_hits_has_held_its_trigger() {
    // a and b fell at once; b's agent heartbeats a little later, so when a's low health has
    // held for its 3 heartbeats, b's has held for 2. b is in trouble too: kv on a is only
    // advised, not moved as if a alone were failing.
    let s = defaults();
    let mut f = fleet();
    f.workloads = vec![workload("kv", "a", "c")];
    sick(&mut f, 30, 3);
    f.hosts[1].health = Some(health(30));
    f.hosts[1].low_health_beats = 2;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty(), "{d:?}");
    match &d[0].action {
        Action::Advise { why, .. } => assert!(
            why.starts_with("2 of 3 connected hosts in trouble at once (a, b; more than 0.5)"),
            "{why}"
        ),
        other => panic!("kv: {other:?}"),
    }
    // b recovers: a alone is in trouble, and kv moves.
    f.hosts[1].health = Some(health(95));
    f.hosts[1].low_health_beats = 0;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert_eq!(moves(&d), vec![("kv".into(), "c".into())]);
}

#[test]
fn with_most_hosts_in_trouble_at_once_automatic_moves_are_only_advised_and_drains_go_on() {
    let s = defaults();
    let mut f = Fleet {
        hosts: ["a", "b", "c", "d", "e"].map(|h| host(h, 95)).to_vec(),
        workloads: vec![workload("kv", "a", "e"), workload("web", "d", "e")],
        recent_moves_ms: Vec::new(),
        link_bytes_per_s: 100e6,
    };
    for h in &mut f.hosts[..2] {
        h.health = Some(health(30));
        h.low_health_beats = 10;
    }
    // Two of five in trouble: not more than half, kv moves.
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert_eq!(moves(&d), vec![("kv".into(), "e".into())]);
    // Three of five: a shared cause is likelier; kv is only advised, and says why.
    f.hosts[2].health = Some(health(30));
    f.hosts[2].low_health_beats = 10;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty(), "{d:?}");
    match &d[0].action {
        Action::Advise { to, why } => {
            assert_eq!((d[0].workload.as_str(), to.as_str()), ("kv", "e"));
            assert!(
                why.starts_with(
                    "3 of 5 connected hosts in trouble at once (a, b, c; more than 0.5)"
                ),
                "{why}"
            );
        }
        other => panic!("kv: {other:?}"),
    }
    // An operator's drain is not held back by it (nor counted as trouble).
    f.hosts[3].draining = true;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert_eq!(moves(&d), vec![("web".into(), "e".into())]);
    // A host that is not connected is not counted: three of four connected is still most.
    f.hosts[3].draining = false;
    f.hosts[3].connected = false;
    let d = decide(&f, &s, &mut Memory::default(), T0);
    assert!(moves(&d).is_empty(), "{d:?}");
    // With the share at 1 the guard never holds.
    let all = Settings {
        shared_trouble_share: 1.0,
        ..defaults()
    };
    let d = decide(&f, &all, &mut Memory::default(), T0);
    assert_eq!(moves(&d), vec![("kv".into(), "e".into())]);
}

#[test]
fn a_running_workload_with_no_shadow_is_picked_to_get_one_only_while_one_can_be_armed() {
    let mut f = fleet();
    let lone = |name: &str, primary: &str| WorkloadView {
        shadow: None,
        ..workload(name, primary, "")
    };
    f.workloads = vec![
        workload("kv", "a", "b"),
        lone("solo", "a"),
        WorkloadView {
            moving: true,
            ..lone("moving", "a")
        },
        WorkloadView {
            running: false,
            ..lone("failed", "a")
        },
        lone("stranded", "c"),
    ];
    f.hosts[2].connected = false;
    let names: Vec<&str> = unshadowed(&f).iter().map(|w| w.name.as_str()).collect();
    // Not one shadowed already, mid-move, not running, or whose primary is not there to
    // send its epochs.
    assert_eq!(names, vec!["solo"]);
}
