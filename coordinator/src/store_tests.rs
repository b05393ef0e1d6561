use super::*;
use crate::workloads::migration::Migration;
use crate::workloads::{MigrationSummary, WorkloadState};
use understudy_common::telemetry::{
    Forecast, HealthLevel, HealthReport, ProbeReport, Risk, TelemetrySummary,
};
use understudy_common::workload::{
    Cadence, CadenceLimit, EpochReport, Peer, Probe, RestartPolicy, WorkloadSpec,
};
use understudy_common::workload_v7::EpochReportV7;

fn host(name: &str, full: bool) -> HostRecord {
    let telemetry = full.then(|| TelemetrySummary {
        sampled_at_unix_ms: 5,
        cpu_percent: 12.5,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        load: [0.1, 0.2, 0.3],
        uptime_secs: 99,
        health: Some(HealthReport {
            score: 64,
            level: HealthLevel::Critical,
            anomaly: 0.9,
            anomaly_threshold: 0.5,
            top: vec![("disk_q".into(), 0.7)],
            note: Some("learning".into()),
            forecasts: vec![Forecast {
                metric: "mem_u".into(),
                horizon_secs: 300,
                central: 0.5,
                upper: 0.7,
            }],
            risk: Some(Risk {
                probability: 0.2,
                horizon_secs: 300,
                cause: "mem_u".into(),
            }),
            kernel_errors: vec![("io".into(), 3)],
            percentile: Some(99.5),
        }),
        probes: vec![ProbeReport {
            workload: "w".into(),
            probe: "tcp 7000".into(),
            runs: 3,
            failures: 1,
            consecutive_failures: 0,
            latency_ms: Some(1.5),
            latency_anomaly: 0.1,
            latency_alarms: 0,
            last_error: Some("refused".into()),
        }],
    });
    HostRecord {
        name: name.into(),
        address: full.then(|| "10.0.0.1:4000".parse().unwrap()),
        connected: full,
        first_seen_unix_ms: 1,
        last_seen_unix_ms: 2,
        agent_version: "0.1.0".into(),
        telemetry,
        heartbeats: 3,
        data_port: full.then_some(7442),
    }
}

fn spec(name: &str, full: bool) -> WorkloadSpec {
    WorkloadSpec {
        name: name.into(),
        command: vec!["/bin/sh".into(), "-c".into(), "a; b".into(), String::new()],
        env: if full {
            vec![("K".into(), "v".into())]
        } else {
            Vec::new()
        },
        workdir: full.then(|| "/srv".into()),
        interval_ms: 1000,
        probe: None,
        data_dirs: if full {
            vec!["/srv/db".into()]
        } else {
            Vec::new()
        },
        restart: RestartPolicy {
            attempts: 2,
            delay_ms: 100,
            window_ms: 60_000,
        },
        user: full.then(|| "memcache".into()),
        group: full.then(|| "memcache".into()),
        groups: full.then(|| vec!["adm".into()]),
        stop_signal: "SIGINT".into(),
        stop_timeout_ms: 5_000,
        failover: if full {
            understudy_common::workload::FailoverMode::Manual
        } else {
            understudy_common::workload::FailoverMode::Auto
        },
        priority: if full {
            understudy_common::workload::Priority::Critical
        } else {
            understudy_common::workload::Priority::Normal
        },
        secret_env: if full { vec!["K".into()] } else { Vec::new() },
    }
}

/// A workload record in `state`, with every optional field set (`full`) or none.
fn workload(name: &str, state: WorkloadState, full: bool) -> WorkloadRecord {
    WorkloadRecord {
        spec: spec(name, full),
        primary: "a".into(),
        shadow: full.then(|| "b".into()),
        generation: 3,
        state,
        unprotected: full.then(|| "shadow lagging: x".into()),
        last_epoch: full.then(|| EpochReport {
            workload: name.into(),
            generation: 3,
            epoch: 9,
            shadow: "b".into(),
            bytes_total: 100,
            incremental: true,
            ..Default::default()
        }),
        epochs: 9,
        created_unix_ms: 1,
        last_migration: full.then(|| MigrationSummary {
            from: "a".into(),
            to: "b".into(),
            generation: 2,
            outcome: "rolled back".into(),
            error: Some("e".into()),
            freeze_ms: Some(12),
            total_ms: 40,
            finished_unix_ms: 5,
            recovery_epoch: Some(8),
            recovery_age_ms: Some(900),
        }),
        restarts: 1,
        last_exit: full.then(|| ("exited with status 3".into(), 7)),
        last_correction: full.then(|| ("corrected".into(), 8)),
        more_shadows: Default::default(),
    }
}

fn every_state() -> Vec<WorkloadState> {
    vec![
        WorkloadState::Starting,
        WorkloadState::Running,
        WorkloadState::Migrating,
        WorkloadState::Exited("exited with status 3".into()),
        WorkloadState::Failed("could not start".into()),
        WorkloadState::Lost("a unreachable".into()),
    ]
}

#[test]
fn every_record_kind_survives_reopen_with_every_variant_and_optional_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let hosts = vec![host("a", true), host("b", false)];
    let mut workloads = Vec::new();
    for (i, state) in every_state().into_iter().enumerate() {
        for full in [true, false] {
            let mut w = workload(&format!("w{i}-{full}"), state.clone(), full);
            if full {
                w.spec.probe = Some(if i % 2 == 0 {
                    Probe::Tcp { port: 6379 }
                } else {
                    Probe::Command {
                        argv: vec!["/bin/check".into()],
                    }
                });
            }
            workloads.push(w);
        }
    }
    assert_eq!(
        workloads.len(),
        WorkloadState::NAMES.len() * 2,
        "a state is missing from every_state()"
    );
    let peer = |n: &str| Peer {
        name: n.into(),
        addr: "10.0.0.3:7442".parse().unwrap(),
    };
    let (migration, _) = Migration::start(spec("w0-true", true), "a", peer("b"), 4, None, 1);
    let (mut with_shadow, _) =
        Migration::start(spec("w1-true", true), "a", peer("b"), 4, Some(peer("c")), 1);
    with_shadow.error = Some("x".into());
    with_shadow.rollback_generation = Some(5);
    let tomb = Tombstone {
        name: "gone".into(),
        generation: 7,
        deleted_unix_ms: 9,
    };
    let admin = crate::admin::HostAdmin {
        host: "a".into(),
        cordoned: true,
        drain: Some(crate::admin::Drain {
            started_unix_ms: 1,
            deadline_unix_ms: Some(2),
            parallel: 2,
            workloads: vec!["w0-true".into()],
        }),
        maintenance: vec![(
            3,
            crate::decide::Window {
                start_ms: 4,
                duration_ms: 5,
                reason: "firmware".into(),
            },
        )],
    };
    let bare = crate::admin::HostAdmin {
        cordoned: true,
        ..crate::admin::HostAdmin::new("b")
    };
    let mut log = crate::events::Log::new(Vec::new());
    let events: Vec<crate::events::Event> = [
        (Some("a"), None, vec![]),
        (
            None,
            Some("w0-true"),
            vec![("score".to_owned(), "0.7".to_owned())],
        ),
    ]
    .into_iter()
    .map(|(h, w, inputs)| log.push(7, "decision", (h, w), "moved".into(), inputs).0)
    .collect();
    {
        let s = Store::open(&path).unwrap();
        s.save_hosts(&hosts).unwrap();
        for w in &workloads {
            let m = [&migration, &with_shadow]
                .into_iter()
                .find(|m| m.workload() == w.spec.name);
            s.save_workload(w, m).unwrap();
        }
        s.save_workload(&workload("gone", WorkloadState::Running, false), None)
            .unwrap();
        s.delete_workload("gone", &tomb).unwrap();
        s.save_host_admin(&admin).unwrap();
        s.save_host_admin(&bare).unwrap();
        s.save_host_admin(&crate::admin::HostAdmin::new("c"))
            .unwrap();
        for e in &events {
            s.append_event(e).unwrap();
        }
    }
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.hosts, hosts);
    let mut want = workloads.clone();
    want.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    assert_eq!(loaded.workloads, want);
    assert_eq!(loaded.migrations, vec![migration, with_shadow]);
    assert_eq!(loaded.tombstones, vec![tomb]);
    assert_eq!(
        loaded.host_admin,
        vec![admin, bare],
        "an empty record is not kept"
    );
    assert_eq!(loaded.events, events);
}

/// Writes a raw value under `key` in `table`, as an older or damaged build would have.
fn put_raw(path: &Path, table: Table, key: &str, value: &[u8]) {
    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(table).unwrap().insert(key, value).unwrap();
    tx.commit().unwrap();
}

#[test]
fn an_unreadable_record_is_refused_naming_its_kind_and_key_and_salvage_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    {
        let s = Store::open(&path).unwrap();
        s.save_hosts([&host("a", true)]).unwrap();
        s.save_workload(&workload("good", WorkloadState::Running, true), None)
            .unwrap();
    }
    // What the earlier build wrote for a workload: version 2, adjacently tagged state.
    put_raw(&path, WORKLOADS.table, "c4b", &[2, 1, 2, 3]);
    let err = Store::open(&path).unwrap().load().unwrap_err().to_string();
    assert!(
        err.contains("workload record \"c4b\"") && err.contains("version 2"),
        "{err}"
    );
    put_raw(&path, WORKLOADS.table, "c4b", &[RECORD_VERSION, 0xff, 0xff]);
    let err = Store::open(&path).unwrap().load().unwrap_err().to_string();
    assert!(err.contains("workload record \"c4b\""), "{err}");

    let report = salvage(&path, 1234).unwrap();
    assert_eq!(report.dropped.len(), 1, "{report:?}");
    assert_eq!(report.dropped[0].0, "workload");
    assert_eq!(report.dropped[0].1, "c4b");
    assert!(report.moved_to.exists(), "the damaged file is kept");
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.hosts, vec![host("a", true)]);
    assert_eq!(
        loaded.workloads,
        vec![workload("good", WorkloadState::Running, true)]
    );
}

#[test]
fn host_records_written_before_the_percentile_are_read_without_one() {
    use crate::registry::HostRecordV9;
    use understudy_common::telemetry_v9::TelemetrySummaryV9;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let h = host("a", true);
    let old = HostRecordV9 {
        name: h.name.clone(),
        address: h.address,
        connected: h.connected,
        first_seen_unix_ms: h.first_seen_unix_ms,
        last_seen_unix_ms: h.last_seen_unix_ms,
        agent_version: h.agent_version.clone(),
        telemetry: h
            .telemetry
            .clone()
            .map(TelemetrySummaryV9::written_by_old_build),
        heartbeats: h.heartbeats,
        data_port: h.data_port,
    };
    Store::open(&path).unwrap();
    // Versions 2 to 9 all wrote this layout.
    for version in [2u8, 9] {
        let mut bytes = vec![version];
        bytes.extend(codec::encode(&old).unwrap());
        put_raw(&path, HOSTS.table, "a", &bytes);
        let mut expected = h.clone();
        if let Some(health) = expected.telemetry.as_mut().and_then(|t| t.health.as_mut()) {
            health.percentile = None;
        }
        let hosts = Store::open(&path).unwrap().load().unwrap().hosts;
        assert_eq!(hosts, vec![expected], "version {version}");
    }
    // The current layout, with the percentile, reads back whole.
    let store = Store::open(&path).unwrap();
    store.save_hosts([&h]).unwrap();
    drop(store);
    assert_eq!(Store::open(&path).unwrap().load().unwrap().hosts, vec![h]);
}

#[test]
fn workloads_and_switchovers_written_before_priority_are_read_with_normal_priority() {
    use understudy_common::workload::Priority;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut w = workload("old", WorkloadState::Migrating, true);
    w.spec.priority = Priority::Normal;
    w.spec.secret_env = Vec::new();
    let v5 = |body: Vec<u8>| [vec![5u8], body].concat();
    let peer = |n: &str| Peer {
        name: n.into(),
        addr: "10.0.0.3:7442".parse().unwrap(),
    };
    let (m, _) = Migration::start(w.spec.clone(), "a", peer("b"), 4, Some(peer("c")), 1);
    Store::open(&path).unwrap();
    put_raw(
        &path,
        WORKLOADS.table,
        "old",
        &v5(codec::encode(
            &w.clone()
                .without_more_shadows()
                .map_spec(understudy_common::workload_v5::SpecV5::written_by_old_build)
                .map_epoch(EpochReportV7::written_by_old_build),
        )
        .unwrap()),
    );
    put_raw(
        &path,
        MIGRATIONS.table,
        "old",
        &v5(codec::encode(
            &m.clone()
                .map_spec(understudy_common::workload_v5::SpecV5::written_by_old_build),
        )
        .unwrap()),
    );
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.workloads, vec![w.clone()]);
    assert_eq!(loaded.migrations, vec![m.clone()]);
    // Salvage keeps them readable (each with its own version), and a record written now
    // carries the priority.
    salvage(&path, 99).unwrap();
    let s = Store::open(&path).unwrap();
    assert_eq!(s.load().unwrap().workloads, vec![w.clone()]);
    w.spec.priority = Priority::High;
    s.save_workload(&w, None).unwrap();
    assert_eq!(s.load().unwrap().workloads, vec![w]);
}

#[test]
fn workloads_and_switchovers_written_before_secret_env_are_read_with_none() {
    use understudy_common::workload_v6::SpecV6;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut w = workload("old", WorkloadState::Migrating, true);
    w.spec.secret_env = Vec::new();
    let v6 = |body: Vec<u8>| [vec![6u8], body].concat();
    let peer = |n: &str| Peer {
        name: n.into(),
        addr: "10.0.0.3:7442".parse().unwrap(),
    };
    let (m, _) = Migration::start(w.spec.clone(), "a", peer("b"), 4, Some(peer("c")), 1);
    Store::open(&path).unwrap();
    let old_w = w
        .clone()
        .without_more_shadows()
        .map_spec(SpecV6::written_by_old_build)
        .map_epoch(EpochReportV7::written_by_old_build);
    let old_m = m.clone().map_spec(SpecV6::written_by_old_build);
    put_raw(
        &path,
        WORKLOADS.table,
        "old",
        &v6(codec::encode(&old_w).unwrap()),
    );
    put_raw(
        &path,
        MIGRATIONS.table,
        "old",
        &v6(codec::encode(&old_m).unwrap()),
    );
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.workloads, vec![w.clone()]);
    assert_eq!(loaded.migrations, vec![m]);
    // A record written now keeps its secret names.
    let s = Store::open(&path).unwrap();
    w.spec.secret_env = vec!["K".into()];
    s.save_workload(&w, None).unwrap();
    assert_eq!(s.load().unwrap().workloads, vec![w]);
}

#[test]
fn revocations_are_kept_and_a_newer_one_replaces_the_older() {
    use crate::revocation::Revocation;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let s = Store::open(&path).unwrap();
    let r = |at: u64| Revocation {
        host: "host-b".into(),
        at_unix_ms: at,
        by: "alice (admin)".into(),
    };
    s.save_revocation(&r(1_000)).unwrap();
    s.save_revocation(&r(2_000)).unwrap();
    drop(s);
    assert_eq!(
        Store::open(&path).unwrap().load().unwrap().revocations,
        vec![r(2_000)]
    );
}

#[test]
fn join_tokens_are_kept_spent_and_forgotten() {
    use crate::tokens::{create, Request, ID_BYTES, SECRET_BYTES};
    use understudy_common::tls::Role;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let s = Store::open(&path).unwrap();
    let make = |seed: u8| {
        let req = Request {
            role: Role::Agent,
            host: None,
            ttl_ms: 60_000,
        };
        create(
            req,
            "alice (admin)",
            1_000,
            &[seed; ID_BYTES + SECRET_BYTES],
        )
        .1
    };
    let (a, b) = (make(1), make(2));
    s.save_token(&a, &[]).unwrap();
    let mut spent = b.clone();
    spent.used = Some(("host-j".into(), 2_000));
    s.save_token(&b, &[]).unwrap();
    s.save_token(&spent, &[]).unwrap();
    drop(s);
    // Across a restart: both, the second spent.
    let s = Store::open(&path).unwrap();
    assert_eq!(s.tokens().unwrap(), vec![a.clone(), spent.clone()]);
    // Writing a new one forgets the ones named.
    let c = make(3);
    s.save_token(&c, &[a.id.clone(), spent.id.clone()]).unwrap();
    assert_eq!(s.tokens().unwrap(), vec![c]);
}

#[test]
fn a_data_key_is_made_once_kept_across_reopen_never_replaced_and_goes_with_its_workload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let s = Store::open(&path).unwrap();
    let k = s.data_key("db").unwrap();
    assert_eq!(
        s.data_key("db").unwrap(),
        k,
        "a second use makes no new key"
    );
    assert_ne!(s.data_key("web").unwrap(), k, "each workload has its own");
    // A replicated write of another key for "db" (a second coordinator that made one at
    // the same time) changes nothing: the first one written is kept.
    let mut w = Writer {
        store: &s,
        ops: Vec::new(),
    };
    w.put(DATA_KEYS, "db", &KeyBytes([9; 32])).unwrap();
    s.apply(&w.ops, None).unwrap();
    drop(s);
    // A salvage keeps it (it reads every kind of record as what it is).
    let salvaged = salvage(&path, 1).unwrap();
    assert!(salvaged.dropped.is_empty(), "{:?}", salvaged.dropped);
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.data_key("db").unwrap(),
        k,
        "kept across a reopen and a salvage"
    );
    let tomb = Tombstone {
        name: "db".into(),
        generation: 1,
        deleted_unix_ms: 1,
    };
    s.delete_workload("db", &tomb).unwrap();
    assert_ne!(
        s.data_key("db").unwrap(),
        k,
        "a new workload of the name has a new key"
    );
}

#[test]
fn workloads_written_before_cadence_are_read_with_none_and_new_ones_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let w = workload("old", WorkloadState::Running, true);
    assert!(w.last_epoch.is_some(), "the test needs a recovery point");
    let v7 = |body: Vec<u8>| [vec![7u8], body].concat();
    Store::open(&path).unwrap();
    let old_w = w
        .clone()
        .without_more_shadows()
        .map_epoch(EpochReportV7::written_by_old_build);
    put_raw(
        &path,
        WORKLOADS.table,
        "old",
        &v7(codec::encode(&old_w).unwrap()),
    );
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.workloads, vec![w.clone()]);
    // A record written now keeps the cadence its primary reported.
    let s = Store::open(&path).unwrap();
    let mut w = w;
    if let Some(e) = w.last_epoch.as_mut() {
        e.cadence = Some(Cadence {
            interval_ms: 4200,
            limit: CadenceLimit::FreezeBudget,
        });
    }
    s.save_workload(&w, None).unwrap();
    assert_eq!(s.load().unwrap().workloads, vec![w]);
}

#[test]
fn workloads_written_before_several_shadows_are_read_with_one_and_new_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let w = workload("old", WorkloadState::Running, true);
    let v8 = |body: Vec<u8>| [vec![8u8], body].concat();
    Store::open(&path).unwrap();
    let old_w = w.clone().without_more_shadows();
    put_raw(
        &path,
        WORKLOADS.table,
        "old",
        &v8(codec::encode(&old_w).unwrap()),
    );
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.workloads, vec![w.clone()]);
    assert_eq!(loaded.workloads[0].shadows(), ["b"]);
    assert_eq!(loaded.workloads[0].more_shadows.wanted(), 1);
    // A record written now keeps its shadows and what each holds.
    let s = Store::open(&path).unwrap();
    let mut w = w;
    w.more_shadows = crate::workloads::MoreShadows {
        wanted: 2,
        hosts: vec!["c".into()],
        epochs: vec![("b".into(), 9), ("c".into(), 8)],
    };
    s.save_workload(&w, None).unwrap();
    let loaded = s.load().unwrap().workloads;
    assert_eq!(loaded, vec![w]);
    assert_eq!(loaded[0].shadows(), ["b", "c"]);
    assert_eq!(loaded[0].epoch_on("c"), Some(8));
}
