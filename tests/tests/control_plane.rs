//! End to end: a coordinator and agents on separate namespace hosts, talking over real
//! mutual-TLS QUIC, observed the way an operator would — through `understudy hosts`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_coordinator::registry::HostRecord;
use understudy_tests::cluster::{Cluster, HEARTBEAT_TIMEOUT};
use understudy_tests::require_e2e;
use understudy_tests::wait::eventually;

fn find<'a>(hosts: &'a [HostRecord], name: &str) -> Result<&'a HostRecord, String> {
    hosts
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| format!("{name} not listed: {hosts:?}"))
}

fn connected_with_fresh_telemetry(c: &Cluster, name: &str) -> Result<HostRecord, String> {
    let hosts = c.hosts()?;
    let h = find(&hosts, name)?.clone();
    let t = h.telemetry.as_ref().ok_or("no telemetry")?;
    let age = understudy_coordinator::server::wall_ms().saturating_sub(t.sampled_at_unix_ms);
    if !h.connected {
        return Err(format!("{name} not connected"));
    }
    if age > 3000 {
        return Err(format!("{name}'s telemetry is {age} ms old"));
    }
    if h.heartbeats < 2 {
        return Err(format!("{name} has sent only {} heartbeats", h.heartbeats));
    }
    Ok(h)
}

#[test]
fn two_agents_on_their_own_hosts_appear_with_fresh_telemetry() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    for name in ["host-a", "host-b"] {
        let h = eventually(
            "agent listed with fresh telemetry",
            Duration::from_secs(10),
            || connected_with_fresh_telemetry(&c, name),
        );
        // The address the coordinator saw is the agent's own namespace host, not localhost.
        let addr = h.address.expect("address");
        assert_eq!(addr.ip(), c.host(name).addr, "{name} seen from {addr}");
        let t = h.telemetry.expect("telemetry");
        assert!(t.memory_total_bytes > 0 && t.memory_used_bytes <= t.memory_total_bytes);
    }
    // The human table lists both as connected.
    let out = c.cli(&["hosts"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in ["host-a", "host-b"] {
        let line = table.lines().find(|l| l.contains(name)).expect("row");
        assert!(
            line.contains("connected") && !line.contains("disconnected"),
            "{table}"
        );
    }
    assert_eq!(c.metric("understudy_agents_connected").unwrap(), 2.0);
    // A clean SIGTERM stops the agent with exit 0 and the coordinator sees it go at once.
    assert_eq!(c.stop("host-b"), Some(0));
    eventually(
        "stopped agent shown disconnected",
        Duration::from_secs(2),
        || {
            let hosts = c.hosts()?;
            if find(&hosts, "host-b")?.connected {
                Err("still connected".into())
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(c.stop("coord"), Some(0));
}

#[test]
fn agents_reconnect_after_coordinator_restart_and_registry_remembers_them() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    for name in ["host-a", "host-b"] {
        eventually("agent connected", Duration::from_secs(10), || {
            connected_with_fresh_telemetry(&c, name)
        });
    }
    let first_seen: Vec<u64> = ["host-a", "host-b"]
        .iter()
        .map(|n| find(&c.hosts().unwrap(), n).unwrap().first_seen_unix_ms)
        .collect();

    c.note("coord", "restarting coordinator");
    assert_eq!(c.stop("coord"), Some(0));
    // Agents keep running while the coordinator is away.
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.is_running("host-a") && c.is_running("host-b"));
    c.start_coordinator();

    // Right after the restart the registry still lists both hosts (from its store)...
    let hosts = eventually(
        "registry answers after restart",
        Duration::from_secs(10),
        || c.hosts(),
    );
    for (name, seen) in ["host-a", "host-b"].iter().zip(&first_seen) {
        let h = find(&hosts, name).unwrap();
        assert_eq!(
            h.first_seen_unix_ms, *seen,
            "{name} forgotten across restart"
        );
    }
    // ...and both agents reconnect on their own.
    for name in ["host-a", "host-b"] {
        eventually("agent reconnected", Duration::from_secs(15), || {
            connected_with_fresh_telemetry(&c, name)
        });
    }
}

#[test]
fn killed_host_is_shown_disconnected_within_the_heartbeat_timeout() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    for name in ["host-a", "host-b"] {
        eventually("agent connected", Duration::from_secs(10), || {
            connected_with_fresh_telemetry(&c, name)
        });
    }
    let killed_at = std::time::Instant::now();
    c.kill_host("host-a");
    eventually(
        "killed host shown disconnected",
        HEARTBEAT_TIMEOUT + Duration::from_secs(2),
        || {
            let hosts = c.hosts()?;
            if find(&hosts, "host-a")?.connected {
                Err("host-a still shown connected".into())
            } else {
                Ok(())
            }
        },
    );
    let took = killed_at.elapsed();
    // The survivor is unaffected.
    connected_with_fresh_telemetry(&c, "host-b").unwrap();
    eprintln!("host-a shown disconnected {took:?} after it was killed");
    let out = c.cli(&["hosts"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().find(|l| l.contains("host-a")).unwrap();
    assert!(row.contains("disconnected"), "{table}");
}
