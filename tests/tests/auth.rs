//! End to end: only peers with a valid certificate of the right role from this cluster's
//! CA are served; every refusal is logged and counted, and nothing refused is registered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_common::tls::ca::{create_ca, issue, Validity};
use understudy_common::tls::Role;
use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{rawclient, require_e2e};

fn refused(c: &Cluster, reason: &str) -> Result<f64, String> {
    c.metric(&format!(
        "understudy_connections_refused_total{{reason=\"{reason}\"}}"
    ))
}

fn assert_never_listed(c: &Cluster, name: &str) {
    let hosts = c.hosts().unwrap();
    assert!(
        hosts.iter().all(|h| h.name != name),
        "{name} was registered: {hosts:?}"
    );
}

#[test]
fn agent_with_certificate_from_another_ca_is_refused_and_never_listed() {
    require_e2e!();
    let c = Cluster::new(&["host-a", "rogue"]);
    // "rogue" gets a certificate of the same name and role from a different CA, and trusts
    // that CA, so it would happily talk to a coordinator of its own cluster.
    let other_ca = create_ca(Validity::days_from_now(30)).unwrap();
    let cert = issue(&other_ca, "rogue", Role::Agent, Validity::days_from_now(30)).unwrap();
    c.install_tls(
        "rogue",
        &cert,
        &format!("{}{}", other_ca.cert_pem, c.ca().cert_pem),
    );
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("rogue");
    eventually(
        "unknown-CA refusal counted",
        Duration::from_secs(10),
        || match refused(&c, "unknown_ca")? {
            n if n >= 1.0 => Ok(()),
            n => Err(format!("{n} refusals")),
        },
    );
    eventually("legitimate agent listed", Duration::from_secs(10), || {
        let hosts = c.hosts()?;
        hosts
            .iter()
            .find(|h| h.name == "host-a" && h.connected)
            .map(|_| ())
            .ok_or_else(|| format!("{hosts:?}"))
    });
    assert_never_listed(&c, "rogue");
    assert!(c.log("coord").contains("refused agent certificate"));
    // The rogue agent keeps retrying and is refused every time, never registered.
    std::thread::sleep(Duration::from_secs(2));
    assert!(refused(&c, "unknown_ca").unwrap() >= 2.0);
    assert_never_listed(&c, "rogue");
}

#[test]
fn expired_and_wrong_role_certificates_are_refused_and_counted() {
    require_e2e!();
    let c = Cluster::new(&["stale", "imposter"]);
    let now = time::OffsetDateTime::now_utc();
    let expired = issue(
        c.ca(),
        "stale",
        Role::Agent,
        Validity {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
        },
    )
    .unwrap();
    c.install_tls("stale", &expired, &c.ca().cert_pem);
    c.start_coordinator();
    c.start_agent("stale");

    // A coordinator certificate cannot be used to join as an agent: the agent itself
    // refuses to start with it (exit 78, naming the file), and a hand-made client using
    // it is refused by the coordinator as the wrong role.
    let coord_cert = issue(
        c.ca(),
        "imposter",
        Role::Coordinator,
        Validity::days_from_now(1),
    )
    .unwrap();
    c.install_tls("imposter", &coord_cert, &c.ca().cert_pem);
    let cfg = c.host_dir("imposter").join("agent.toml");
    let out = std::process::Command::new(understudy_tests::cluster::bin("understudy-agent"))
        .args(["validate", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host.crt") && err.contains("role coordinator"),
        "{err}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(understudy_tests::rawclient::connect(
            c.quic_addr(),
            &coord_cert,
            &c.ca().cert_pem,
        ))
        .expect_err("a coordinator certificate must not be accepted from a client");
    eprintln!("wrong-role client refused: {err}");

    eventually("refusals counted", Duration::from_secs(10), || {
        let expired = refused(&c, "expired")?;
        let wrong = refused(&c, "wrong_role")?;
        if expired >= 1.0 && wrong >= 1.0 {
            Ok(())
        } else {
            Err(format!("expired={expired} wrong_role={wrong}"))
        }
    });
    assert_never_listed(&c, "stale");
    assert_never_listed(&c, "imposter");
}

#[test]
fn a_revoked_host_is_cut_off_and_refused_until_it_has_a_new_certificate() {
    require_e2e!();
    let c = Cluster::started(&["host-a", "host-b"]);
    let connected = |host: &str| -> Result<bool, String> {
        Ok(c.hosts()?.iter().any(|h| h.name == host && h.connected))
    };
    // Waits until `host` is (or is not) connected.
    let until = |what: &str, host: &str, want: bool| {
        eventually(what, Duration::from_secs(15), || match connected(host)? {
            now if now == want => Ok(()),
            now => Err(format!("connected: {now}")),
        })
    };

    // Revoking needs the admin role.
    let mut cli = c.cli_command();
    c.as_role(&mut cli, Role::Operator);
    let out = cli.args(["host", "revoke", "host-b"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin"), "{err}");
    assert!(connected("host-b").unwrap());

    // A data-plane connection host-b made to host-a with the certificate about to be
    // revoked (the data plane checks certificates with the other agents, not the
    // coordinator).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data_a = std::net::SocketAddr::from((c.host("host-a").addr, 7442));
    let old_b = issue(c.ca(), "host-b", Role::Agent, Validity::days_from_now(1)).unwrap();
    let open_data = |cert| {
        rt.block_on(rawclient::open_data(
            data_a,
            "host-a",
            cert,
            &c.ca().cert_pem,
        ))
    };
    let early = open_data(&old_b).expect("host-b's certificate accepted before the revocation");

    let out = c.cli(&["host", "revoke", "host-b"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("new certificate"), "{said}");

    // The other agents learn it: host-a closes the open connection and refuses new ones
    // with the revoked certificate, and takes one issued after the revocation.
    let closed = rt
        .block_on(rawclient::closed_within(&early, Duration::from_secs(15)))
        .expect("host-a kept a revoked host's data-plane connection open");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(a) if a.error_code == quinn::VarInt::from_u32(7)),
        "{closed:?}"
    );
    // TLS 1.3: the client's side of the handshake may finish before the server has
    // checked the client's certificate; a refusal then closes the connection at once.
    let refusal = |conn: Result<quinn::Connection, String>| match conn {
        Err(e) => Ok(e),
        Ok(conn) => rt
            .block_on(rawclient::closed_within(&conn, Duration::from_secs(3)))
            .map(|e| e.to_string()),
    };
    let refused_later = refusal(open_data(&old_b))
        .expect("host-a accepted a revoked certificate on its data plane");
    assert!(
        refused_later.contains("44"),
        "not refused as revoked: {refused_later}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let new_b = issue(c.ca(), "host-b", Role::Agent, Validity::days_from_now(1)).unwrap();
    let kept = refusal(open_data(&new_b));
    assert!(
        kept.is_err(),
        "a certificate issued after the revocation was refused: {kept:?}"
    );
    assert!(
        c.log("host-a").contains("revoked"),
        "host-a's log says why it closed and refused host-b"
    );

    // Its connection is closed and, though its agent keeps trying, it stays out.
    until("host-b cut off", "host-b", false);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!connected("host-b").unwrap(), "a revoked host came back");
    assert!(connected("host-a").unwrap(), "another host was cut off");
    let events: Vec<understudy_coordinator::events::Event> =
        serde_json::from_str(&c.api_get("coord", "/v1/events?limit=1000").unwrap()).unwrap();
    let has = |kind: &str, needle: &str| {
        events
            .iter()
            .any(|e| e.kind == kind && e.message.contains(needle))
    };
    assert!(has("revoke", "host-b"), "{events:#?}");
    assert!(has("audit", "refused host-b"), "{events:#?}");
    assert!(
        c.log("host-b").contains("revoked"),
        "the agent's log says why"
    );

    // The revocation outlives a restart of the coordinator.
    assert_eq!(c.stop("coord"), Some(0));
    c.start_coordinator();
    until("host-a back", "host-a", true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !connected("host-b").unwrap(),
        "revocation forgotten on restart"
    );
    // An agent holds the list in memory: restarted, it is told again when it registers.
    c.stop("host-a");
    c.start_agent("host-a");
    until("host-a back after its restart", "host-a", true);
    eventually(
        "the restarted host-a refusing host-b's revoked certificate",
        Duration::from_secs(10),
        || match refusal(open_data(&old_b)) {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    );

    // A certificate issued after the revocation lets it back.
    c.stop("host-b");
    c.reissue_agent_certificate("host-b");
    c.start_agent("host-b");
    until("host-b back with a new certificate", "host-b", true);
}
