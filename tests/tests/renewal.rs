//! End to end with real CRIU: certificates with a 1-minute lifetime renew themselves two
//! thirds through it — agents over their control connection, the coordinator with the CA
//! key it signs joins with — and are presented without a restart: connections stay up
//! across several renewals, a protected workload keeps its epochs flowing past the first
//! certificates' expiry, and new handshakes made after it (a coordinator restarted, a
//! switchover) succeed with the renewed certificates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs;
use std::time::{Duration, Instant};

use rustls_pki_types::{pem::PemObject, CertificateDer};
use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::identity::read_identity;
use understudy_common::tls::Role;
use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

const LIFETIME: Duration = Duration::from_secs(60);

const COUNTER: &str =
    "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n";

fn not_after(c: &Cluster, host: &str) -> i64 {
    let pem = fs::read(c.host_dir(host).join("host.crt")).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    read_identity(&der).unwrap().not_after_unix
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn renewals(c: &Cluster, host: &str) -> usize {
    let out = c.cli(&["events", "--host", host, "--output", "json"]);
    String::from_utf8_lossy(&out.stdout)
        .matches("renewed its agent certificate")
        .count()
}

#[test]
fn short_lived_certificates_renew_without_restarts_or_dropped_connections() {
    require_e2e!();
    require_criu!();
    let c = Cluster::new(&["host-a", "host-b"]);
    for (host, role) in [
        ("coord", Role::Coordinator),
        ("host-a", Role::Agent),
        ("host-b", Role::Agent),
    ] {
        let leaf = issue(c.ca(), host, role, Validity::from_now(LIFETIME)).unwrap();
        c.install_tls(host, &leaf, &c.ca().cert_pem);
    }
    c.enable_enrollment("1m");
    let first_expiry = not_after(&c, "host-a");
    let start = Instant::now();
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent("host-b");
    c.wait_connected(2);
    let agent_pids = (c.pid("host-a").unwrap(), c.pid("host-b").unwrap());
    let coord_pid = c.pid("coord").unwrap();

    c.create_workload(&[
        "counter",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "1s",
        "--",
        "/usr/bin/python3",
        "-c",
        COUNTER,
    ]);
    c.wait_for_epochs("counter", 2);

    // Two renewals of each agent (at 40 s and 80 s): the hosts stay connected all along.
    while renewals(&c, "host-a") < 2 || renewals(&c, "host-b") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "renewals: host-a {}, host-b {}\n{}",
            renewals(&c, "host-a"),
            renewals(&c, "host-b"),
            c.log("host-a")
        );
        let hosts = c.hosts().unwrap();
        assert!(
            hosts.iter().filter(|h| h.connected).count() == 2,
            "a host dropped during renewals: {hosts:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // The first certificates have expired by now; the files hold later ones.
    eventually(
        "the first certificates expired",
        Duration::from_secs(60),
        || {
            if now_unix() > first_expiry + 1 {
                Ok(())
            } else {
                Err(format!("{} s to go", first_expiry + 1 - now_unix()))
            }
        },
    );
    for host in ["coord", "host-a", "host-b"] {
        assert!(
            // Renewed at least once: two thirds of a lifetime later than the first.
            not_after(&c, host) > first_expiry + LIFETIME.as_secs() as i64 / 2,
            "{host}'s certificate was not renewed"
        );
    }
    // Epochs still commit over the agents' data plane.
    let epochs = c.workload("counter").unwrap().epochs;
    let later = eventually("epochs after the expiry", Duration::from_secs(20), || {
        let w = c.workload("counter")?;
        if w.epochs >= epochs + 2 {
            Ok(w)
        } else {
            Err(format!("{} epochs", w.epochs))
        }
    });
    assert_eq!(later.primary, "host-a");

    // New handshakes with the renewed certificates: the coordinator restarted (it loads its
    // renewed files), the agents reconnect (presenting theirs, without a restart), and a
    // switchover opens the agents' connections anew.
    c.kill("coord");
    c.start_coordinator();
    c.wait_connected(2);
    let out = c.cli(&["migrate", "counter"]);
    assert!(
        out.status.success(),
        "migrate after renewals: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("counter on host-b", Duration::from_secs(15), || {
        let n = numbers(&c.output_log("host-b", "counter"));
        if n.len() >= 10 {
            Ok(())
        } else {
            Err(format!("{} lines", n.len()))
        }
    });
    assert_eq!(
        (c.pid("host-a").unwrap(), c.pid("host-b").unwrap()),
        agent_pids,
        "an agent restarted"
    );
    assert_ne!(c.pid("coord").unwrap(), coord_pid);
    // The coordinator's own renewal was logged by the first process.
    assert!(
        c.log("coord")
            .contains("this coordinator's certificate was renewed"),
        "no coordinator renewal in its log"
    );
}
