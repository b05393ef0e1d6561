//! Carries CRIU's page-server connection over the agents' QUIC data plane. CRIU speaks
//! plain TCP, so each side keeps it on its loopback: on the old primary the dump's page
//! server, on the target the `criu lazy-pages` daemon; this relay joins the two through
//! one mutually authenticated QUIC stream.
//!
//! How a connection ends matters, because CRIU's page server takes a clean close for the
//! end of the transfer and then kills the dumped tree. So a clean end is passed on only
//! when the target's daemon finished (it exited 0: every page is in), and it is said in
//! so many words: the target's bytes travel in chunks after their length, and the end is
//! an empty chunk. A stream that merely ends (a dropped stream finishes itself in QUIC), is
//! reset or breaks is passed on as a reset, which fails the dump and leaves the tree
//! (fenced by `SIGSTOP`) for a rollback to resume.

use std::time::Duration;

use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The QUIC error code of a relay that gave up.
const ABANDONED: VarInt = VarInt::from_u32(1);
/// Bytes moved per read.
const PIECE: usize = 256 * 1024;

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both sides closed cleanly.
    Clean,
    /// Reset, cancelled or broken: why.
    Broken(String),
}

/// Splits `tcp` so that it is reset once both halves are dropped (`SO_LINGER` of zero,
/// and halves that do not shut the stream down when dropped): CRIU then reads an error,
/// never the end of the transfer. A clean end is an explicit `shutdown` first.
fn split(tcp: TcpStream) -> (ReadHalf<TcpStream>, WriteHalf<TcpStream>) {
    let _ = tcp.set_zero_linger();
    tokio::io::split(tcp)
}

/// A task's result, its panic or cancellation as an error.
fn joined<T>(r: Result<Result<T, String>, tokio::task::JoinError>) -> Result<T, String> {
    r.map_err(|e| e.to_string()).and_then(|r| r)
}

/// The old primary's side: `tcp` is connected to the dump's page server. Ends when the
/// target said the end and the page server closed, or at `cancel` (a rollback: the page
/// server is reset, so the dump fails and the tree is left stopped).
pub async fn source(
    tcp: TcpStream,
    mut send: SendStream,
    mut recv: RecvStream,
    cancel: oneshot::Receiver<()>,
) -> End {
    let (mut tr, mut tw) = split(tcp);
    // The page server's bytes go to the target as they are.
    let mut up = tokio::spawn(async move {
        let mut buf = vec![0u8; PIECE];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) => {
                    let _ = send.finish();
                    return Ok(());
                }
                Ok(n) => {
                    crate::faults::post_copy_piece().await;
                    send.write_all(&buf[..n])
                        .await
                        .map_err(|e| format!("to the target: {e}"))?;
                }
                Err(e) => {
                    let _ = send.reset(ABANDONED);
                    return Err(format!("page server: {e}"));
                }
            }
        }
    });
    // The target's chunks go to the page server, until the end is said.
    let mut down = tokio::spawn(async move {
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = read_chunk(&mut recv, &mut buf)
                .await
                .map_err(|e| format!("from the target: {e}"))?;
            if n == 0 {
                tw.shutdown()
                    .await
                    .map_err(|e| format!("page server: {e}"))?;
                // Kept until the page server has closed too (dropped, it would reset).
                return Ok(tw);
            }
            tw.write_all(&buf[..n])
                .await
                .map_err(|e| format!("page server: {e}"))?;
        }
    });
    tokio::select! {
        _ = cancel => {
            up.abort();
            down.abort();
            End::Broken("cancelled".into())
        }
        ended = async {
            let said = joined((&mut down).await)?;
            joined((&mut up).await)?;
            drop(said);
            Ok::<(), String>(())
        } => match ended {
            Ok(()) => End::Clean,
            Err(e) => {
                up.abort();
                down.abort();
                End::Broken(e)
            }
        },
    }
}

/// Reads one chunk from the target into `buf`: its length (0: the end, said on purpose).
async fn read_chunk(recv: &mut RecvStream, buf: &mut [u8]) -> Result<usize, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("the stream ended without the end being said: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > buf.len() {
        return Err(format!("a chunk of {len} bytes (at most {})", buf.len()));
    }
    recv.read_exact(&mut buf[..len])
        .await
        .map_err(|e| e.to_string())?;
    Ok(len)
}

/// Writes one chunk to the old primary: its length, then the bytes.
async fn write_chunk(send: &mut SendStream, bytes: &[u8]) -> Result<(), String> {
    let len = u32::try_from(bytes.len()).map_err(|e| e.to_string())?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())
}

/// The target's side: `tcp` is the `criu lazy-pages` daemon's connection. Its end is
/// passed on as `verdict` says once the daemon has exited (`true`: it exited 0). When the
/// old primary's side breaks, `on_break` runs first (it stops the restored tree, which
/// must not run on without the rest of its memory), then the daemon's connection is reset.
pub async fn target(
    tcp: TcpStream,
    mut send: SendStream,
    mut recv: RecvStream,
    verdict: oneshot::Receiver<bool>,
    on_break: impl FnOnce() + Send + 'static,
) -> End {
    let (mut tr, mut tw) = split(tcp);
    // The daemon's bytes go to the old primary in chunks; its end only as the verdict says.
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; PIECE];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => write_chunk(&mut send, &buf[..n])
                    .await
                    .map_err(|e| format!("to the old primary: {e}"))?,
                Err(e) => {
                    let _ = send.reset(ABANDONED);
                    return Err(format!("lazy-pages daemon: {e}"));
                }
            }
        }
        let ok = tokio::time::timeout(Duration::from_secs(30), verdict)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && write_chunk(&mut send, &[]).await.is_ok() {
            let _ = send.finish();
            Ok(())
        } else {
            let _ = send.reset(ABANDONED);
            Err("the lazy-pages daemon did not finish".to_string())
        }
    });
    // The page server's bytes go to the daemon as they are.
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; PIECE];
        loop {
            match recv.read(&mut buf).await {
                Ok(None) => {
                    let _ = tw.shutdown().await;
                    return Ok(tw);
                }
                Ok(Some(n)) => tw
                    .write_all(&buf[..n])
                    .await
                    .map_err(|e| format!("lazy-pages daemon: {e}"))?,
                Err(e) => {
                    on_break();
                    return Err(format!("from the old primary: {e}"));
                }
            }
        }
    });
    let down = joined(down.await);
    let up = joined(up.await);
    match (up, down) {
        (Ok(()), Ok(_)) => End::Clean,
        // What broke on the old primary's side says more than the daemon's end that followed.
        (_, Err(e)) | (Err(e), _) => End::Broken(e),
    }
}
