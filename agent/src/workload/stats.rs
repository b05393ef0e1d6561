//! Resource use of a workload's process tree, summed over every process in it: CPU time,
//! resident memory, open descriptors, threads. Read from procfs on request. A workload's
//! tree is counted without its supervisor ([`workload`]): the operator's processes only.

use std::collections::VecDeque;

/// Totals over one process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeStats {
    /// Processes in the tree.
    pub processes: u64,
    /// Threads in the tree.
    pub threads: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// One process's fields from `/proc/PID/stat`: (utime + stime ticks, threads, rss pages).
pub fn parse_stat(text: &str) -> Option<(u64, u64, u64)> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime = 14, stime = 15, num_threads = 20, rss = 24.
    let at = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some((at(14)? + at(15)?, at(20)?, at(24)?))
}

/// `root` and all its descendants (empty once `root` is gone).
pub(crate) fn pids(root: i32) -> Vec<i32> {
    if !std::path::Path::new(&format!("/proc/{root}")).exists() {
        return Vec::new();
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        out.extend(children(out[i]));
        i += 1;
    }
    out
}

/// The children of every thread of `pid` (`/proc/PID/task/*/children`).
pub(crate) fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Sums a workload's processes: the tree under its supervisor `root`, which is not
/// counted; `None` if the supervisor is gone.
pub fn workload(root: i32) -> Option<TreeStats> {
    let whole = tree(root)?;
    let own = std::fs::read_to_string(format!("/proc/{root}/stat"))
        .ok()
        .as_deref()
        .and_then(parse_stat);
    let Some((cpu, threads, rss)) = own else {
        return Some(whole);
    };
    let (ticks, page) = units();
    Some(TreeStats {
        processes: whole.processes - 1,
        threads: whole.threads.saturating_sub(threads),
        cpu_seconds: (whole.cpu_seconds - cpu as f64 / ticks).max(0.0),
        rss_bytes: whole.rss_bytes.saturating_sub(rss * page),
        fds: whole.fds.saturating_sub(
            std::fs::read_dir(format!("/proc/{root}/fd")).map_or(0, |d| d.count() as u64),
        ),
    })
}

/// Clock ticks per second and the page size.
fn units() -> (f64, u64) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    (ticks, page)
}

/// Sums the tree rooted at `root`; `None` if the root is gone.
pub fn tree(root: i32) -> Option<TreeStats> {
    let (ticks, page) = units();
    let mut total = TreeStats::default();
    let mut queue = VecDeque::from([root]);
    let mut first = true;
    while let Some(pid) = queue.pop_front() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let Some((cpu, threads, rss)) = stat.as_deref().and_then(parse_stat) else {
            if first {
                return None;
            }
            continue;
        };
        first = false;
        total.processes += 1;
        total.threads += threads;
        total.cpu_seconds += cpu as f64 / ticks;
        total.rss_bytes += rss * page;
        total.fds += std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        queue.extend(children(pid));
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0 1000 1000000 256 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some((100, 3, 256)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_a_tree_of_at_least_one() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = tree(me).unwrap();
        assert!(
            s.processes >= 1 && s.threads >= 1 && s.rss_bytes > 0 && s.fds >= 3,
            "{s:?}"
        );
    }
}
