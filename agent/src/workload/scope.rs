//! Each workload's own systemd scope, `understudy-NAME.scope` in `understudy.slice`, on
//! hosts where systemd is the service manager. The tree leaves the agent's cgroup, so
//! stopping, restarting or upgrading the agent never signals it; its resources are counted
//! apart; `systemctl status understudy-NAME.scope` and `systemd-cgls` show it. The scope is
//! created over the tree's pids with systemd's D-Bus call `StartTransientUnit`, made with
//! `busctl` (shipped with systemd: two calls do not warrant linking a D-Bus client). Where
//! systemd is not PID 1 (containers, the test suite's namespace hosts) nothing is done.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The slice every workload scope goes in.
pub const SLICE: &str = "understudy.slice";

/// Why a tree could not be placed in its scope.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// `busctl` could not be run.
    #[error("cannot run busctl: {0}")]
    Busctl(std::io::Error),
    /// systemd answered the call with an error.
    #[error("systemd refused {call} for {unit}: {message}")]
    Refused {
        /// The D-Bus method.
        call: &'static str,
        /// The scope.
        unit: String,
        /// What busctl printed.
        message: String,
    },
    /// The pids were handed over but did not arrive in the scope.
    #[error("the tree did not move into {unit} within {waited:?}; still outside: {outside}")]
    NotMoved {
        /// The scope.
        unit: String,
        /// How long the agent waited.
        waited: Duration,
        /// The processes left outside, with their cgroups.
        outside: String,
    },
}

/// The scope `workload` runs in.
pub fn unit_name(workload: &str) -> String {
    format!("understudy-{workload}.scope")
}

/// Whether systemd manages this host (its own test, as `sd_booted()` does).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Moves the tree rooted at host pid `root` into `workload`'s scope, creating the scope.
/// Returns the scope's name, or `None` where systemd does not manage the host or the tree
/// is gone. A tree already in one of the workload's scopes stays where it is.
pub fn place(workload: &str, root: i32) -> Result<Option<String>, ScopeError> {
    if !systemd_booted() {
        return Ok(None);
    }
    if super::stats::pids(root).is_empty() {
        return Ok(None);
    }
    if let Some(unit) = scope_of(root).filter(|u| is_scope_of(u, workload)) {
        return Ok(Some(unit));
    }
    // The scope starts with the root alone, which lives as long as the tree: a short-lived
    // child listed now may be gone by the time systemd looks, and systemd refuses the whole
    // call for one missing pid. The rest are attached below, one at a time.
    let pids = [root];
    let mut unit = unit_name(workload);
    if let Err(e) = start_scope(&unit, workload, &pids) {
        // The workload's previous scope may still be on its way out: a second name.
        if !matches!(&e, ScopeError::Refused { message, .. } if message.contains("exists")) {
            return Err(e);
        }
        unit = format!("understudy-{workload}-{root}.scope");
        start_scope(&unit, workload, &pids)?;
    }
    // The job runs asynchronously; then anything the tree forked meanwhile is attached too.
    let waited = Duration::from_secs(5);
    let started = Instant::now();
    loop {
        let outside: Vec<i32> = super::stats::pids(root)
            .into_iter()
            .filter(|p| scope_of(*p).as_deref() != Some(unit.as_str()))
            .collect();
        if outside.is_empty() {
            return Ok(Some(unit));
        }
        if started.elapsed() > waited {
            let outside = outside
                .iter()
                .map(|p| {
                    let cg =
                        std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
                    format!("{p} in {}", cg.trim())
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ScopeError::NotMoved {
                unit,
                waited,
                outside,
            });
        }
        if scope_of(root).as_deref() == Some(unit.as_str()) {
            // The scope is up: attach the rest of the tree, each on its own since any may
            // exit meanwhile. (Attaching needs the scope delegated.)
            for pid in &outside {
                if let Err(e) = attach(&unit, &[*pid]) {
                    tracing::debug!(workload, pid, "attaching to the scope: {e}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_scope_of(unit: &str, workload: &str) -> bool {
    unit == unit_name(workload)
        || unit
            .strip_prefix(&format!("understudy-{workload}-"))
            .and_then(|r| r.strip_suffix(".scope"))
            .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
}

fn start_scope(unit: &str, workload: &str, pids: &[i32]) -> Result<(), ScopeError> {
    let mut args: Vec<String> = [
        unit,
        "fail",
        "5",
        "Description",
        "s",
        &format!("understudy workload {workload}"),
        "Slice",
        "s",
        SLICE,
        "CollectMode",
        "s",
        "inactive-or-failed",
        // Delegated, as container managers' scopes are: processes can then be attached
        // to it after it starts, and the workload may manage cgroups below it.
        "Delegate",
        "b",
        "true",
        "PIDs",
        "au",
        &pids.len().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(pids.iter().map(i32::to_string));
    args.push("0".into());
    busctl("StartTransientUnit", "ssa(sv)a(sa(sv))", unit, &args)
}

fn attach(unit: &str, pids: &[i32]) -> Result<(), ScopeError> {
    let mut args = vec![unit.to_owned(), String::new(), pids.len().to_string()];
    args.extend(pids.iter().map(i32::to_string));
    busctl("AttachProcessesToUnit", "ssau", unit, &args)
}

fn busctl(
    call: &'static str,
    signature: &str,
    unit: &str,
    args: &[String],
) -> Result<(), ScopeError> {
    let out = Command::new("busctl")
        .args([
            "call",
            "--system",
            "--quiet",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            call,
            signature,
        ])
        .args(args)
        .output()
        .map_err(ScopeError::Busctl)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ScopeError::Refused {
            call,
            unit: unit.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The scope (last component of the cgroup v2 path) process `pid` is in.
fn scope_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let last = path.rsplit('/').next()?;
    last.ends_with(".scope").then(|| last.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_recognised_as_the_workloads_own() {
        assert!(is_scope_of("understudy-web.scope", "web"));
        assert!(is_scope_of("understudy-web-4242.scope", "web"));
        assert!(!is_scope_of("understudy-web-api.scope", "web"));
        assert!(!is_scope_of("understudy-webx.scope", "web"));
        assert!(!is_scope_of("session-3.scope", "web"));
    }

    #[test]
    fn a_tree_holds_this_process_and_nothing_for_a_dead_root() {
        let me = std::process::id() as i32;
        assert_eq!(crate::workload::stats::pids(me).first(), Some(&me));
        assert!(crate::workload::stats::pids(i32::MAX).is_empty());
    }
}
