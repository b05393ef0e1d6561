//! Starting a workload's process tree and watching it.
//!
//! A workload runs in its own PID and IPC namespaces (`unshare --pid --ipc --fork`), whose
//! process 1 is its supervisor (`understudy-agent supervise`, [`crate::supervisor`]): it
//! starts the command (as the spec's user), owns its output and appends it to the
//! workload's log, and exits with it. CRIU can restore the tree on any host, even beside a still-running
//! original on the same kernel; a restored tree is handed the restoring host's log in place
//! of the dumped one (CRIU's inherit-fd, keyed by the log's path).
//!
//! A workload with data directories also gets its own mount namespace, in which each
//! directory's copy on this host is bind-mounted at its logical path; the network namespace
//! handles of `ip netns` are unmounted from it, so CRIU can dump the namespace and rebuild
//! it on another host.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use understudy_common::workload::WorkloadSpec;

/// Called once when the tree exits without the agent having asked it to.
pub type ExitHook = Box<dyn FnOnce(String) + Send>;

/// A running tree this agent supervises.
#[derive(Debug, Clone)]
pub struct Running {
    /// Host pid of the tree's root (the PID namespace's init): what CRIU dumps.
    pub pid: i32,
    /// CRIU inherit-fd key of the output log the tree holds: its path without the
    /// leading `/`.
    pub stdio_key: String,
    expected_exit: Arc<AtomicBool>,
}

impl Running {
    /// Marks the coming exit as intended (a final dump or a release), so it is not reported.
    pub fn expect_exit(&self) {
        self.expected_exit.store(true, Ordering::SeqCst);
    }

    /// Undoes [`Running::expect_exit`] (a final dump that failed left the tree running).
    pub fn unexpect_exit(&self) {
        self.expected_exit.store(false, Ordering::SeqCst);
    }

    /// Whether the tree's root is still alive.
    pub fn is_alive(&self) -> bool {
        crate::procs::is_alive(self.pid)
    }

    /// Sends signal `sig` to the tree's supervisor, which passes it on to the command.
    pub fn signal(&self, sig: i32) {
        if let Ok(sig) = Signal::try_from(sig) {
            let _ = kill(Pid::from_raw(self.pid), sig);
        }
    }

    /// Kills the whole tree (killing a PID namespace's init kills everything in it).
    pub fn kill(&self) {
        self.expect_exit();
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

/// The CRIU inherit-fd key of the file at `path` (absolute): the path without its `/`.
pub fn file_key(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_owned()
}

/// Beside a workload's output log: what `unshare` and the mount namespace's setup said.
pub const LAUNCH_LOG_FILE: &str = "launch.log";

/// Opens (creating) the output log at `log` for appending, for a restored tree.
pub fn open_log(log: &Path) -> std::io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map(OwnedFd::from)
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by signal {sig}"),
        other => format!("{other:?}"),
    }
}

/// Waits for child `pid` (the tree's `unshare`, or a restored supervisor) in a thread; calls
/// `hook` if it exits unexpectedly, with how the command ended as its supervisor recorded it
/// in `exit_status` (else the tree's own status).
fn watch(pid: i32, expected: Arc<AtomicBool>, exit_status: PathBuf, hook: ExitHook) {
    std::thread::spawn(move || {
        let text = loop {
            match waitpid(Pid::from_raw(pid), None) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break describe(s),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break format!("lost track of the process tree: {e}"),
            }
        };
        let text = std::fs::read_to_string(&exit_status)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map_or(text, |t| t.trim().to_owned());
        if !expected.load(Ordering::SeqCst) {
            hook(text);
        }
    });
}

/// Why a workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The working directory is unusable.
    #[error("workdir {}: {source}", path.display())]
    Workdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tree ended before it could be supervised.
    #[error("{0}")]
    Died(String),
}

/// Sets up the workload's mount namespace, then runs its supervisor: `$1` = number of bind
/// mounts, then host/logical path pairs, then the supervisor's command line.
const MOUNT_NS_INIT: &str = r#"set -e
awk '$0 ~ / - nsfs / { print $5 }' /proc/self/mountinfo | while read -r m; do umount -l "$m" 2>/dev/null || true; done
n=$1; shift
while [ "$n" -gt 0 ]; do mount --bind -- "$1" "$2"; shift 2; n=$((n - 1)); done
exec "$@" </dev/null >/dev/null 2>&1"#;

/// One data directory to bind into the workload's mount namespace.
#[derive(Debug, Clone)]
pub struct Bind {
    /// This host's copy.
    pub host: PathBuf,
    /// Where the workload sees it.
    pub logical: PathBuf,
}

/// The supervisor's command line for `spec`, writing to `log`.
fn supervisor_args(spec: &WorkloadSpec, log: &Path) -> Result<Vec<String>, StartError> {
    let exe = crate::supervisor::binary::path();
    let mut args = vec![
        exe.display().to_string(),
        "supervise".into(),
        "--workload".into(),
        spec.name.clone(),
        "--home".into(),
        crate::supervisor::home::path(&spec.name)
            .display()
            .to_string(),
        "--log".into(),
        log.display().to_string(),
        "--workdir".into(),
        spec.workdir
            .as_deref()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string(),
    ];
    if let Some(u) = &spec.user {
        args.extend(["--user".into(), u.clone()]);
    }
    if let Some(g) = &spec.group {
        args.extend(["--group".into(), g.clone()]);
    }
    if let Some(gs) = &spec.groups {
        args.extend(["--groups".into(), gs.join(",")]);
    }
    args.push("--".into());
    args.extend(spec.command.iter().cloned());
    Ok(args)
}

/// Starts `spec` under its supervisor in a new PID namespace (and mount namespace with
/// `binds` when it has data directories), its output appended to `log`.
pub fn start(
    spec: &WorkloadSpec,
    binds: &[Bind],
    log: &Path,
    hook: ExitHook,
) -> Result<Running, StartError> {
    let workdir = spec.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let in_data_dir = binds.iter().any(|b| workdir.starts_with(&b.logical));
    if !in_data_dir {
        if let Err(source) = std::fs::read_dir(&workdir) {
            return Err(StartError::Workdir {
                path: workdir,
                source,
            });
        }
    }
    let spawn_err = |source| StartError::Spawn {
        program: spec.command[0].clone(),
        source,
    };
    let exit_status = log.with_file_name(crate::supervisor::EXIT_STATUS_FILE);
    let _ = std::fs::remove_file(&exit_status);
    // What unshare or the namespace's setup script have to say goes to a log of its own
    // beside the workload's: unshare also speaks when its tree is killed at a release, and
    // that is not the workload's output.
    let launch_log = log.with_file_name(LAUNCH_LOG_FILE);
    let early = open_log(&launch_log).map_err(spawn_err)?;
    let supervisor = supervisor_args(spec, log)?;
    crate::supervisor::home::ensure(&spec.name).map_err(|source| StartError::Workdir {
        path: crate::supervisor::home::path(&spec.name),
        source,
    })?;
    let mut cmd = Command::new("unshare");
    // Its own IPC namespace too: System V segments (PostgreSQL's) are then the tree's, and
    // CRIU dumps and restores them with it.
    if binds.is_empty() {
        cmd.args(["--pid", "--ipc", "--fork", "--"])
            .args(&supervisor);
    } else {
        for b in binds {
            // The mount point, on this host's root: the logical path itself.
            std::fs::create_dir_all(&b.logical).map_err(|source| StartError::Workdir {
                path: b.logical.clone(),
                source,
            })?;
        }
        cmd.args([
            "--pid",
            "--ipc",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--",
        ])
        .args(["/bin/sh", "-c", MOUNT_NS_INIT, "sh"])
        .arg(binds.len().to_string());
        for b in binds {
            cmd.arg(&b.host).arg(&b.logical);
        }
        cmd.args(&supervisor);
    }
    let early_err = early.try_clone().map_err(spawn_err)?;
    let child = cmd
        // The agent's allocator settings (its systemd unit's) are not the workload's; a
        // spec may still set its own.
        .env_remove("GLIBC_TUNABLES")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(early))
        .stderr(Stdio::from(early_err))
        .spawn()
        .map_err(spawn_err)?;
    let unshare_pid =
        i32::try_from(child.id()).map_err(|_| StartError::Died("pid out of range".into()))?;
    // The std handle is not needed: `watch` reaps the child itself.
    drop(child);
    let init = find_child(unshare_pid, Duration::from_secs(5)).ok_or_else(|| {
        let _ = kill(Pid::from_raw(unshare_pid), Signal::SIGKILL);
        StartError::Died(format!(
            "{:?} exited at once; see {} and {}",
            spec.command[0],
            log.display(),
            launch_log.display()
        ))
    })?;
    super::place_in_scope(&spec.name, unshare_pid);
    let expected = Arc::new(AtomicBool::new(false));
    watch(unshare_pid, expected.clone(), exit_status, hook);
    Ok(Running {
        pid: init,
        stdio_key: file_key(log),
        expected_exit: expected,
    })
}

/// Watches a tree this process did not start (an earlier run of the agent did) by polling:
/// it is not this process's child, so it cannot be waited for. The tree is the process
/// `pid` that started at `start_ticks`; its output is in `log`.
pub fn adopt_running(pid: i32, start_ticks: u64, log: &Path, hook: ExitHook) -> Running {
    let expected = Arc::new(AtomicBool::new(false));
    let exit_status = log.with_file_name(crate::supervisor::EXIT_STATUS_FILE);
    let exp = expected.clone();
    std::thread::spawn(move || {
        while crate::procs::start_ticks(pid) == Some(start_ticks) && crate::procs::is_alive(pid) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = std::fs::read_to_string(&exit_status)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map_or_else(
                || "ended (how is unknown: an earlier run of this agent started it)".to_string(),
                |t| t.trim().to_owned(),
            );
        if !exp.load(Ordering::SeqCst) {
            hook(text);
        }
    });
    Running {
        pid,
        stdio_key: file_key(log),
        expected_exit: expected,
    }
}

/// Watches a tree CRIU restored as this process's child, its output in `log`.
pub fn adopt_restored(pid: i32, log: &Path, hook: ExitHook) -> Running {
    let expected = Arc::new(AtomicBool::new(false));
    let exit_status = log.with_file_name(crate::supervisor::EXIT_STATUS_FILE);
    let _ = std::fs::remove_file(&exit_status);
    watch(pid, expected.clone(), exit_status, hook);
    Running {
        pid,
        stdio_key: file_key(log),
        expected_exit: expected,
    }
}

fn find_child(parent: i32, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let path = format!("/proc/{parent}/task/{parent}/children");
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                if let Some(pid) = s.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    return Some(pid);
                }
            }
            Err(_) => return None,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
