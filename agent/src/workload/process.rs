//! Starting a workload's process tree and watching it.
//!
//! A workload runs in its own PID namespace (`unshare --pid --fork`) and session
//! (`setsid`), so CRIU can restore it on any host, even beside a still-running original
//! on the same kernel. Its stdout and stderr go to one pipe the agent reads and appends to
//! the workload's log; a restored tree gets a fresh pipe from the restoring agent in
//! place of the dumped one (CRIU's inherit-fd, keyed by the pipe's inode).
//!
//! A workload with data directories also gets its own mount namespace, in which each
//! directory's copy on this host is bind-mounted at its logical path. Everything the tree
//! holds open is opened inside that namespace (stdin is reopened there), and the network
//! namespace handles of `ip netns` are unmounted from it, so CRIU can dump the namespace
//! and rebuild it on another host.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
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
    /// CRIU key of the stdout/stderr pipe, e.g. `pipe:[4242]`.
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
        is_alive(self.pid)
    }

    /// Kills the whole tree (killing a PID namespace's init kills everything in it).
    pub fn kill(&self) {
        self.expect_exit();
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A pipe for a workload's stdout/stderr: the read end for the agent, the write end for
/// the tree, and the CRIU key naming it.
#[derive(Debug)]
pub struct StdioPipe {
    /// The agent's end.
    pub read: OwnedFd,
    /// The workload's end.
    pub write: OwnedFd,
    /// `pipe:[inode]`.
    pub key: String,
}

impl StdioPipe {
    /// A new pipe (close-on-exec on both ends; spawning dups the write end into place).
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let ino = nix::sys::stat::fstat(write.as_raw_fd())?.st_ino;
        Ok(StdioPipe {
            read,
            write,
            key: format!("pipe:[{ino}]"),
        })
    }
}

/// Copies everything from `read` to the end of `log` until the last writer closes.
pub fn pump_output(read: OwnedFd, log: PathBuf) {
    std::thread::spawn(move || {
        let mut src = File::from(read);
        let mut dst = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot open workload log {}: {e}", log.display());
                return;
            }
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if dst.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by signal {sig}"),
        other => format!("{other:?}"),
    }
}

/// Waits for child `pid` in a thread; calls `hook` if it exits unexpectedly.
fn supervise(pid: i32, expected: Arc<AtomicBool>, hook: ExitHook) {
    std::thread::spawn(move || {
        let text = loop {
            match waitpid(Pid::from_raw(pid), None) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break describe(s),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break format!("lost track of the process tree: {e}"),
            }
        };
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

/// Sets up the workload's mount namespace, then runs the workload: `$1` = number of bind
/// mounts, then host/logical path pairs, the working directory, and the command.
const MOUNT_NS_INIT: &str = r#"exec 2>&1
set -e
awk '$0 ~ / - nsfs / { print $5 }' /proc/self/mountinfo | while read -r m; do umount -l "$m" 2>/dev/null || true; done
n=$1; shift
while [ "$n" -gt 0 ]; do mount --bind -- "$1" "$2"; shift 2; n=$((n - 1)); done
cd -- "$1"; shift
exec </dev/null
exec setsid -- /bin/sh -c 'exec "$@" 2>&1' sh "$@""#;

/// One data directory to bind into the workload's mount namespace.
#[derive(Debug, Clone)]
pub struct Bind {
    /// This host's copy.
    pub host: PathBuf,
    /// Where the workload sees it.
    pub logical: PathBuf,
}

/// Starts `spec` in a new PID namespace and session (and mount namespace with `binds`
/// when it has data directories), output appended to `log`.
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
    let pipe = StdioPipe::new().map_err(spawn_err)?;
    // `unshare` stays behind as the namespace init's parent and has its own complaints when
    // the tree is stopped by a final dump; those go to /dev/null. The workload's stderr is
    // joined to its stdout by the `sh` that `exec`s it (so the tree's root is the command).
    let mut cmd = Command::new("unshare");
    if binds.is_empty() {
        cmd.args(["--pid", "--fork", "--", "setsid", "--", "/bin/sh", "-c"])
            .arg("exec \"$@\" 2>&1")
            .arg("sh")
            .current_dir(&workdir);
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
        cmd.arg(&workdir).current_dir("/");
    }
    let child = cmd
        .args(&spec.command)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(pipe.write))
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_err)?;
    let unshare_pid =
        i32::try_from(child.id()).map_err(|_| StartError::Died("pid out of range".into()))?;
    // The std handle is not needed: `supervise` reaps the child itself.
    drop(child);
    pump_output(pipe.read, log.to_owned());
    let init = find_child(unshare_pid, Duration::from_secs(5)).ok_or_else(|| {
        let _ = kill(Pid::from_raw(unshare_pid), Signal::SIGKILL);
        StartError::Died(format!(
            "{:?} exited at once; see {}",
            spec.command[0],
            log.display()
        ))
    })?;
    let expected = Arc::new(AtomicBool::new(false));
    supervise(unshare_pid, expected.clone(), hook);
    Ok(Running {
        pid: init,
        stdio_key: pipe.key,
        expected_exit: expected,
    })
}

/// Supervises a tree CRIU restored as this process's child.
pub fn adopt_restored(pid: i32, stdio_key: String, hook: ExitHook) -> Running {
    let expected = Arc::new(AtomicBool::new(false));
    supervise(pid, expected.clone(), hook);
    Running {
        pid,
        stdio_key,
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
