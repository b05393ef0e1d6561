//! Post-copy moves (CRIU's lazy pages): the old primary's final dump leaves the memory
//! out and serves it; the target restores at once from the rest and a `criu lazy-pages`
//! daemon pulls the memory in, first what the workload touches, then everything else. The
//! freeze no longer grows with the workload's size; the price is that the workload's
//! memory lives only on the old primary until the last page has arrived.
//!
//! - [`source`]: the old primary's side: the lazy dump, the images sent to the target, the
//!   page server relayed; the tree is fenced with `SIGSTOP` so that it can never run on
//!   by itself once its pages may have been taken.
//! - [`target`]: the target's side: the images received and parked until the restore
//!   order, the daemon, the lazy restore, and the verdict: the restore is answered only
//!   once every page is in; a transfer that breaks kills the restored tree.
//! - `relay`: CRIU's page-server TCP connection carried over the QUIC data plane.
//! - [`guard`]: a process of its own that, if the target's agent goes mid-copy, kills the
//!   restored tree before its missing memory could be handed to it as zeros.

pub mod guard;
pub mod relay;
pub mod source;
pub mod target;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `fs.pipe-max-size` CRIU's page server needs without `CAP_SYS_RESOURCE` (it grows its
/// pipes to 4 MiB).
const PIPE_SIZE_NEEDED: u64 = 4 << 20;

/// Why this host cannot serve a post-copy move, if it cannot.
pub fn host_problem() -> Option<String> {
    if has_sys_resource() {
        return None;
    }
    let path = "/proc/sys/fs/pipe-max-size";
    let size: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    (size < PIPE_SIZE_NEEDED).then(|| {
        format!(
            "post-copy needs fs.pipe-max-size of at least {PIPE_SIZE_NEEDED} here (it is {size}, and the agent lacks CAP_SYS_RESOURCE): sysctl -w fs.pipe-max-size={PIPE_SIZE_NEEDED}"
        )
    })
}

/// Whether this process has `CAP_SYS_RESOURCE` (bit 24 of its effective set).
fn has_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Sends `signal` to every process of the tree rooted at `root`.
fn signal_tree(root: i32, signal: Signal) {
    for pid in crate::workload::stats::pids(root) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Fences the tree: a `SIGSTOP` to each of its processes. Sent while CRIU holds the tree,
/// it stays pending, so that if CRIU lets the tree go (a failed transfer) it stops rather
/// than runs on beside a copy that may have started elsewhere.
pub fn fence(root: i32) {
    signal_tree(root, Signal::SIGSTOP);
}

/// Lifts the fence: the tree runs again (a rollback).
pub fn unfence(root: i32) {
    signal_tree(root, Signal::SIGCONT);
}

/// Whether the tree rooted at `root` is held by a fence: its root, the supervisor, is
/// stopped (it never stops itself; a lease freeze stops only the processes under it).
pub fn fenced(root: i32) -> bool {
    crate::procs::is_stopped(root)
}
