//! Test fixtures for understudy's end-to-end tests: hosts made of network namespaces on
//! one machine, the real binaries started inside them, and polling helpers.
//!
//! Everything a fixture creates is torn down when it is dropped, also when a test panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod cluster;
pub mod command;
pub mod copies;
pub mod criu;
pub mod fleet;
pub mod greeter;
pub mod netns;
pub mod pressure;
pub mod procstat;
pub mod rawclient;
pub mod soak;
pub mod tmpfs;
pub mod vm;
pub mod wait;

/// Why an end-to-end test cannot run here, or `None` if it can.
///
/// These tests need root (namespaces, veth, bridges) and `ip`/`nsenter`. Where
/// `UNDERSTUDY_REQUIRE_E2E=1` is set (as in CI), a missing prerequisite is a failure
/// instead of a skip.
pub fn e2e_unavailable() -> Option<String> {
    let root = nix_is_root();
    let reason = if !root {
        Some("needs root to create network namespaces".to_string())
    } else if !std::path::Path::new("/usr/bin/nsenter").exists()
        && !std::path::Path::new("/bin/nsenter").exists()
    {
        Some("needs nsenter (util-linux)".to_string())
    } else if std::process::Command::new("ip").arg("-V").output().is_err() {
        Some("needs the ip command (iproute2)".to_string())
    } else {
        None
    };
    if let Some(r) = &reason {
        if std::env::var("UNDERSTUDY_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("end-to-end prerequisites missing: {r}");
        }
    }
    reason
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Returns early from a test, saying why, when end-to-end tests cannot run here.
#[macro_export]
macro_rules! require_e2e {
    () => {
        if let Some(reason) = $crate::e2e_unavailable() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}

/// The numbers a workload printed one per line (other lines are skipped).
pub fn numbers(log: &str) -> Vec<u64> {
    log.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Returns early from a test, saying why, when the provisioned CRIU is missing.
#[macro_export]
macro_rules! require_criu {
    () => {
        if let Err(why) = $crate::criu::provisioned() {
            eprintln!("SKIPPED {}: CRIU not provisioned: {why}", module_path!());
            return;
        }
    };
}

/// A child process killed when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
