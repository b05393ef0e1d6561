//! End to end: enrollment with join tokens. A host with only the cluster CA's certificate
//! joins with a fresh token (`understudy-agent join`), gets a certificate for a key made on
//! it, and registers; the same token again, an expired token, or a token used to take a
//! known host's name is refused, writes nothing, and is audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use understudy_common::tls::Role;
use understudy_tests::cluster::{Cluster, HTTP_PORT};
use understudy_tests::require_e2e;
use understudy_tests::wait::eventually;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `understudy token create` as the admin; the token (first line).
fn new_token(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = c.cli(&all);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

fn join(c: &Cluster, token: &str, name: &str, force: bool) -> Output {
    let coord = format!("{}:{HTTP_PORT}", c.host("coord").addr);
    let config = c.host_dir("host-j").join("agent.toml");
    let mut args = vec![
        "join",
        "--coordinator",
        &coord,
        "--token",
        token,
        "--name",
        name,
        "--config",
        config.to_str().unwrap(),
    ];
    if force {
        args.push("--force");
    }
    c.run_on("host-j", "understudy-agent", &args)
}

fn events(c: &Cluster) -> String {
    let out = c.cli(&["events", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_host_joins_with_a_fresh_token_once_and_spent_expired_or_misused_tokens_are_refused() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "host-j"]);
    // host-j has the cluster CA's certificate (public) and its config, no key or certificate.
    let hj = c.host_dir("host-j");
    fs::remove_file(hj.join("host.crt")).unwrap();
    fs::remove_file(hj.join("host.key")).unwrap();
    // The coordinator signs joins with the CA's key.
    c.enable_enrollment("30days");
    c.start_coordinator();
    c.start_agent("host-a");
    c.wait_connected(1);

    // Only an admin makes tokens.
    let mut viewer = c.cli_command();
    c.as_role(&mut viewer, Role::Operator);
    let out = viewer
        .args(["token", "create", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an operator made a token: {}",
        text(&out)
    );
    assert!(text(&out).contains("admin"), "{}", text(&out));

    let token = new_token(&c, &["--ttl", "1h"]);
    let out = join(&c, &token, "host-j", false);
    assert!(out.status.success(), "join: {}", text(&out));
    let key_mode = fs::metadata(hj.join("host.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the key is readable by others");
    let cert = fs::read(hj.join("host.crt")).unwrap();
    let key = fs::read(hj.join("host.key")).unwrap();

    // The joined host registers with the certificate it got.
    c.start_agent("host-j");
    eventually("host-j registered", Duration::from_secs(20), || {
        let hosts = c.hosts()?;
        hosts
            .iter()
            .find(|h| h.name == "host-j" && h.connected)
            .map(|_| ())
            .ok_or_else(|| format!("{hosts:?}"))
    });

    // Spent tokens are records of the store: a coordinator killed and started again
    // still knows this one was used.
    c.kill("coord");
    c.start_coordinator();
    c.wait_connected(2);

    // The same token again: refused, and nothing on the host changes.
    let out = join(&c, &token, "host-j", true);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(
        text(&out).contains("already used by host host-j"),
        "{}",
        text(&out)
    );

    // An expired token.
    let short = new_token(&c, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2500));
    let out = join(&c, &short, "host-j", true);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(text(&out).contains("expired"), "{}", text(&out));

    // A token for any new host cannot take a known host's name; one made for it can.
    let any = new_token(&c, &["--ttl", "1h"]);
    let out = join(&c, &any, "host-a", true);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(text(&out).contains("--host host-a"), "{}", text(&out));
    assert_eq!(
        fs::read(hj.join("host.crt")).unwrap(),
        cert,
        "certificate changed"
    );
    assert_eq!(fs::read(hj.join("host.key")).unwrap(), key, "key changed");

    // A deleted token is unknown.
    let deleted = new_token(&c, &["--ttl", "1h"]);
    let id = deleted.split_once('.').unwrap().0;
    let out = c.cli(&["token", "delete", id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = join(&c, &deleted, "host-z", true);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(text(&out).contains("unknown token"), "{}", text(&out));

    // Without --force, a host with a certificate is not re-enrolled by accident.
    let out = join(&c, &any, "host-j", false);
    assert_eq!(out.status.code(), Some(73), "{}", text(&out));

    // Every refusal is an audit event; the join is an event; no secret is in them.
    let ev = events(&c);
    for want in [
        "already used by host host-j",
        "expired",
        "joined with token",
    ] {
        assert!(ev.contains(want), "no event saying {want:?}: {ev}");
    }
    assert!(
        ev.matches("POST /v1/join: 403").count() >= 2,
        "refused joins not audited: {ev}"
    );
    for t in [&token, &short, &any, &deleted] {
        let secret = t.split_once('.').unwrap().1;
        assert!(!ev.contains(secret), "a token's secret is in the events");
        assert!(
            !c.log("coord").contains(secret),
            "a token's secret is in the log"
        );
    }
    // `token list` shows who used it, never the secret.
    let out = c.cli(&["token", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("by host-j"), "{list}");
    assert!(!list.contains(token.split_once('.').unwrap().1), "{list}");
}
