//! End to end with real CRIU: what arrives on the shadow is checked before it is trusted.
//! A flipped byte in a staged file is caught by its hash and never committed; epochs and
//! orders from an older generation are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_common::epoch::Manifest;
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::Role;
use understudy_common::transfer::{DataMessage, DataReply, MAX_DATA_FRAME};
use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{rawclient, require_criu, require_e2e};

const SLEEPER: &str = "import time\nx = bytearray(8 * 1024 * 1024)\nwhile True:\n    x[0] = (x[0] + 1) % 256\n    time.sleep(0.05)\n";

fn cluster_with_shadow_env(env: &[(&str, &str)]) -> Cluster {
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent_env("host-b", env);
    c.wait_connected(2);
    c.create_workload(&[
        "w",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "500ms",
        "--",
        "/usr/bin/python3",
        "-c",
        SLEEPER,
    ]);
    c
}

fn committed_epochs(c: &Cluster) -> Vec<std::path::PathBuf> {
    let dir = c.host_dir("host-b").join("data/workloads/w/shadow");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn flipped_byte_in_a_staged_file_is_caught_refetched_and_never_committed() {
    require_e2e!();
    require_criu!();
    // Corrupt the first staged page image once: the shadow must notice and ask again.
    let c = cluster_with_shadow_env(&[("UNDERSTUDY_FAULT_CORRUPT_STAGED", "once:pages-")]);
    eventually("an epoch committed", Duration::from_secs(30), || {
        let w = c.workload("w")?;
        if w.epochs >= 2 {
            Ok(())
        } else {
            Err(format!("{} epochs, {:?}", w.epochs, w.unprotected))
        }
    });
    let log = c.log("host-b");
    assert!(
        log.contains("fault injection: flipped a byte"),
        "fault never injected"
    );
    assert!(
        log.contains("staged file refused"),
        "flip not detected:\n{log}"
    );
    assert!(
        c.log("host-a").contains("resending whole"),
        "no whole resend"
    );
    // Every committed epoch matches its manifest byte for byte.
    let epochs = committed_epochs(&c);
    assert!(!epochs.is_empty());
    for dir in epochs {
        Manifest::read_from(&dir).unwrap().verify_dir(&dir).unwrap();
    }
}

#[test]
fn persistent_corruption_refuses_the_epoch_and_nothing_is_committed_or_restorable() {
    require_e2e!();
    require_criu!();
    let c = cluster_with_shadow_env(&[("UNDERSTUDY_FAULT_CORRUPT_STAGED", "pages-")]);
    let w = eventually(
        "workload reported unprotected",
        Duration::from_secs(30),
        || {
            let w = c.workload("w")?;
            match &w.unprotected {
                Some(why) if why.contains("BLAKE3 mismatch") => Ok(w),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert_eq!(w.epochs, 0);
    assert!(
        committed_epochs(&c).is_empty(),
        "a corrupt epoch was committed"
    );
    let out = c.cli(&["migrate", "w"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no committed epoch"), "{err}");
    // The workload was never disturbed.
    assert_eq!(c.workload("w").unwrap().primary, "host-a");
}

#[test]
fn epoch_from_a_stale_generation_is_refused_naming_both_generations() {
    require_e2e!();
    require_criu!();
    let c = cluster_with_shadow_env(&[]);
    eventually("an epoch committed", Duration::from_secs(30), || {
        let w = c.workload("w")?;
        if w.epochs >= 1 {
            Ok(())
        } else {
            Err(format!("{:?}", w.unprotected))
        }
    });
    let out = c.cli(&["migrate", "w"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = c.workload("w").unwrap();
    assert_eq!((w.primary.as_str(), w.generation), ("host-b", 2));
    assert_eq!(w.shadow.as_deref(), Some("host-a"));

    // By hand, as the current primary (host-b) but with generation 1, offer an epoch to
    // the new shadow host-a.
    let cert = issue(c.ca(), "host-b", Role::Agent, Validity::days_from_now(1)).unwrap();
    let addr = std::net::SocketAddr::from((c.host("host-a").addr, 7442));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply: DataReply = rt.block_on(async {
        let conn = rawclient::open_data(addr, "host-a", &cert, &c.ca().cert_pem)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let offer = DataMessage::Offer {
            manifest: Manifest {
                workload: "w".into(),
                generation: 1,
                epoch: 1000,
                taken_unix_ms: 0,
                stdio_key: None,
                files: vec![],
                data: vec![],
            },
            base_epoch: None,
            final_epoch: false,
        };
        write_frame(&mut send, PROTOCOL_VERSION, &offer)
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            read_frame(&mut recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
        )
        .await
        .unwrap()
        .unwrap()
    });
    match reply {
        DataReply::Refused { reason } => {
            assert!(
                reason.contains("stale generation 1") && reason.contains("generation 2"),
                "{reason}"
            )
        }
        other => panic!("stale epoch accepted: {other:?}"),
    }
    assert!(!c
        .host_dir("host-a")
        .join("data/workloads/w/shadow/epoch-1000")
        .exists());
}
