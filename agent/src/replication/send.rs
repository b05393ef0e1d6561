//! The primary's end of one epoch transfer: offer, files (delta or whole, zstd), done,
//! resend what the shadow asks for, until it commits or refuses. Every wait on the shadow
//! has a deadline: a write that makes no progress for [`STALL_LIMIT`], an answer that does
//! not come within [`ANSWER_LIMIT`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};
use understudy_common::frame::{encode_frame, read_frame};
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::seal::{self, Binding, DataKey, Sealer};
use understudy_common::transfer::{DataMessage, DataReply, Encoding, SealedFiles, MAX_DATA_FRAME};

use understudy_common::data_entry::{wire_name, DataKind};

use super::delta::{self, Encoded, PageSignature};
use crate::checkpoint::Dumped;
use crate::datadir::capture::{patch_path, Index};

/// How long a write to the shadow may make no progress.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long the shadow may take to answer (it hashes every file of the epoch before it
/// commits).
pub const ANSWER_LIMIT: Duration = Duration::from_secs(120);
/// Writes go out in pieces of this size, each with its own stall deadline.
const PIECE: usize = 1 << 20;

/// Why an epoch did not reach the shadow.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The shadow no longer holds the base epoch: the primary forgets it, so the next
    /// epoch captures and sends everything.
    #[error("the shadow no longer holds the base epoch {0}")]
    BaseLost(String),
    /// The connection, the shadow's refusal, or a local file.
    #[error("{0}")]
    Other(String),
}

impl From<String> for SendError {
    fn from(e: String) -> Self {
        SendError::Other(e)
    }
}

/// Writes `bytes`, failing if a piece makes no progress within [`STALL_LIMIT`].
async fn write_bounded(send: &mut SendStream, bytes: &[u8], what: &str) -> Result<(), String> {
    for piece in bytes.chunks(PIECE) {
        tokio::time::timeout(STALL_LIMIT, send.write_all(piece))
            .await
            .map_err(|_| format!("sending {what}: no progress for {STALL_LIMIT:?}"))?
            .map_err(|e| format!("sending {what}: {e}"))?;
    }
    Ok(())
}

/// Writes one framed message.
async fn write_message(send: &mut SendStream, message: &DataMessage) -> Result<(), String> {
    let frame = encode_frame(PROTOCOL_VERSION, message).map_err(|e| e.to_string())?;
    write_bounded(send, &frame, "to the shadow").await
}

/// The epoch the shadow last acknowledged, which deltas are computed against.
#[derive(Debug, Clone)]
pub struct Base {
    /// Its number.
    pub epoch: u64,
    /// Page signature of each of its files (data files by wire name).
    pub sigs: Arc<HashMap<String, PageSignature>>,
    /// Record fingerprints of its sealed memory images.
    pub seals: Arc<HashMap<String, Vec<u128>>>,
    /// Its data-directory entries, what the next capture compares with.
    pub index: Arc<Index>,
}

/// What a committed transfer cost.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Bytes written to the stream.
    pub bytes_sent: u64,
    /// Bytes of content not found at the same place in the base (all without a base).
    pub bytes_changed: u64,
    /// Of `bytes_changed`, bytes of data files.
    pub data_changed: u64,
    /// Of `bytes_sent`, bytes of data files.
    pub data_sent: u64,
    /// Page signatures of the sent epoch's files, the base of the next delta.
    pub sigs: HashMap<String, PageSignature>,
    /// Record fingerprints of its sealed memory images.
    pub seals: HashMap<String, Vec<u128>>,
    /// Wall time of the transfer, milliseconds.
    pub transfer_ms: u64,
}

/// Wire bytes go to the stream in chunks of at most this many bytes, each after its
/// length, while the file is still being encoded: no file is ever whole in memory.
const CHUNK: usize = 256 * 1024;

/// The wire bytes of a file being encoded on a blocking thread, handed to the stream's
/// writer a chunk at a time (a few chunks in flight at most).
struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the transfer to the shadow stopped",
            )
        })
    }
}

impl std::io::Write for ChunkSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK {
            self.push()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends one file: its header, then the wire bytes `encode` writes (run on a blocking
/// thread meanwhile) as length-prefixed chunks, then an empty chunk. Returns what `encode`
/// returned and the bytes written.
async fn stream_file<T: Send + 'static>(
    send: &mut SendStream,
    name: &str,
    encoding: Encoding,
    encode: impl FnOnce(&mut ChunkSink) -> Result<T, String> + Send + 'static,
) -> Result<(T, u64), String> {
    let t = Instant::now();
    let header = DataMessage::File {
        name: name.to_owned(),
        encoding,
    };
    let frame = encode_frame(PROTOCOL_VERSION, &header).map_err(|e| e.to_string())?;
    write_bounded(send, &frame, name).await?;
    let mut n = frame.len() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let task = tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let out = encode(&mut sink)?;
        sink.push().map_err(|e| e.to_string())?;
        Ok::<T, String>(out)
    });
    let mut written = Ok(());
    while let Some(chunk) = rx.recv().await {
        let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX).to_be_bytes();
        written = write_bounded(send, &len, name).await;
        if written.is_ok() {
            written = write_bounded(send, &chunk, name).await;
        }
        if written.is_err() {
            break;
        }
        n += (len.len() + chunk.len()) as u64;
    }
    // A failed write stops the encoder at its next chunk.
    drop(rx);
    let out = task.await.map_err(|e| e.to_string())?;
    written?;
    let out = out?;
    write_bounded(send, &0u32.to_be_bytes(), name).await?;
    n += 4;
    if t.elapsed() > Duration::from_millis(20) {
        tracing::debug!(
            file = name,
            total_ms = t.elapsed().as_millis(),
            wire = n,
            "file sent"
        );
    }
    Ok((out, n))
}

/// Reads, encodes and sends one file (a delta when `use_base` and the base has a
/// signature of `base_name`).
async fn send_file(
    send: &mut SendStream,
    dir: &Path,
    name: &str,
    base_name: &str,
    base: Option<&Base>,
    use_base: bool,
) -> Result<(Encoded, u64), String> {
    let path = dir.join(name);
    let base_sig = base
        .filter(|_| use_base)
        .and_then(|b| b.sigs.get(base_name))
        .cloned();
    let encoding = match base_sig {
        Some(_) => Encoding::Delta,
        None => Encoding::Whole,
    };
    let name2 = name.to_owned();
    stream_file(send, name, encoding, move |out| {
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        delta::stream_reader(file, base_sig.as_deref(), out).map_err(|e| format!("{name2}: {e}"))
    })
    .await
}

/// Reads, seals and sends one memory image (a delta in record coordinates when `use_base`
/// and the base has its signature and records); returns the encoding, bytes written and
/// the records' fingerprints.
async fn send_sealed_file(
    send: &mut SendStream,
    dir: &Path,
    name: &str,
    (base, use_base): (Option<&Base>, bool),
    (key, workload): (&Arc<DataKey>, &str),
) -> Result<(Encoded, u64, Vec<u128>), String> {
    let path = dir.join(name);
    let base_of = base
        .filter(|_| use_base)
        .and_then(|b| Some((b.sigs.get(name)?.clone(), b.seals.get(name)?.clone())));
    let base_of = base_of.filter(|(p, r)| delta::usable_sealed_base(Some((p, r))).is_some());
    let encoding = match base_of {
        Some(_) => Encoding::Delta,
        None => Encoding::Whole,
    };
    let sealer = Sealer::new(
        key,
        &Binding {
            workload: workload.to_owned(),
            file: name.to_owned(),
        },
    );
    let name2 = name.to_owned();
    let (sealed, n) = stream_file(send, name, encoding, move |out| {
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = base_of.as_ref().map(|(p, r)| (p.as_slice(), r.as_slice()));
        delta::stream_sealed(file, base, &sealer, out).map_err(|e| format!("{name2}: {e}"))
    })
    .await?;
    Ok((sealed.encoded, n, sealed.records))
}

async fn reply(recv: &mut RecvStream) -> Result<DataReply, String> {
    tokio::time::timeout(
        ANSWER_LIMIT,
        read_frame(recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
    )
    .await
    .map_err(|_| format!("shadow: no answer within {ANSWER_LIMIT:?}"))?
    .map_err(|e| format!("shadow: {e}"))
}

/// Sends `dumped` over a new stream of `conn`, its memory images sealed under `key`;
/// `progress(done, total)` is called per file. A final epoch is the last before a
/// switchover: the shadow restores it at once.
pub async fn send_epoch(
    conn: &quinn::Connection,
    dumped: &Dumped,
    base: Option<&Base>,
    final_epoch: bool,
    key: &Arc<DataKey>,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Sent, SendError> {
    let started = Instant::now();
    let (mut send, mut recv) = tokio::time::timeout(STALL_LIMIT, conn.open_bi())
        .await
        .map_err(|_| format!("shadow: no stream within {STALL_LIMIT:?}"))?
        .map_err(|e| format!("shadow: {e}"))?;
    let manifest = &dumped.manifest;
    // The shadow learns the sealed images' digests with `Done`.
    let mut offered = manifest.clone();
    for f in &mut offered.files {
        f.size = seal::sealed_size(f.size);
        f.blake3 = [0; 32];
    }
    let workload = manifest.workload.as_str();
    let offer = DataMessage::Offer {
        manifest: offered.clone(),
        base_epoch: base.map(|b| b.epoch),
        final_epoch,
    };
    write_message(&mut send, &offer).await?;
    let have_base = match reply(&mut recv).await? {
        DataReply::Accept { have_base } => have_base,
        DataReply::Refused { reason } => {
            return Err(format!("shadow refused the epoch: {reason}").into())
        }
        other => return Err(format!("shadow answered {other:?} to an offer").into()),
    };
    let result: Result<Sent, SendError> = async {
        let total = manifest.total_bytes();
        let mut done = 0u64;
        let mut bytes_sent = 0u64;
        let mut bytes_changed = 0u64;
        let mut sigs = HashMap::new();
        let mut seals = HashMap::new();
        for f in &manifest.files {
            let (enc, n, records) = send_sealed_file(
                &mut send,
                &dumped.dir,
                &f.name,
                (base, have_base),
                (key, workload),
            )
            .await?;
            bytes_sent += n;
            bytes_changed += enc.changed;
            sigs.insert(f.name.clone(), enc.signature);
            seals.insert(f.name.clone(), records);
            done += f.size;
            progress(done, total);
        }
        let mut sealed = offered.clone();
        for f in &mut sealed.files {
            f.blake3 = seals.get(&f.name).map(|r| seal::digest(r)).unwrap_or_default();
        }
        sealed.seal_with(key).map_err(|e| e.to_string())?;
        let seal_done = SealedFiles {
            digests: sealed.files.iter().map(|f| f.blake3).collect(),
            tag: sealed.seal.unwrap_or_default(),
        };
        let mut data_changed = 0u64;
        let mut data_sent = 0u64;
        for d in &manifest.data {
            let DataKind::File {
                size,
                blake3,
                origin,
            } = &d.kind
            else {
                continue;
            };
            let name = wire_name(&d.path);
            let origin = origin.as_deref().unwrap_or(&d.path);
            let base_name = wire_name(origin);
            let base_here = base.filter(|_| have_base);
            let base_hash = base_here.and_then(|b| b.index.file_hash(origin));
            if base_hash.as_ref() == Some(blake3) {
                // The shadow links it from its copy: nothing to send.
                if let Some(sig) = base_here.and_then(|b| b.sigs.get(&base_name)) {
                    sigs.insert(name, sig.clone());
                }
            } else if let Some(p) = dumped.patches.get(&name) {
                // Captured as the pages that differ from the base's file at `origin`.
                if base_hash.is_none() {
                    return Err(SendError::BaseLost(format!(
                        "for data file {}; the next epoch sends the data directories whole",
                        d.path
                    )));
                }
                let stored = patch_path(&dumped.dir.join(&name));
                let p2 = p.clone();
                let (enc, n) = stream_file(&mut send, &name, Encoding::Delta, move |out| {
                    let f = std::fs::File::open(&stored)
                        .map_err(|e| format!("{}: {e}", stored.display()))?;
                    let total = p2.signature.len() as u64;
                    delta::stream_patch(
                        std::io::BufReader::with_capacity(1 << 20, f),
                        (&p2.pages, total, p2.tail),
                        p2.signature,
                        out,
                    )
                    .map_err(|e| e.to_string())
                })
                .await?;
                bytes_sent += n;
                data_sent += n;
                bytes_changed += enc.changed;
                data_changed += enc.changed;
                sigs.insert(name, enc.signature);
            } else if !dumped.dir.join(&name).exists() {
                return Err(SendError::BaseLost(format!(
                    "for data file {}; the next epoch sends the data directories whole",
                    d.path
                )));
            } else {
                let (enc, n) =
                    send_file(&mut send, &dumped.dir, &name, &base_name, base, have_base).await?;
                bytes_sent += n;
                data_sent += n;
                bytes_changed += enc.changed;
                data_changed += enc.changed;
                sigs.insert(name, enc.signature);
            }
            done += size;
            progress(done, total);
        }
        loop {
            let done = DataMessage::Done {
                seal: Some(seal_done.clone()),
            };
            write_message(&mut send, &done).await?;
            match reply(&mut recv).await? {
                DataReply::Committed { epoch } if epoch == manifest.epoch => break,
                DataReply::Resend { names } => {
                    tracing::warn!(workload = %manifest.workload, epoch = manifest.epoch, ?names, "shadow found hash mismatches; resending whole");
                    for name in names {
                        if !dumped.dir.join(&name).exists() {
                            return Err(SendError::BaseLost(format!(
                                "(it asked for {name}, which this epoch did not copy)"
                            )));
                        }
                        let (enc, n) = if manifest.files.iter().any(|f| f.name == name) {
                            let (enc, n, _) = send_sealed_file(
                                &mut send,
                                &dumped.dir,
                                &name,
                                (None, false),
                                (key, workload),
                            )
                            .await?;
                            (enc, n)
                        } else {
                            send_file(&mut send, &dumped.dir, &name, &name, None, false).await?
                        };
                        bytes_sent += n;
                        if name.starts_with(understudy_common::data_entry::DATA_PREFIX) {
                            data_sent += n;
                        }
                        sigs.insert(name, enc.signature);
                    }
                }
                DataReply::Refused { reason } => {
                    return Err(format!("shadow refused the epoch: {reason}").into())
                }
                other => return Err(format!("shadow answered {other:?} to done").into()),
            }
        }
        let _ = send.finish();
        Ok(Sent {
            bytes_sent,
            bytes_changed,
            data_changed,
            data_sent,
            sigs,
            seals,
            transfer_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
    .await;
    match result {
        // A shadow that stopped taking the stream says why in its answer.
        Err(SendError::Other(e)) => Err(explain(&mut recv, e).await.into()),
        r => r,
    }
}

/// After a failed transfer: the shadow's refusal, when it sent one, says why better than
/// the stream it stopped reading.
async fn explain(recv: &mut RecvStream, err: String) -> String {
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        read_frame::<_, DataReply>(recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
    )
    .await;
    match answer {
        Ok(Ok(DataReply::Refused { reason })) => format!("shadow refused the epoch: {reason}"),
        _ => err,
    }
}
