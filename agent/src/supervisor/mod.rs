//! The per-workload supervisor (`understudy-agent supervise`): process 1 of the workload's
//! PID namespace, the role tini, conmon or a containerd shim play. It stays root, starts
//! the command as the spec's user (through `setpriv`), reaps every orphan in the namespace,
//! passes on the signals it is sent, owns the command's stdout and stderr and appends them
//! to the workload's output log itself (so the agent is not in the output's path: a command
//! that prints outlives its agent), answers the agent on a local socket, and exits with the
//! command, its status recorded beside the log. It is checkpointed and restored with the
//! tree; nothing it holds is outside the tree except the log, which a restoring agent hands
//! it again (CRIU's inherit-fd, keyed by the log's path).
//!
//! It is deliberately small and single-threaded: a `poll` loop over a signal pipe, the
//! command's output pipe and the socket.

pub mod account;
pub mod binary;
pub mod control;
pub mod home;
pub mod lease;
pub mod output;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use output::OutputLog;

/// Name of the file beside the output log where the supervisor leaves how the command
/// ended, for the agent to read.
pub const EXIT_STATUS_FILE: &str = "exit-status";

/// Signals passed on to the command (the stop signals a spec may name, and SIGWINCH).
const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTERM,
    Signal::SIGWINCH,
];

/// What the agent starts the supervisor with.
#[derive(Debug, clap::Args)]
pub struct Launch {
    /// The workload (names the control socket).
    #[arg(long)]
    pub workload: String,
    /// Its own working directory (`home`), where the agent created it.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// The output log to append the command's stdout and stderr to.
    #[arg(long)]
    pub log: PathBuf,
    /// The command's working directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Run the command as this user.
    #[arg(long)]
    pub user: Option<String>,
    /// ... with this group.
    #[arg(long)]
    pub group: Option<String>,
    /// ... and these supplementary groups.
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<String>>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Exit status of the supervisor when the command could not be started.
const CANNOT_START: i32 = 127;

/// Runs the supervisor; returns its exit code (the command's, or 128 + its signal).
pub fn run(launch: Launch) -> i32 {
    // Process 1 of the namespace leads its own session, so CRIU finds the session leader
    // inside the tree; it holds nothing from outside but its log (no inherited stdio).
    let _ = nix::unistd::setsid();
    // The agent's unit is Type=notify: neither this process nor the workload may speak
    // for it.
    understudy_common::systemd::forget();
    // Its own working directory (see `home`): the agent created it before starting or
    // restoring the tree. Without it the tree still runs, from `/`.
    let home_missing = launch.home.as_deref().and_then(|dir| {
        std::env::set_current_dir(dir)
            .err()
            .map(|e| format!("{}: {e}", dir.display()))
    });
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    let log_file = match OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("supervisor: cannot open {}: {e}", launch.log.display());
            return CANNOT_START;
        }
    };
    let mut log = OutputLog::new(&log_file);
    if let Some(why) = home_missing {
        log.write(
            format!("[understudy] supervisor: working directory {why} (staying in /)\n").as_bytes(),
        );
    }
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log.write(format!("[understudy] supervisor: signal handlers: {e}\n").as_bytes());
            return CANNOT_START;
        }
    };
    let listener = control::listen(&launch.workload);
    if let Err(e) = &listener {
        log.write(
            format!("[understudy] supervisor: control socket: {e} (continuing without it)\n")
                .as_bytes(),
        );
    }
    let (service, out) = match spawn(&launch) {
        Ok(x) => x,
        Err(e) => {
            log.write(
                format!("[understudy] cannot start {:?}: {e}\n", launch.command[0]).as_bytes(),
            );
            record_exit(&log_file, &format!("could not be started: {e}"));
            return CANNOT_START;
        }
    };
    let user = launch.user.clone().unwrap_or_else(|| "root".into());
    let mut out = Some(File::from(out));
    let mut exited: Option<(String, i32)> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut lease = lease::Lease::default();
    let mut last_tick = Instant::now();
    loop {
        let mut fds = vec![PollFd::new(signals.wake.as_fd(), PollFlags::POLLIN)];
        let out_at = out.as_ref().map(|o| {
            fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let listener_at = listener.as_ref().ok().map(|l| {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        // Wake at least every LEASE_STEP while a lease applies, to count it down.
        let wait = match (drain_until, lease.remaining()) {
            (Some(t), _) => Some(t.saturating_duration_since(Instant::now())),
            (None, Some(_)) => Some(LEASE_STEP),
            (None, None) => None,
        };
        let timeout = wait.map_or(PollTimeout::NONE, |d| {
            PollTimeout::try_from(d).unwrap_or(PollTimeout::ZERO)
        });
        let _ = poll(&mut fds, timeout);
        let now = Instant::now();
        apply(
            lease.tick(now.saturating_duration_since(last_tick)),
            &mut log,
        );
        last_tick = now;
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            signals.drain();
            for sig in signals.take_forwarded() {
                let _ = kill(Pid::from_raw(service), sig);
            }
            if let Some(status) = reap(service) {
                exited = Some(status);
                drain_until.get_or_insert(Instant::now() + Duration::from_millis(500));
            }
        }
        let is_ready = |at: Option<usize>| at.is_some_and(|i| ready[i]);
        if let Some(o) = out.as_mut().filter(|_| is_ready(out_at)) {
            match o.read(&mut buf) {
                Ok(0) => out = None,
                Ok(n) => log.write(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => out = None,
            }
        }
        if let (Ok(l), true) = (&listener, is_ready(listener_at)) {
            if let Ok((conn, _)) = l.accept() {
                control::answer(conn, |req| {
                    if let control::Request::Renew { valid_ms } = req {
                        let action = lease.renew(valid_ms.map(Duration::from_millis));
                        apply(action, &mut log);
                    }
                    control::Status {
                        supervisor_pid: std::process::id().try_into().unwrap_or(0),
                        service_pid: service,
                        user: user.clone(),
                        exit: exited.as_ref().map(|(s, _)| s.clone()),
                        dropped: (log.total.bytes, log.total.lines),
                        frozen: lease.frozen(),
                        lease_ms: lease
                            .remaining()
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    }
                });
            }
        }
        if let Some((text, code)) = &exited {
            let drained = out.is_none() || drain_until.is_some_and(|t| Instant::now() >= t);
            if drained {
                record_exit(&log_file, text);
                return *code;
            }
        }
    }
}

/// How often the loop counts a running lease down.
const LEASE_STEP: Duration = Duration::from_millis(250);

/// Freezes or thaws every process of the namespace but this one (signalling `-1` from
/// process 1 of a PID namespace reaches exactly those), and says so in the log.
fn apply<W: std::io::Write>(action: lease::Action, log: &mut OutputLog<W>) {
    let (sig, note) = match action {
        lease::Action::None => return,
        lease::Action::Freeze => (
            Signal::SIGSTOP,
            "[understudy] lease expired: the workload is frozen until the coordinator renews its lease\n",
        ),
        lease::Action::Thaw => (
            Signal::SIGCONT,
            "[understudy] lease renewed: the workload continues\n",
        ),
    };
    let _ = kill(Pid::from_raw(-1), sig);
    log.write(note.as_bytes());
}

/// Starts the command with its output on a pipe; returns its pid and the pipe's read end.
fn spawn(launch: &Launch) -> Result<(i32, OwnedFd), String> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let account = match &launch.user {
        Some(u) => Some(account::resolve(
            u,
            launch.group.as_deref(),
            launch.groups.as_deref(),
        )?),
        None => None,
    };
    let mut cmd = match &account {
        Some(a) => {
            let sp = a.setpriv();
            let mut c = Command::new(&sp[0]);
            c.args(&sp[1..]).args(&launch.command);
            c.env("USER", &a.name).env("LOGNAME", &a.name);
            if let Some(home) = &a.home {
                c.env("HOME", home);
            }
            c
        }
        None => {
            let mut c = Command::new(&launch.command[0]);
            c.args(&launch.command[1..]);
            c
        }
    };
    let err = write.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(err))
        .current_dir(launch.workdir.as_deref().unwrap_or(Path::new("/")));
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
    // The loop reaps it (with every other orphan of the namespace), not std.
    drop(child);
    Ok((pid, read))
}

/// Reaps every exited child; returns how `service` ended if it did.
fn reap(service: i32) -> Option<(String, i32)> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if pid.as_raw() == service {
                    found = Some((format!("exited with status {code}"), code));
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                if pid.as_raw() == service {
                    found = Some((format!("killed by signal {sig}"), 128 + sig as i32));
                }
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(_) => {}
        }
    }
}

/// Leaves `text` in [`EXIT_STATUS_FILE`] beside the log (wherever the log now is: after a
/// restore it is the restoring host's).
fn record_exit(log: &File, text: &str) {
    let link = format!("/proc/self/fd/{}", log.as_raw_fd());
    if let Some(dir) = std::fs::read_link(link)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let _ = std::fs::write(dir.join(EXIT_STATUS_FILE), text);
    }
}

/// Signal handlers: a flag per forwarded signal and for SIGCHLD, and a pipe that wakes the
/// loop. Real handlers, not only a mask: process 1 of a namespace is sent only the signals
/// it handles.
struct Signals {
    wake: UnixStream,
    forwarded: Vec<(Signal, Arc<AtomicBool>)>,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        let (wake, wake_write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let mut forwarded = Vec::new();
        for sig in FORWARDED {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(sig as i32, flag.clone())?;
            signal_hook::low_level::pipe::register(sig as i32, wake_write.try_clone()?)?;
            forwarded.push((sig, flag));
        }
        signal_hook::low_level::pipe::register(Signal::SIGCHLD as i32, wake_write)?;
        Ok(Signals { wake, forwarded })
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }

    fn take_forwarded(&self) -> Vec<Signal> {
        self.forwarded
            .iter()
            .filter(|(_, f)| f.swap(false, Ordering::SeqCst))
            .map(|(s, _)| *s)
            .collect()
    }
}
