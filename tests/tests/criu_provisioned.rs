//! The CRIU that the provisioning script sets up works on this kernel: `criu check`
//! passes, and a live process holding a TCP listener on a namespace host is dumped
//! without being disturbed (it keeps serving and keeps its in-memory state).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use understudy_tests::criu;
use understudy_tests::netns::Net;
use understudy_tests::wait::eventually;
use understudy_tests::{require_e2e, ChildGuard};

/// Answers every TCP connection with the number of connections it has seen so far,
/// a count that lives only in its memory.
const COUNTER_SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen()
n = 0
while True:
    c, _ = s.accept()
    n += 1
    c.sendall(b"%d\n" % n)
    c.close()
"#;

fn ask(addr: SocketAddr) -> Result<u64, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.trim().parse().map_err(|e| format!("{out:?}: {e}"))
}

#[test]
fn provisioned_criu_checks_and_dumps_a_tcp_listener_without_disturbing_it() {
    require_e2e!();
    let criu = match criu::provisioned() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: CRIU not provisioned: {why}");
            return;
        }
    };
    let v: Vec<u32> = criu
        .version
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        v >= vec![4, 2],
        "provisioned CRIU {} is older than 4.2",
        criu.version
    );

    let check = Command::new(&criu.bin).arg("check").output().unwrap();
    assert!(
        check.status.success(),
        "criu check failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut net = Net::new().unwrap();
    let host = net.add_host("host-a").unwrap();
    let mut server = ChildGuard(
        net.command(&host, std::path::Path::new("setsid"))
            .args(["python3", "-c", COUNTER_SERVER])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = SocketAddr::from((host.addr, 9000));
    let first = eventually("counter server answers", Duration::from_secs(10), || {
        ask(addr)
    });
    let second = ask(addr).unwrap();
    assert_eq!(second, first + 1);

    let images = tempfile::tempdir().unwrap();
    let dump = Command::new(&criu.bin)
        .args([
            "dump",
            "--leave-running",
            "--tcp-established",
            "-v4",
            "-o",
            "dump.log",
        ])
        .arg("-t")
        .arg(server.0.id().to_string())
        .arg("-D")
        .arg(images.path())
        .output()
        .unwrap();
    let log = std::fs::read_to_string(images.path().join("dump.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    assert!(
        dump.status.success(),
        "criu dump failed:\n{}",
        tail.join("\n")
    );
    let pages = std::fs::read_dir(images.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum::<u64>();
    assert!(pages > 0, "dump wrote no memory pages");

    // --leave-running: the server is still there and its count carries on.
    assert_eq!(ask(addr).unwrap(), second + 1);
    assert!(
        matches!(server.0.try_wait(), Ok(None)),
        "server died during the dump"
    );
}
