//! The guard of a post-copy restore on the target: a small process of its own
//! (`understudy-agent postcopy-guard`) that outlives the agent.
//!
//! While the memory of a lazily restored tree is arriving, the tree may touch only pages
//! the `criu lazy-pages` daemon serves it. If the agent, which relays the pages, stops or is
//! killed mid-copy, its end of the daemon's connection would close, the daemon would exit,
//! and with its userfaultfd gone the kernel would hand the tree zero-filled pages for what
//! never arrived: a copy running on corrupt memory. So the guard holds a second reference
//! to that connection (passed over a socket pair, `SCM_RIGHTS`): the daemon keeps waiting,
//! and the tree's faults with it. When the agent goes without having said the copy is
//! complete (its end of the socket pair closes), the guard kills the tree first, then the
//! daemon, and only then lets the connection go. An agent that finishes the copy tells it
//! so and it exits without touching anything.

use std::io::{BufRead, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};
use nix::unistd::Pid;

/// How long the guard waits for the agent to connect once it listens.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// How long the guard waits for a killed tree to be gone before it ends the daemon anyway.
const GONE_LIMIT: Duration = Duration::from_secs(10);
/// What the guard prints once it listens.
const READY: &str = "ready";

/// A message: a tag and a number.
const HOLD: u8 = b'S';
const DAEMON: u8 = b'D';
const TREE: u8 = b'P';
const COMPLETE: u8 = b'F';

/// The agent's handle on a running guard. Dropped without [`Guard::complete`] first, the
/// guard kills the tree and the daemon.
#[derive(Debug)]
pub struct Guard {
    chan: UnixStream,
    child: std::sync::Mutex<Option<Child>>,
}

/// Guards started by this agent, for unique socket names.
static STARTED: AtomicU64 = AtomicU64::new(0);

impl Guard {
    /// Starts the guard of `workload`'s restore and connects to it; the tree's root works
    /// in `home` (how the guard finds it before its pid is known). Blocks briefly.
    pub fn spawn(workload: &str, home: &Path) -> std::io::Result<Guard> {
        // An abstract socket: nothing on disk to leave behind.
        let name = format!(
            "understudy-postcopy-guard-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let mut child = Command::new(crate::supervisor::binary::path())
            .args([
                "postcopy-guard",
                "--workload",
                workload,
                "--socket",
                &name,
                "--home",
            ])
            .arg(home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let connected = (|| {
            if line.trim() != READY {
                return Err(std::io::Error::other("the guard did not start"));
            }
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        })();
        match connected {
            Ok(chan) => Ok(Guard {
                chan,
                child: std::sync::Mutex::new(Some(child)),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Tells the guard the daemon's pid.
    pub fn daemon(&self, pid: i32) -> std::io::Result<()> {
        self.send(DAEMON, pid, None)
    }

    /// Hands the guard a reference to the daemon's connection.
    pub fn hold(&self, fd: RawFd) -> std::io::Result<()> {
        self.send(HOLD, 0, Some(fd))
    }

    /// Tells the guard the restored tree's root.
    pub fn tree(&self, pid: i32) -> std::io::Result<()> {
        self.send(TREE, pid, None)
    }

    /// Every page is in: the guard exits and leaves everything be.
    pub fn complete(&self) -> std::io::Result<()> {
        self.send(COMPLETE, 0, None)
    }

    fn send(&self, tag: u8, n: i32, fd: Option<RawFd>) -> std::io::Result<()> {
        let mut msg = [0u8; 5];
        msg[0] = tag;
        msg[1..].copy_from_slice(&n.to_le_bytes());
        let iov = [IoSlice::new(&msg)];
        let fds;
        let cmsgs: &[ControlMessage] = match fd {
            Some(fd) => {
                fds = [fd];
                &[ControlMessage::ScmRights(&fds)]
            }
            None => &[],
        };
        sendmsg::<()>(
            self.chan.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Closing our end is the signal; the guard is reaped once it has done its work.
        let child = self
            .child
            .get_mut()
            .map_or_else(|e| e.into_inner().take(), Option::take);
        if let Some(mut child) = child {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

/// `understudy-agent postcopy-guard`: what the guard process is told.
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// The workload being restored.
    #[arg(long)]
    pub workload: String,
    /// The abstract socket to listen on for the agent.
    #[arg(long)]
    pub socket: String,
    /// The working directory of the tree's root.
    #[arg(long)]
    pub home: PathBuf,
}

/// The guard process: takes the agent's connection, reads its messages until the copy is
/// complete (exit 0, nothing touched) or the agent's end closes first (the tree, then the
/// daemon, killed). Descriptors it is handed stay open until it exits.
pub fn run(args: &GuardArgs) -> i32 {
    // Its own session: a signal to the agent's process group is not for it.
    let _ = nix::unistd::setsid();
    let chan = match listen_for_agent(&args.socket) {
        Ok(Some(fd)) => fd,
        // The agent never came: nothing was restored under its guard.
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("postcopy-guard: {e}");
            return 1;
        }
    };
    let (mut daemon, mut tree) = (None, None);
    let mut _held: Vec<RawFd> = Vec::new();
    loop {
        // Each message is sent whole and read whole (its descriptor, if any, comes with
        // its first byte); a short read is the agent's end closing.
        let mut msg = [0u8; 5];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut msg)];
        let got = recvmsg::<()>(
            chan.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
        );
        let len = match got {
            Ok(r) => {
                if let Ok(cmsgs) = r.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(list) = c {
                            _held.extend(list);
                        }
                    }
                }
                r.bytes
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => 0,
        };
        if len < msg.len() {
            break;
        }
        let n = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
        match msg[0] {
            COMPLETE => return 0,
            DAEMON => daemon = Some(n),
            TREE => tree = Some(n),
            _ => {}
        }
    }
    // The agent is gone, or gave the copy up, before every page was in.
    let mut roots = trees_in(&args.home);
    roots.extend(tree);
    roots.sort_unstable();
    roots.dedup();
    for &pid in &roots {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + GONE_LIMIT;
    while roots.iter().any(|&p| crate::procs::is_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(pid) = daemon {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    0
}

/// Listens on abstract socket `name`, says so on stdout, and takes the first connection
/// from the process that started it (within [`CONNECT_LIMIT`]; `None` if none came).
fn listen_for_agent(name: &str) -> Result<Option<UnixStream>, String> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| e.to_string())?;
    let listener = UnixListener::bind_addr(&addr).map_err(|e| format!("bind {name}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listen: {e}"))?;
    println!("{READY}");
    let parent = nix::unistd::getppid().as_raw();
    let deadline = Instant::now() + CONNECT_LIMIT;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((conn, _)) => {
                // Anyone on this host may connect to an abstract socket: only the agent
                // that started the guard may steer it.
                let from = getsockopt(&conn, sockopt::PeerCredentials).map(|c| c.pid());
                if from == Ok(parent) {
                    conn.set_nonblocking(false)
                        .map_err(|e| format!("accept: {e}"))?;
                    return Ok(Some(conn));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    Ok(None)
}

/// Processes of this host working in `home`: the tree's root (its supervisor) once CRIU
/// has restored it. "This host" is this network namespace: hosts tested side by side on
/// one kernel are namespaces, and the original tree on another of them works in the same
/// directory.
fn trees_in(home: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let net = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let ours = net("self");
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == home)
                && ours.is_some()
                && net(&pid.to_string()) == ours
        })
        .collect()
}
