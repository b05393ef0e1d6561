//! The target's side of a post-copy move. The old primary's images (no memory in them)
//! arrive on a data-plane stream and are staged in scratch space, checked against their
//! hashes; the stream is parked until the restore order. Then a `criu lazy-pages` daemon
//! is started on the images, its connection relayed over the parked stream to the old
//! primary's page server, and CRIU restores the tree lazily: it runs at once, its memory
//! arriving as it touches it and in the background. The order is answered once every page
//! is in (the daemon exited 0); a transfer that breaks first stops and kills the tree and
//! fails the order, so a rollback resumes the old primary's fenced original.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criu_sys::PageServer;
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use understudy_common::epoch::{check_file, Manifest};
use understudy_common::frame::write_frame;
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::transfer::DataReply;
use understudy_common::workload::{validate_workload_name, WorkloadSpec};

use crate::life::restore::{restore_tree, Restored};
use crate::life::Mailbox;
use crate::node::Node;
use crate::replication::receive_core::chunk;

/// How long the daemon may take to connect once started.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// How long the whole memory may take to arrive.
const TRANSFER_LIMIT: Duration = Duration::from_secs(600);
/// How long a piece of an image may take to arrive.
const PIECE_LIMIT: Duration = Duration::from_secs(30);
/// The daemon's log, in the images directory.
const DAEMON_LOG: &str = "lazy-pages.log";

/// Images staged for a post-copy restore, with the stream to the old primary.
struct Parcel {
    generation: u64,
    from: String,
    dir: PathBuf,
    manifest: Manifest,
    send: SendStream,
    recv: RecvStream,
}

/// The parcels waiting for their restore order, by workload.
#[derive(Default)]
pub struct Parked(Mutex<HashMap<String, Parcel>>);

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Parked").field("parcels", &held).finish()
    }
}

impl Parked {
    fn put(&self, workload: &str, parcel: Parcel) {
        let old = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(workload.to_owned(), parcel);
        if let Some(old) = old {
            dispose(old);
        }
    }

    /// Drops what is parked for `workload` (its stream reset, its images removed).
    pub fn discard(&self, workload: &str) {
        if let Some(p) = self.take(workload) {
            dispose(p);
        }
    }

    fn take(&self, workload: &str) -> Option<Parcel> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(workload)
    }
}

/// Resets a parcel's stream (the old primary's dump fails, its tree stays held) and removes
/// its images.
fn dispose(mut p: Parcel) {
    let _ = p.send.reset(quinn::VarInt::from_u32(1));
    crate::checkpoint::remove_dir(&p.dir);
}

/// Receives a post-copy move's images from `peer` on its stream (after the `PostCopy`
/// message that carried `manifest`) and parks them, or refuses them.
pub async fn receive(
    node: Arc<Node>,
    peer: String,
    mut send: SendStream,
    mut recv: RecvStream,
    manifest: Manifest,
) {
    match stage(&node, &peer, &mut recv, &manifest).await {
        Ok(dir) => {
            if write_frame(&mut send, PROTOCOL_VERSION, &DataReply::Staged)
                .await
                .is_err()
            {
                crate::checkpoint::remove_dir(&dir);
                return;
            }
            tracing::info!(workload = %manifest.workload, from = %peer, files = manifest.files.len(), bytes = manifest.total_bytes(), "post-copy images staged");
            node.post_copy.put(
                &manifest.workload.clone(),
                Parcel {
                    generation: manifest.generation,
                    from: peer,
                    dir,
                    manifest,
                    send,
                    recv,
                },
            );
        }
        Err(reason) => {
            tracing::warn!(%peer, "post-copy images refused: {reason}");
            let _ = write_frame(&mut send, PROTOCOL_VERSION, &DataReply::Refused { reason }).await;
            let _ = send.finish();
        }
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

async fn stage(
    node: &Node,
    peer: &str,
    recv: &mut RecvStream,
    manifest: &Manifest,
) -> Result<PathBuf, String> {
    let workload = manifest.workload.as_str();
    validate_workload_name(workload)?;
    if node.expected_primary(workload).as_deref() != Some(peer) {
        return Err(format!(
            "{peer} is not the primary of {workload:?} this host shadows"
        ));
    }
    let spec = node
        .shadow_spec(workload)
        .ok_or_else(|| format!("{workload:?} is not shadowed here"))?;
    if !spec.data_dirs.is_empty() {
        return Err(format!("{workload:?} has data directories: no post-copy"));
    }
    node.fence
        .admit(workload, manifest.generation)
        .map_err(|e| e.to_string())?;
    if let Some(f) = manifest.files.iter().find(|f| !plain_name(&f.name)) {
        return Err(format!("file name {:?} in the manifest", f.name));
    }
    let dir = node
        .dump_dir(&spec)
        .join(format!("postcopy-{}", manifest.generation));
    crate::checkpoint::remove_dir(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let staged = stage_files(recv, &dir, manifest).await;
    if staged.is_err() {
        crate::checkpoint::remove_dir(&dir);
    }
    staged.map(|()| dir)
}

async fn stage_files(recv: &mut RecvStream, dir: &Path, manifest: &Manifest) -> Result<(), String> {
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut total = 0u64;
        loop {
            let mut len = [0u8; 4];
            read_within(recv, &mut len).await?;
            let Some(len) = chunk(&f.name, u32::from_be_bytes(len), &mut total, f.size)? else {
                break;
            };
            let mut piece = vec![0u8; len];
            read_within(recv, &mut piece).await?;
            out.write_all(&piece)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        out.flush()
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (p, e) = (path.clone(), f.clone());
        tokio::task::spawn_blocking(move || check_file(&p, &e, false))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn read_within(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), String> {
    tokio::time::timeout(PIECE_LIMIT, recv.read_exact(buf))
        .await
        .map_err(|_| format!("old primary: no progress for {PIECE_LIMIT:?}"))?
        .map_err(|e| format!("old primary: {e}"))
}

/// A post-copy restore done: the tree, the epoch its images are, how long the memory took.
#[derive(Debug)]
pub struct Done {
    /// The tree, restored and checked, with every page in.
    pub restored: Restored,
    /// The epoch number of the images.
    pub epoch: u64,
    /// Its mailbox.
    pub mailbox: Mailbox,
    /// From the restored tree's check until the last page was in, milliseconds.
    pub memory_ms: u64,
}

/// Restores `spec`'s workload from the images parked for `generation`, pulling its memory
/// from the old primary; answers once every page is in. The tree runs meanwhile, under
/// `lease_ms` (the order's). Fails having left no running tree.
pub async fn restore(
    node: &Arc<Node>,
    spec: &WorkloadSpec,
    generation: u64,
    lease_ms: Option<u64>,
) -> Result<Done, String> {
    let workload = spec.name.as_str();
    let criu = node.criu.clone()?;
    let parcel = match node.post_copy.take(workload) {
        Some(p) if p.generation == generation => p,
        Some(p) => {
            let got = p.generation;
            dispose(p);
            return Err(format!(
                "the post-copy images here are of generation {got}, not {generation}"
            ));
        }
        None => {
            return Err(format!(
                "no post-copy images of {workload:?} here for generation {generation}"
            ))
        }
    };
    let Parcel {
        from,
        dir,
        manifest,
        send,
        recv,
        ..
    } = parcel;
    let result = run(
        node,
        spec,
        (criu, lease_ms),
        (&dir, &manifest),
        (send, recv),
    )
    .await;
    crate::checkpoint::remove_dir(&dir);
    result
        .map(|(restored, mailbox, memory_ms)| Done {
            restored,
            epoch: manifest.epoch,
            mailbox,
            memory_ms,
        })
        .map_err(|e| format!("post-copy from {from}: {e}"))
}

async fn run(
    node: &Arc<Node>,
    spec: &WorkloadSpec,
    (criu, lease_ms): (Arc<criu_sys::Criu>, Option<u64>),
    (dir, manifest): (&Path, &Manifest),
    (send, recv): (SendStream, RecvStream),
) -> Result<(Restored, Mailbox, u64), String> {
    let started = Instant::now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("no loopback port for the daemon: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let server = PageServer {
        address: "127.0.0.1".into(),
        port,
    };
    // Started first: from here on, an agent that goes mid-copy leaves nothing running on
    // memory that never arrived (see `guard`).
    let (name, home) = (spec.name.clone(), crate::supervisor::home::path(&spec.name));
    let guard = tokio::task::spawn_blocking(move || super::guard::Guard::spawn(&name, &home))
        .await
        .map_err(|e| e.to_string())
        .and_then(|g| g.map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot start the post-copy guard: {e}"))?;
    let guard = Arc::new(guard);
    // Not killed when dropped: if the agent stops mid-copy, the guard ends the daemon, after
    // the tree (the daemon's end would hand the tree zero-filled pages).
    let mut daemon =
        tokio::process::Command::from(criu.lazy_pages_daemon(dir, &server, DAEMON_LOG))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start criu lazy-pages: {e}"))?;
    // The restored tree's root, once known: stopped at once if the old primary goes away,
    // and the daemon ended (it would wait for pages that cannot come).
    let root = Arc::new(AtomicI32::new(0));
    let daemon_pid = daemon.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let told = guard.daemon(daemon_pid);
    if let Err(e) = told {
        let _ = daemon.start_kill();
        return Err(format!("the post-copy guard: {e}"));
    }
    let (verdict_tx, verdict_rx) = oneshot::channel();
    let relay = {
        let root = root.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            let tcp = match tokio::time::timeout(CONNECT_LIMIT, listener.accept()).await {
                Ok(Ok((tcp, _))) => {
                    use std::os::fd::AsRawFd;
                    if let Err(e) = guard.hold(tcp.as_raw_fd()) {
                        tracing::warn!(
                            "post-copy guard: cannot hand it the daemon's connection: {e}"
                        );
                    }
                    tcp
                }
                _ => {
                    let (mut send, _) = (send, recv);
                    let _ = send.reset(quinn::VarInt::from_u32(1));
                    return super::relay::End::Broken(
                        "the lazy-pages daemon never connected".into(),
                    );
                }
            };
            super::relay::target(tcp, send, recv, verdict_rx, move || {
                let pid = root.load(Ordering::SeqCst);
                if pid > 0 {
                    super::fence(pid);
                }
                if daemon_pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(daemon_pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            })
            .await
        })
    };
    // The restore hands the daemon its userfaultfd on a socket the daemon makes.
    if let Err(e) = daemon_ready(dir, &mut daemon).await {
        let _ = daemon.start_kill();
        let _ = verdict_tx.send(false);
        relay.abort();
        return Err(format!("{e}{}", daemon_log_tail(dir)));
    }
    let mailbox = Mailbox::default();
    let restored = restore_tree(
        Ok(criu),
        &node.data_dir,
        spec,
        (dir.to_owned(), manifest, None),
        Vec::new(),
        mailbox.exit_hook(&spec.name, super::super::orders::FIRST_TREE),
        true,
    )
    .await;
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            let _ = daemon.start_kill();
            let _ = verdict_tx.send(false);
            relay.abort();
            return Err(format!("{e}{}", daemon_log_tail(dir)));
        }
    };
    root.store(restored.running.pid, Ordering::SeqCst);
    if let Err(e) = guard.tree(restored.running.pid) {
        tracing::warn!(workload = %spec.name, "post-copy guard: cannot tell it the tree: {e}");
    }
    // It serves while its memory arrives: under the order's lease, not frozen for want of one.
    crate::lease::pass_on(&spec.name, lease_ms).await;
    tracing::info!(workload = %spec.name, pid = restored.running.pid, restore_ms = restored.restore_ms, "post-copy: restored; the memory follows");
    let checked = Instant::now();
    let status = tokio::time::timeout(TRANSFER_LIMIT, daemon.wait()).await;
    let ok = matches!(&status, Ok(Ok(s)) if s.success());
    let _ = verdict_tx.send(ok);
    let end = relay
        .await
        .unwrap_or_else(|e| super::relay::End::Broken(e.to_string()));
    let memory_ms = u64::try_from(checked.elapsed().as_millis()).unwrap_or(u64::MAX);
    if ok {
        if let Err(e) = guard.complete() {
            // The guard is gone and cannot kill anything; nothing is lost.
            tracing::warn!(workload = %spec.name, "post-copy guard: {e}");
        }
        let total_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(workload = %spec.name, memory_ms, total_ms, ?end, "post-copy: every page is in");
        return Ok((restored, mailbox, memory_ms));
    }
    // Memory is missing: the tree must not run on.
    super::fence(restored.running.pid);
    restored.running.kill();
    let _ = daemon.start_kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while restored.running.is_alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let why = match status {
        Ok(Ok(s)) => format!("the lazy-pages daemon failed ({s})"),
        Ok(Err(e)) => format!("the lazy-pages daemon: {e}"),
        Err(_) => format!("the memory did not arrive within {TRANSFER_LIMIT:?}"),
    };
    let relayed = match end {
        super::relay::End::Broken(e) => format!("; the page transfer: {e}"),
        super::relay::End::Clean => String::new(),
    };
    Err(format!(
        "{why}{relayed}; the restored copy was killed{}",
        daemon_log_tail(dir)
    ))
}

/// Waits until the daemon listens on its socket in `dir`, failing if it exits first.
async fn daemon_ready(dir: &Path, daemon: &mut tokio::process::Child) -> Result<(), String> {
    let socket = dir.join("lazy-pages.socket");
    let deadline = Instant::now() + CONNECT_LIMIT;
    while !socket.exists() {
        if let Ok(Some(status)) = daemon.try_wait() {
            return Err(format!("criu lazy-pages exited at once ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "criu lazy-pages not ready within {CONNECT_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The daemon log's error lines, for a failure's reason.
fn daemon_log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(DAEMON_LOG)).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error"))
        .take(3)
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    }
}
