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
    let c = Cluster::started(&["host-a"]);
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
    let c = Cluster::started(&["host-a"]);
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

#[test]
fn hosts_show_a_health_score_with_its_top_metrics_or_why_there_is_none() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    // host-b's models are missing: it keeps running and says why it has no assessment.
    let cfg = c.host_dir("host-b").join("agent.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[models]\n", "[models]\ndir = \"/nonexistent/models\"\n"),
    )
    .unwrap();
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    c.wait_connected(2);
    let show = |host: &str| {
        let out = c.cli(&["host", "show", host]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let a = until(
        "host-a assessed",
        20,
        || show("host-a"),
        |s| s.contains("anomaly:"),
    );
    assert!(a.contains("top metrics:"), "{a}");
    let health_line = a.lines().find(|l| l.starts_with("health:")).unwrap();
    let score: u32 = health_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{health_line}"));
    assert!(score <= 100, "{health_line}");
    let b = until(
        "host-b reports why",
        10,
        || show("host-b"),
        |s| s.contains("degraded"),
    );
    assert!(
        b.contains("no anomaly model") && b.contains("/nonexistent/models"),
        "{b}"
    );
    let hosts = String::from_utf8_lossy(&c.cli(&["hosts"]).stdout).into_owned();
    assert!(
        hosts.contains("HEALTH") && hosts.contains("degraded"),
        "{hosts}"
    );
    let out = c.cli(&["host", "show", "nobody"]);
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn a_host_says_how_unusual_its_anomaly_score_is_for_it() {
    require_e2e!();
    let c = Cluster::new(&["host-a"]);
    c.start_coordinator();
    // Sampled every 25 ms instead of every second (the test build's hook), so that the model
    // learns this host and calibrates on its own scores in seconds: live that takes the
    // warm-up and the 456 samples a fit needs, about eight minutes at one a second.
    c.start_agent_env("host-a", &[("UNDERSTUDY_FAULTS", "sample-every:25")]);
    c.wait_connected(1);
    let show = || String::from_utf8_lossy(&c.cli(&["host", "show", "host-a"]).stdout).into_owned();
    let shown = until("a percentile on the anomaly line", 90, show, |s| {
        s.lines()
            .any(|l| l.starts_with("anomaly:") && l.contains("percentile"))
    });
    let line = shown.lines().find(|l| l.starts_with("anomaly:")).unwrap();
    let p: f64 = line
        .split("percentile ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after 'percentile': {line}"));
    assert!((0.0..=100.0).contains(&p), "{line}");
    assert!(
        line.contains("of this host's recent scores"),
        "an operator is told what the percentile is of: {line}"
    );
    // The API carries it as well, for dashboards.
    let hosts = c.hosts().unwrap();
    let health = hosts[0]
        .telemetry
        .as_ref()
        .and_then(|t| t.health.as_ref())
        .expect("host-a's health");
    let q = health.percentile.expect("the API's health.percentile");
    assert!((0.0..=100.0).contains(&f64::from(q)), "{health:?}");
}

#[test]
fn an_io_error_in_the_kernel_log_is_counted_and_named() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    // host-a reads its own kernel log (the test build's stand-in for /dev/kmsg, so that no
    // fake disk error lands in the real machine's log); host-b reads the machine's real one.
    let kmsg = c.kernel_log("host-a");
    c.start_agent("host-a");
    c.start_agent_env("host-b", &[("UNDERSTUDY_TEST_KMSG", "")]);
    c.wait_connected(2);
    let show = || String::from_utf8_lossy(&c.cli(&["host", "show", "host-a"]).stdout).into_owned();
    let before = until("host-a assessed", 20, show, |s| s.contains("anomaly:"));
    assert_eq!(kernel_count(&before, "io"), 0, "{before}");
    // What a failing disk logs, a record in /dev/kmsg's own format, stamped now.
    let now = understudy_tests::pressure::uptime_usec();
    std::fs::write(
        &kmsg,
        format!("3,77,{now},-;blk_update_request: I/O error, dev sdz, sector 2048 op 0x0:(READ)\n"),
    )
    .unwrap();
    let after = until("the error counted", 10, show, |s| {
        kernel_count(s, "io") == 1
    });
    // Its cost to the score is unit-tested (the anomaly part moves with the host's load).
    assert!(after.contains("health:"), "{after}");
    let addr = SocketAddr::from((c.host("host-a").addr, 7443));
    let metrics = http_get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains("understudy_host_kernel_errors_last_hour{kind=\"io\"}"),
        "{metrics}"
    );
    // The machine's real /dev/kmsg is read too: host-b's I/O error rate is a measured value,
    // not one of the metrics it says it cannot produce.
    let addr = SocketAddr::from((c.host("host-b").addr, 7443));
    eventually("host-b reads /dev/kmsg", Duration::from_secs(20), || {
        let m = http_get(addr, "/metrics").map_err(|e| e.to_string())?;
        if m.contains("metric_unavailable{metric=\"kernel_io_errors\"") {
            return Err(format!("host-b cannot read the kernel log: {m}"));
        }
        m.lines()
            .any(|l| l.starts_with("understudy_host_kernel_io_errors "))
            .then_some(())
            .ok_or(m)
    });
}

/// Runs `show` until its output satisfies `ready`, and returns that output.
fn until(what: &str, secs: u64, show: impl Fn() -> String, ready: impl Fn(&str) -> bool) -> String {
    eventually(what, Duration::from_secs(secs), || {
        let s = show();
        if ready(&s) {
            Ok(s)
        } else {
            Err(s)
        }
    })
}

/// The count of `kind` on `host show`'s "kernel errors:" line, 0 without one.
fn kernel_count(show: &str, kind: &str) -> u32 {
    let Some(line) = show.lines().find(|l| l.starts_with("kernel errors:")) else {
        return 0;
    };
    line.trim_start_matches("kernel errors:")
        .split(',')
        .filter_map(|part| {
            let mut w = part.split_whitespace();
            let n: u32 = w.next()?.parse().ok()?;
            (w.next()? == kind).then_some(n)
        })
        .sum()
}

#[test]
fn a_workloads_probe_is_run_and_its_failures_are_shown() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let flag = c.host_dir("host-a").join("stop-listening");
    // Accepts on 7070 until the flag file appears, then closes its listener and idles.
    let server = format!(
        "import os, socket, time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', 7070)); s.listen(16); s.settimeout(0.05)\n\
         while not os.path.exists({flag:?}):\n\
         \x20   try:\n\
         \x20       c, _ = s.accept(); c.close()\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         s.close()\n\
         while True: time.sleep(1)\n",
        flag = flag.display().to_string()
    );
    c.create_workload(&[
        "web",
        "--host",
        "host-a",
        "--probe-tcp",
        "7070",
        "--",
        "python3",
        "-c",
        &server,
    ]);
    let show = || String::from_utf8_lossy(&c.cli(&["workload", "show", "web"]).stdout).into_owned();
    let ok = until("probes answered", 15, show, |s| {
        // The first probe may come before the server listens.
        s.lines()
            .find(|l| l.starts_with("probe:"))
            .is_some_and(|l| {
                l.contains("tcp 7070 on host-a:")
                    && l.contains("(0 in a row), latency ")
                    && !l.contains("latency -")
            })
    });
    assert!(
        !ok.contains("last failure"),
        "no failure since the last success: {ok}"
    );
    std::fs::write(&flag, "").unwrap();
    let failing = until("failures counted", 15, show, |s| {
        s.contains("last failure: TCP probe of port 7070") && !s.contains("(0 in a row)")
    });
    assert!(failing.contains("Connection refused"), "{failing}");
    let addr = SocketAddr::from((c.host("host-a").addr, 7443));
    let metrics = http_get(addr, "/metrics").unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("understudy_workload_probe_failures_total{workload=\"web\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(failures >= 1.0, "{metrics}");
}

#[test]
fn agent_metrics_over_https_need_a_client_certificate_of_an_api_role() {
    require_e2e!();
    use understudy_common::tls::ca::{create_ca, issue, Validity};
    use understudy_common::tls::Role;
    use understudy_tests::api::ApiClient;
    let c = Cluster::new(&["host-a"]);
    let cfg = c.host_dir("host-a").join("agent.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen(
            "enabled = true\n",
            "enabled = true\nclient_certificates = true\n",
            1,
        ),
    )
    .unwrap();
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);
    let addr = SocketAddr::from((c.host("host-a").addr, 7443));
    let get = b"GET /metrics HTTP/1.1\r\nHost: host-a\r\nConnection: close\r\n\r\n";

    // A viewer's certificate (as Prometheus would have), checking the agent's own name.
    let viewer = ApiClient::checking(&c.client_dir(), Some(Role::Viewer), Role::Agent, "host-a");
    // The agent serves /metrics before its first host sample is in: wait for one.
    let answer = eventually("host metrics over HTTPS", Duration::from_secs(30), || {
        viewer.exchange(addr, get).and_then(|a| {
            if a.contains("understudy_host_") {
                Ok(a)
            } else {
                Err(format!("no host sample yet: {a}"))
            }
        })
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("understudy_host_"), "{answer}");

    // No certificate, another CA's, a host's: refused at the handshake; plain HTTP too.
    let none = ApiClient::checking(&c.client_dir(), None, Role::Agent, "host-a");
    let refused = |r: Result<String, String>| {
        if let Ok(a) = r {
            assert!(!a.contains("understudy_host_"), "served: {a}");
        }
    };
    refused(none.exchange(addr, get));
    let other_dir = tempfile::tempdir().unwrap();
    let other = create_ca(Validity::days_from_now(1)).unwrap();
    let stranger = issue(&other, "stranger", Role::Viewer, Validity::days_from_now(1)).unwrap();
    std::fs::write(other_dir.path().join("ca.crt"), &c.ca().cert_pem).unwrap();
    std::fs::write(other_dir.path().join("viewer.crt"), &stranger.cert_pem).unwrap();
    std::fs::write(other_dir.path().join("viewer.key"), &stranger.key_pem).unwrap();
    refused(
        ApiClient::checking(other_dir.path(), Some(Role::Viewer), Role::Agent, "host-a")
            .exchange(addr, get),
    );
    let host = issue(c.ca(), "host-x", Role::Agent, Validity::days_from_now(1)).unwrap();
    std::fs::write(other_dir.path().join("agent.crt"), &host.cert_pem).unwrap();
    std::fs::write(other_dir.path().join("agent.key"), &host.key_pem).unwrap();
    refused(
        ApiClient::checking(other_dir.path(), Some(Role::Agent), Role::Agent, "host-a")
            .exchange(addr, get),
    );
    refused(http_get(addr, "/metrics"));
    // Refusals are logged by the agent.
    assert!(
        c.log("host-a").contains("refused a metrics client"),
        "no refusal logged"
    );
}
