//! The shipped Prometheus alert rules (packaging/prometheus/understudy.rules.yml): promtool
//! accepts them and their unit tests pass (tests/fixtures/understudy.rules.test.yml: each
//! alert fires on the series of a host or workload in trouble, not on healthy ones); and on a
//! real cluster every metric the rules use is served by the coordinator or an agent, in
//! /metrics text that promtool's linter accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use understudy_tests::cluster::{http_get, Cluster};
use understudy_tests::command::run;
use understudy_tests::{require_criu, require_e2e};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// promtool (from Debian's prometheus package; scripts/install-deps.sh installs it), or
/// why the test cannot run; a missing promtool fails under UNDERSTUDY_REQUIRE_E2E=1.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        let why = "promtool not found (scripts/install-deps.sh installs it)";
        assert!(
            std::env::var("UNDERSTUDY_REQUIRE_E2E").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("SKIPPED: {why}");
    }
    found
}

const RULES: &str = "packaging/prometheus/understudy.rules.yml";

#[test]
fn the_alert_rules_load_and_fire_as_their_unit_tests_say() {
    let Some(promtool) = promtool() else { return };
    let (code, text) = run(
        Command::new(&promtool)
            .args(["check", "rules", RULES])
            .current_dir(repo()),
        "",
    );
    assert!(code == 0 && text.contains("SUCCESS"), "{text}");
    let (code, text) = run(
        Command::new(&promtool)
            .args(["test", "rules", "understudy.rules.test.yml"])
            .current_dir(repo().join("tests/fixtures")),
        "",
    );
    assert!(code == 0 && text.contains("SUCCESS"), "{text}");
}

/// The metric names an expression text uses.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("understudy_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Sample and family names in a /metrics text.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split_whitespace().next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_the_rules_use_is_served_and_lints_clean() {
    require_e2e!();
    require_criu!();
    let Some(promtool) = promtool() else { return };
    let c = Cluster::started(&["host-a", "host-b"]);
    c.create_workload(&[
        "web",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--probe-tcp",
        "7070",
        "--",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "7070",
    ]);
    c.wait_for_epochs("web", 2);
    let coordinator = c.metrics().unwrap();
    let agent = |h: &str| http_get(SocketAddr::from((c.host(h).addr, 7443)), "/metrics").unwrap();
    let (a, b) = (agent("host-a"), agent("host-b"));
    for (who, text) in [
        ("coordinator", &coordinator),
        ("host-a", &a),
        ("host-b", &b),
    ] {
        let (code, lint) = run(Command::new(&promtool).args(["check", "metrics"]), text);
        assert!(
            code == 0 && lint.trim().is_empty(),
            "{who}'s /metrics: {lint}\n{text}"
        );
    }
    // The workload's figures are where the fleet alerts look.
    assert!(
        coordinator.contains(
            "understudy_workload_state{workload=\"web\",primary=\"host-a\",state=\"running\"} 1"
        ),
        "{coordinator}"
    );
    assert!(
        coordinator.contains("understudy_workload_protected{workload=\"web\"} 1"),
        "{coordinator}"
    );
    let mut served = exposed(&coordinator);
    served.extend(exposed(&a));
    served.extend(exposed(&b));
    let rules = std::fs::read_to_string(repo().join(RULES)).unwrap();
    let used = names_in(&rules);
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<_> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the rules use {missing:?}, which nothing serves"
    );
}
