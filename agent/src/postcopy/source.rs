//! The old primary's side of a post-copy move: dump without the memory, send the images
//! to the target on a data-plane stream, then relay the dump's page server over that
//! stream until the target has every page. The tree stays frozen (CRIU holds it, and the
//! fence stops it should CRIU let go) until the transfer is over; CRIU then kills it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criu_sys::{Criu, PageServer};
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};
use understudy_common::epoch::Manifest;
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::transfer::{DataMessage, DataReply, MAX_DATA_FRAME, MAX_FILE_CHUNK};
use understudy_common::workload::{EpochReport, Peer};

use crate::checkpoint::{self, DumpRequest};
use crate::clock::now_ms;
use crate::life::epoch::Job;
use crate::workload::process::Running;

/// How long CRIU may take to write the images.
const IMAGES_LIMIT: Duration = Duration::from_secs(60);
/// How long the target may take to stage the images.
const STAGE_LIMIT: Duration = Duration::from_secs(60);
/// How long a cancelled transfer may take to end.
const END_LIMIT: Duration = Duration::from_secs(30);

/// A post-copy transfer under way (or over) from this host.
#[derive(Debug)]
pub struct Session {
    running: Running,
    cancel: Option<oneshot::Sender<()>>,
    /// The dump's result once it returned.
    done: watch::Receiver<Option<Result<(), String>>>,
}

impl Session {
    /// Waits (up to `limit`) for the dump to end; its result, if it did.
    async fn ended(&mut self, limit: Duration) -> Option<Result<(), String>> {
        let waited = tokio::time::timeout(limit, self.done.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(r)) => r.clone(),
            _ => None,
        }
    }

    /// A rollback: the transfer is reset (the dump fails and CRIU lets the tree go, stopped
    /// by the fence), then the tree runs again here. Fails if CRIU had already finished the
    /// transfer, which kills the tree.
    pub async fn resume(mut self) -> Result<Running, String> {
        if let Some(c) = self.cancel.take() {
            let _ = c.send(());
        }
        match self.ended(END_LIMIT).await {
            None => Err(format!(
                "the post-copy dump did not end within {END_LIMIT:?} of being cancelled"
            )),
            Some(Ok(())) => {
                Err("every page had been taken: CRIU ended the original after the transfer".into())
            }
            Some(Err(_)) if !self.running.is_alive() => {
                Err("the original is gone after the failed transfer".into())
            }
            Some(Err(why)) => {
                super::unfence(self.running.pid);
                self.running.unexpect_exit();
                tracing::info!(
                    pid = self.running.pid,
                    "post-copy cancelled ({why}); the original runs again"
                );
                Ok(self.running)
            }
        }
    }

    /// The move is confirmed: waits for the transfer to end (up to `limit`), and kills the
    /// tree if CRIU left it (a transfer that failed after the target confirmed).
    pub async fn finish(mut self, limit: Duration) {
        let ended = self.ended(limit).await;
        if self.running.is_alive() {
            tracing::warn!(
                pid = self.running.pid,
                ?ended,
                "post-copy: killing the original CRIU left after the transfer"
            );
            self.running.kill();
        }
    }
}

/// A free loopback TCP port for the page server.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Takes the final epoch of `job` by post-copy. On success the target holds the images and
/// the transfer runs on; on failure the tree runs here as before.
pub async fn freeze(
    job: &Job,
    target: &Peer,
    criu: Arc<Criu>,
) -> Result<(EpochReport, Session), String> {
    if !job.data.is_empty() {
        return Err("post-copy: the workload has data directories".into());
    }
    if let Some(p) = super::host_problem() {
        return Err(p);
    }
    let port = free_port()?;
    let req = DumpRequest {
        workload: job.workload.clone(),
        generation: job.generation,
        epoch: job.epoch,
        pid: job.running.pid,
        stdio_key: job.running.stdio_key.clone(),
        leave_running: false,
        dir: job.dir.clone(),
        data: Vec::new(),
        index: Default::default(),
        sigs: Default::default(),
        track_mem: false,
        parent: None,
    };
    let (images_tx, images_rx) = oneshot::channel();
    let (done_tx, done_rx) = watch::channel(None);
    let started = Instant::now();
    job.running.expect_exit();
    let dir = job.dir.clone();
    tokio::task::spawn_blocking(move || {
        let mut images_tx = Some(images_tx);
        let server = PageServer {
            address: "127.0.0.1".into(),
            port,
        };
        let result = checkpoint::dump_lazy_blocking(&criu, &req, server, &mut |m| {
            if let Some(tx) = images_tx.take() {
                let _ = tx.send(m);
            }
        });
        if let Err(e) = &result {
            tracing::warn!(workload = %req.workload, "post-copy dump: {e}");
        }
        checkpoint::remove_dir(&dir);
        let _ = done_tx.send(Some(result));
    });
    let mut session = Session {
        running: job.running.clone(),
        cancel: None,
        done: done_rx,
    };
    let manifest = match tokio::time::timeout(IMAGES_LIMIT, images_rx).await {
        Ok(Ok(Ok(m))) => m,
        Ok(Ok(Err(e))) => return Err(abandon(session, &format!("post-copy dump: {e}"), port).await),
        _ => {
            return Err(abandon(session, "post-copy dump: no images from CRIU", port).await);
        }
    };
    let frozen_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let sent_started = Instant::now();
    let streams = match send_images(job, target, &manifest).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("post-copy images not staged on {}: {e}", target.name);
            return Err(abandon(session, &why, port).await);
        }
    };
    let tcp = match page_server(port).await {
        Ok(t) => t,
        Err(e) => {
            let why = format!("post-copy: cannot reach the dump's page server: {e}");
            return Err(abandon(session, &why, port).await);
        }
    };
    let (cancel_tx, cancel_rx) = oneshot::channel();
    session.cancel = Some(cancel_tx);
    let workload = job.workload.clone();
    tokio::spawn(async move {
        let (send, recv) = streams;
        let end = super::relay::source(tcp, send, recv, cancel_rx).await;
        tracing::info!(%workload, ?end, "post-copy page transfer ended");
    });
    let bytes = manifest.total_bytes();
    let report = EpochReport {
        workload: job.workload.clone(),
        generation: job.generation,
        epoch: job.epoch,
        shadow: target.name.clone(),
        bytes_total: bytes,
        bytes_sent: bytes,
        bytes_changed: bytes,
        frozen_ms,
        frozen_disk_ms: 0,
        data_bytes: 0,
        data_changed: 0,
        data_sent: 0,
        transfer_ms: u64::try_from(sent_started.elapsed().as_millis()).unwrap_or(u64::MAX),
        cpu_ms: 0,
        committed_unix_ms: now_ms(),
        incremental: false,
        cadence: None,
    };
    Ok((report, session))
}

/// How long the dump's page server may take to listen once CRIU has written the images.
const LISTEN_LIMIT: Duration = Duration::from_secs(10);

/// Connects to the dump's page server on `port`, once it listens: CRIU opens it only after
/// its `post-dump` notification, and until a client comes it holds the tree frozen.
async fn page_server(port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let deadline = Instant::now() + LISTEN_LIMIT;
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Gives up on a post-copy freeze before the target took anything: the page server is
/// reset (a connection of our own when none was made), the dump ends, the tree runs again.
async fn abandon(mut session: Session, why: &str, port: u16) -> String {
    if session.done.borrow().is_none() {
        if let Ok(tcp) = page_server(port).await {
            let _ = tcp.set_zero_linger();
            drop(tcp);
        }
    }
    match session.ended(END_LIMIT).await {
        Some(Ok(())) => {
            // Cannot happen without a client that took the pages; the tree is gone.
            format!("{why}; and CRIU ended the original")
        }
        _ if session.running.is_alive() => {
            super::unfence(session.running.pid);
            session.running.unexpect_exit();
            why.to_owned()
        }
        _ => format!("{why}; and the original is gone"),
    }
}

/// Opens a stream to the target and sends it the images; returns the stream, to carry the
/// page server, once the target has staged them.
async fn send_images(
    job: &Job,
    target: &Peer,
    manifest: &Manifest,
) -> Result<(SendStream, RecvStream), String> {
    let conn = job.peers.connect(target).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let offer = DataMessage::PostCopy {
        manifest: manifest.clone(),
    };
    write_frame(&mut send, PROTOCOL_VERSION, &offer)
        .await
        .map_err(|e| e.to_string())?;
    let mut piece = vec![0u8; MAX_FILE_CHUNK as usize];
    for f in &manifest.files {
        let path = job.dir.join(&f.name);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        loop {
            let n = file
                .read(&mut piece)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let len = u32::try_from(n).unwrap_or(0).to_be_bytes();
            send.write_all(&len).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            send.write_all(&piece[..n])
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let reply: DataReply = tokio::time::timeout(
        STAGE_LIMIT,
        read_frame(&mut recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
    )
    .await
    .map_err(|_| format!("no answer within {STAGE_LIMIT:?}"))?
    .map_err(|e| e.to_string())?;
    match reply {
        DataReply::Staged => Ok((send, recv)),
        DataReply::Refused { reason } => Err(format!("refused: {reason}")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
