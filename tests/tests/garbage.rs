//! End to end: an authenticated peer that sends garbage, another protocol version or an
//! oversized frame is disconnected with a clear reason, while the coordinator keeps
//! serving everyone else without a stall.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_common::frame::MAGIC;
use understudy_common::protocol::{close, PROTOCOL_VERSION};
use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::Role;
use understudy_tests::cluster::Cluster;
use understudy_tests::rawclient;
use understudy_tests::require_e2e;
use understudy_tests::wait::eventually;

fn header(version: u16, len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// Sends `bytes` on a fresh authenticated stream and returns how the coordinator closed it.
async fn send_raw(c: &Cluster, bytes: &[u8], register_first: bool) -> (u64, String) {
    let cert = issue(c.ca(), "prober", Role::Agent, Validity::days_from_now(1)).unwrap();
    let ca = c.ca().cert_pem.clone();
    let (conn, mut send) = if register_first {
        let (conn, send, _recv) = rawclient::connect(c.quic_addr(), &cert, &ca).await.unwrap();
        (conn, send)
    } else {
        let conn = rawclient::open(c.quic_addr(), &cert, &ca).await.unwrap();
        let (send, _recv) = conn.open_bi().await.unwrap();
        (conn, send)
    };
    send.write_all(bytes).await.unwrap();
    let err = rawclient::closed_within(&conn, Duration::from_secs(5))
        .await
        .unwrap();
    match err {
        quinn::ConnectionError::ApplicationClosed(a) => (
            a.error_code.into_inner(),
            String::from_utf8_lossy(&a.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other}"),
    }
}

#[test]
fn malformed_frames_close_only_the_offending_connection() {
    require_e2e!();
    let c = Cluster::new(&["host-a"]);
    c.start_coordinator();
    c.start_agent("host-a");
    let heartbeats = || -> Result<u64, String> {
        let hosts = c.hosts()?;
        let a = hosts.iter().find(|h| h.name == "host-a" && h.connected);
        a.map(|h| h.heartbeats)
            .ok_or_else(|| format!("host-a not connected: {hosts:?}"))
    };
    let before = eventually("host-a heartbeating", Duration::from_secs(10), || {
        heartbeats().and_then(|n| if n >= 2 { Ok(n) } else { Err(format!("{n}")) })
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, reason) = rt.block_on(send_raw(&c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false));
    assert_eq!(code, u64::from(close::PROTOCOL_ERROR));
    assert!(reason.contains("not an understudy frame"), "{reason}");

    let (code, reason) = rt.block_on(send_raw(&c, &header(99, 1), false));
    assert_eq!(code, u64::from(close::UNSUPPORTED_VERSION));
    assert!(
        reason.contains("version 99")
            && reason.contains(&format!("speaks version {PROTOCOL_VERSION}")),
        "{reason}"
    );

    // A 4 GiB length is refused from the header alone: no hang waiting for the payload.
    let (code, reason) = rt.block_on(send_raw(&c, &header(PROTOCOL_VERSION, u32::MAX), false));
    assert_eq!(code, u64::from(close::PROTOCOL_ERROR));
    assert!(reason.contains("exceeds the cap"), "{reason}");

    // A registered peer sending a frame with a random payload.
    let mut junk = header(PROTOCOL_VERSION, 64);
    junk.extend((0..64u8).map(|i| i.wrapping_mul(97).wrapping_add(13)));
    let (code, reason) = rt.block_on(send_raw(&c, &junk, true));
    assert_eq!(code, u64::from(close::PROTOCOL_ERROR));
    assert!(reason.contains("malformed"), "{reason}");

    // Meanwhile the real agent never stopped being served.
    eventually("host-a keeps heartbeating", Duration::from_secs(5), || {
        heartbeats().and_then(|n| {
            if n >= before + 4 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        })
    });
    assert!(c.is_running("coord"), "coordinator died");
    let errors = c.metric("understudy_protocol_errors_total").unwrap();
    assert!(errors >= 4.0, "protocol errors counted: {errors}");
    // And a new, well-behaved client is still served promptly.
    let cert = issue(c.ca(), "late", Role::Agent, Validity::days_from_now(1)).unwrap();
    rt.block_on(rawclient::connect(c.quic_addr(), &cert, &c.ca().cert_pem))
        .expect("a well-behaved client is still served");
}
