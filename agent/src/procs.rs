//! The processes on this host, as `/proc` shows them.

/// The pid of every process `/proc` lists now (none if it cannot be read).
pub fn all() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Field `nth` (0 = the state) of `/proc/PID/stat` after the parenthesised command name,
/// which may itself hold spaces and parentheses; `None` if the process is gone.
fn stat_field(pid: i32, nth: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(nth).map(str::to_owned)
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// Whether `pid` exists and is stopped by a signal (state `T`).
pub fn is_stopped(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state == "T")
}

/// When process `pid` started, in clock ticks since boot (`starttime` in its stat): with
/// the pid, it names one process, never a later one that reuses the pid.
pub fn start_ticks(pid: i32) -> Option<u64> {
    // starttime is field 22 overall, the 20th after the command name.
    stat_field(pid, 19)?.parse().ok()
}
