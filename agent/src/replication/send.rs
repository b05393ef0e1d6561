//! The primary's end of one epoch transfer: offer, files (delta or whole, zstd), done,
//! resend what the shadow asks for, until it commits or refuses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use quinn::{RecvStream, SendStream};
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::transfer::{DataMessage, DataReply, Encoding, MAX_DATA_FRAME};

use super::delta;
use crate::checkpoint::Dumped;

/// The epoch the shadow last acknowledged, which deltas are computed against.
#[derive(Debug, Clone)]
pub struct Base {
    /// Its number.
    pub epoch: u64,
    /// Its directory on this host (for counting changed bytes).
    pub dir: PathBuf,
    /// Signature of each of its files.
    pub sigs: HashMap<String, Vec<u8>>,
}

/// What a committed transfer cost.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Bytes written to the stream.
    pub bytes_sent: u64,
    /// Bytes of content that differ from the base (all of it without a base).
    pub bytes_changed: u64,
    /// Signatures of the sent epoch's files, the base of the next delta.
    pub sigs: HashMap<String, Vec<u8>>,
    /// Wall time of the transfer, milliseconds.
    pub transfer_ms: u64,
}

struct Encoded {
    encoding: Encoding,
    wire: Vec<u8>,
    sig: Vec<u8>,
    changed: u64,
}

/// Encodes one file. `next_base` also computes what the next epoch needs (the file's
/// signature) and the changed-bytes figure; a final epoch has no next, so it skips both and
/// keeps the freeze short.
fn encode_file(
    dir: &Path,
    name: &str,
    base: Option<&Base>,
    use_base: bool,
    next_base: bool,
) -> Result<Encoded, String> {
    let path = dir.join(name);
    let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base_sig = base.filter(|_| use_base).and_then(|b| b.sigs.get(name));
    let (encoding, wire) =
        delta::encode(&data, base_sig.map(Vec::as_slice)).map_err(|e| format!("{name}: {e}"))?;
    if !next_base {
        return Ok(Encoded {
            encoding,
            wire,
            sig: Vec::new(),
            changed: 0,
        });
    }
    let changed = match base.map(|b| b.dir.join(name)) {
        Some(old) => match std::fs::read(old) {
            Ok(old) => delta::changed_bytes(&old, &data),
            Err(_) => data.len() as u64,
        },
        None => data.len() as u64,
    };
    Ok(Encoded {
        encoding,
        wire,
        sig: delta::signature(&data),
        changed,
    })
}

async fn send_file(
    send: &mut SendStream,
    dir: &Path,
    name: &str,
    base: Option<&Base>,
    use_base: bool,
    next_base: bool,
) -> Result<(Encoded, u64), String> {
    let (dir2, name2, base2) = (dir.to_owned(), name.to_owned(), base.cloned());
    let t = Instant::now();
    let enc = tokio::task::spawn_blocking(move || {
        encode_file(&dir2, &name2, base2.as_ref(), use_base, next_base)
    })
    .await
    .map_err(|e| e.to_string())??;
    let encode_ms = t.elapsed().as_millis() as u64;
    let header = DataMessage::File {
        name: name.to_owned(),
        encoding: enc.encoding,
        len: enc.wire.len() as u64,
    };
    let frame = understudy_common::frame::encode_frame(PROTOCOL_VERSION, &header)
        .map_err(|e| e.to_string())?;
    send.write_all(&frame)
        .await
        .map_err(|e| format!("sending {name}: {e}"))?;
    send.write_all(&enc.wire)
        .await
        .map_err(|e| format!("sending {name}: {e}"))?;
    let n = (frame.len() + enc.wire.len()) as u64;
    if encode_ms > 20 {
        tracing::debug!(
            file = name,
            encode_ms,
            send_ms = t.elapsed().as_millis() as u64 - encode_ms,
            wire = n,
            "file sent"
        );
    }
    Ok((enc, n))
}

async fn reply(recv: &mut RecvStream) -> Result<DataReply, String> {
    read_frame(recv, PROTOCOL_VERSION, MAX_DATA_FRAME)
        .await
        .map_err(|e| format!("shadow: {e}"))
}

/// Sends `dumped` over a new stream of `conn`; `progress(done, total)` is called per file.
/// A final epoch is the last before a switchover: nothing will be computed against it.
pub async fn send_epoch(
    conn: &quinn::Connection,
    dumped: &Dumped,
    base: Option<&Base>,
    final_epoch: bool,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Sent, String> {
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("shadow: {e}"))?;
    let manifest = &dumped.manifest;
    let offer = DataMessage::Offer {
        manifest: manifest.clone(),
        base_epoch: base.map(|b| b.epoch),
        final_epoch,
    };
    write_frame(&mut send, PROTOCOL_VERSION, &offer)
        .await
        .map_err(|e| format!("shadow: {e}"))?;
    let have_base = match reply(&mut recv).await? {
        DataReply::Accept { have_base } => have_base,
        DataReply::Refused { reason } => return Err(format!("shadow refused the epoch: {reason}")),
        other => return Err(format!("shadow answered {other:?} to an offer")),
    };
    let total = manifest.total_bytes();
    let mut done = 0u64;
    let mut bytes_sent = 0u64;
    let mut bytes_changed = 0u64;
    let mut sigs = HashMap::new();
    for f in &manifest.files {
        let (enc, n) = send_file(
            &mut send,
            &dumped.dir,
            &f.name,
            base,
            have_base,
            !final_epoch,
        )
        .await?;
        bytes_sent += n;
        bytes_changed += enc.changed;
        sigs.insert(f.name.clone(), enc.sig);
        done += f.size;
        progress(done, total);
    }
    loop {
        write_frame(&mut send, PROTOCOL_VERSION, &DataMessage::Done)
            .await
            .map_err(|e| format!("shadow: {e}"))?;
        match reply(&mut recv).await? {
            DataReply::Committed { epoch } if epoch == manifest.epoch => break,
            DataReply::Resend { names } => {
                tracing::warn!(workload = %manifest.workload, epoch = manifest.epoch, ?names, "shadow found hash mismatches; resending whole");
                for name in names {
                    let (enc, n) =
                        send_file(&mut send, &dumped.dir, &name, None, false, !final_epoch).await?;
                    sigs.insert(name, enc.sig);
                    bytes_sent += n;
                }
            }
            DataReply::Refused { reason } => {
                return Err(format!("shadow refused the epoch: {reason}"))
            }
            other => return Err(format!("shadow answered {other:?} to done")),
        }
    }
    let _ = send.finish();
    Ok(Sent {
        bytes_sent,
        bytes_changed,
        sigs,
        transfer_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
