//! End to end: every agent serves its host's metrics — each metric of the feature schema
//! (models/schema.toml) as a value, or listed as unavailable with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use understudy_tests::cluster::{http_get, Cluster};
use understudy_tests::require_e2e;
use understudy_tests::wait::eventually;

const SCHEMA: &str = include_str!("../../models/schema.toml");

fn schema_names() -> Vec<String> {
    SCHEMA
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .collect()
}

#[test]
fn the_agent_serves_every_schema_metric_or_says_why_not() {
    require_e2e!();
    let c = Cluster::new(&["host-a"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);
    let addr = SocketAddr::from((c.host("host-a").addr, 7443));
    let names = schema_names();
    assert!(
        names.len() > 38,
        "the schema lists the SMD columns and extras"
    );
    let text = eventually("rates after two samples", Duration::from_secs(10), || {
        let t = http_get(addr, "/metrics")?;
        if t.contains("understudy_host_in_segs ") {
            Ok(t)
        } else {
            Err(format!("not yet: {} bytes", t.len()))
        }
    });
    for name in &names {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("understudy_host_{name} ")));
        let missing = text
            .lines()
            .find(|l| l.contains(&format!("metric=\"{name}\",reason=\"")));
        match (value, missing) {
            (Some(v), None) => {
                let v: f64 = v.parse().unwrap_or_else(|_| panic!("{name} = {v:?}"));
                assert!(v.is_finite(), "{name} = {v}");
            }
            (None, Some(line)) => assert!(!line.contains("reason=\"\""), "{line}"),
            other => panic!("{name}: {other:?}\n{text}"),
        }
    }
    assert!(text.contains("understudy_host_cpu_r "), "{text}");
}

#[test]
fn the_agent_reports_each_workloads_resource_use() {
    require_e2e!();
    let c = Cluster::new(&["host-a"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);
    // 64 MiB resident, in a tree of two processes.
    c.create_workload(&[
        "hog",
        "--host",
        "host-a",
        "--",
        "/bin/sh",
        "-c",
        "python3 -c 'import time; b = bytearray(64 << 20); time.sleep(3600)' & wait",
    ]);
    let addr = SocketAddr::from((c.host("host-a").addr, 7443));
    let value = |text: &str, family: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{family}{{workload=\"hog\"}} ")))
            .and_then(|v| v.parse().ok())
    };
    let text = eventually(
        "the workload's memory is counted",
        Duration::from_secs(15),
        || {
            let t = http_get(addr, "/metrics")?;
            match value(&t, "understudy_workload_resident_bytes") {
                Some(v) if v >= f64::from(64u32 << 20) => Ok(t),
                other => Err(format!("resident {other:?}")),
            }
        },
    );
    assert_eq!(
        value(&text, "understudy_workload_processes"),
        Some(2.0),
        "{text}"
    );
    assert!(value(&text, "understudy_workload_threads").unwrap() >= 2.0);
    assert!(value(&text, "understudy_workload_open_fds").unwrap() >= 3.0);
    assert!(value(&text, "understudy_workload_cpu_seconds_total").unwrap() >= 0.0);
}
