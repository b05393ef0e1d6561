//! The shadow's end of one epoch transfer: stage every file, check every hash, and commit
//! the epoch atomically — or discard the staging and keep the last committed epoch whole.
//! A primary that stops sending is given up on: each message must arrive within
//! [`ANSWER_LIMIT`], each piece of a file and each answer written within [`STALL_LIMIT`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quinn::{RecvStream, SendStream};
use understudy_common::epoch::{check_file, Manifest};
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::transfer::{DataMessage, DataReply, Encoding, MAX_DATA_FRAME};
use understudy_common::workload::validate_workload_name;

use super::receive_core::{check_offer, chunk, DoneDecision, Receiving, ShadowView};
use super::send::{ANSWER_LIMIT, STALL_LIMIT};
use super::shadow_store::ShadowStore;
use crate::node::Node;
use crate::workload::Paths;

/// Test-only fault injection: `UNDERSTUDY_FAULT_CORRUPT_STAGED=NAME` flips a byte in every
/// staged file whose name contains NAME; `once:NAME` only in the first one. It lets the
/// end-to-end tests corrupt a staged file at the exact moment a disk or memory fault would.
fn corrupt_if_asked(path: &Path, name: &str) {
    static DONE_ONCE: AtomicBool = AtomicBool::new(false);
    let Ok(spec) = std::env::var("UNDERSTUDY_FAULT_CORRUPT_STAGED") else {
        return;
    };
    let (once, pat) = match spec.strip_prefix("once:") {
        Some(p) => (true, p.to_owned()),
        None => (false, spec),
    };
    if pat.is_empty() || !name.contains(&pat) || (once && DONE_ONCE.swap(true, Ordering::SeqCst)) {
        return;
    }
    if let Ok(mut bytes) = std::fs::read(path) {
        let mid = bytes.len() / 2;
        if let Some(b) = bytes.get_mut(mid) {
            *b ^= 0x01;
            let _ = std::fs::write(path, bytes);
            tracing::warn!(
                "fault injection: flipped a byte in staged {}",
                path.display()
            );
        }
    }
}

/// One file's bytes as they arrive, read by a blocking decoder.
#[derive(Debug)]
struct Pieces {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl std::io::Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.piece.len() {
            match self.rx.blocking_recv() {
                Some(p) => (self.piece, self.at) = (p, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Passes a file's chunks from the primary to a decoder as they arrive (a few in flight
/// at most), up to the empty chunk that ends the file; at most `cap` bytes in all, each
/// chunk at most [`MAX_FILE_CHUNK`]. Fails when the decoder stopped taking them.
async fn pipe(
    recv: &mut RecvStream,
    name: &str,
    cap: u64,
    to: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let mut total = 0u64;
    loop {
        let mut len = [0u8; 4];
        read_within(recv, &mut len).await?;
        let Some(len) = chunk(name, u32::from_be_bytes(len), &mut total, cap)? else {
            return Ok(());
        };
        let mut piece = vec![0; len];
        read_within(recv, &mut piece).await?;
        to.send(piece)
            .await
            .map_err(|_| "the file's decoder stopped before its end".to_owned())?;
    }
}

/// Fills `buf` from the primary, failing after [`STALL_LIMIT`] without it.
async fn read_within(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), String> {
    tokio::time::timeout(STALL_LIMIT, recv.read_exact(buf))
        .await
        .map_err(|_| format!("primary: no progress for {STALL_LIMIT:?}"))?
        .map_err(|e| format!("primary: {e}"))
}

/// Stages a file straight from the wire, decoded as its pieces arrive: a whole file
/// through the zstd decoder, a delta applied onto a copy of `base` (its file in the base
/// epoch) a command at a time.
fn stage_stream(
    staging: &Path,
    name: &str,
    base: Option<PathBuf>,
    input: Pieces,
    size: u64,
) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let path = staging.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("staging {}: {e}", parent.display()))?;
    }
    match base {
        Some(base) => understudy_common::delta_apply::apply_stream(&base, &path, input, size)
            .map_err(|e| format!("{name}: {e}"))?,
        None => {
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("staging {}: {e}", path.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            understudy_common::delta_apply::decode_whole(input, &mut out, size)
                .map_err(|e| format!("{name}: {e}"))?;
            std::io::Write::flush(&mut out)
                .map_err(|e| format!("staging {}: {e}", path.display()))?;
        }
    }
    if size > 1 << 20 {
        tracing::debug!(file = name, ms = t0.elapsed().as_millis(), "staged");
    }
    corrupt_if_asked(&path, name);
    Ok(())
}

/// The primary's next message, within [`ANSWER_LIMIT`].
async fn next_message(recv: &mut RecvStream) -> Result<DataMessage, String> {
    tokio::time::timeout(
        ANSWER_LIMIT,
        read_frame(recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
    )
    .await
    .map_err(|_| format!("primary: nothing within {ANSWER_LIMIT:?}"))?
    .map_err(|e| format!("primary: {e}"))
}

/// Writes an answer to the primary within [`STALL_LIMIT`].
async fn answer(send: &mut SendStream, reply: &DataReply) -> Result<(), String> {
    tokio::time::timeout(STALL_LIMIT, write_frame(send, PROTOCOL_VERSION, reply))
        .await
        .map_err(|_| format!("primary: answer not taken within {STALL_LIMIT:?}"))?
        .map_err(|e| e.to_string())
}

/// Hard-links into `staging` each unsent data file whose base holds the same content;
/// returns the names linked. Anything else stays missing and is asked for whole.
fn link_unchanged(
    staging: &Path,
    base_dir: &Path,
    base_hashes: &HashMap<String, [u8; 32]>,
    unsent: Vec<(String, String, [u8; 32])>,
) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for (name, base_name, hash) in unsent {
        if base_hashes.get(&base_name) != Some(&hash) {
            continue;
        }
        let dst = staging.join(&name);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("staging {}: {e}", parent.display()))?;
        }
        match std::fs::hard_link(base_dir.join(&base_name), &dst) {
            Ok(()) => done.push(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("staging {}: {e}", dst.display())),
        }
    }
    Ok(done)
}

/// Files staged at once.
const STAGING_TASKS: usize = 4;

type StagingTasks = tokio::task::JoinSet<Result<(), String>>;

async fn join_one(tasks: &mut StagingTasks) -> Result<(), String> {
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(format!("staging task failed: {e}")),
        None => Ok(()),
    }
}

/// Serves one epoch-transfer stream from `peer`.
pub async fn handle(node: Arc<Node>, peer: String, mut send: SendStream, mut recv: RecvStream) {
    let mut staging_of: Option<ShadowStore> = None;
    let mut tasks = StagingTasks::new();
    let result = match next_message(&mut recv).await {
        Ok(DataMessage::PostCopy { manifest }) => {
            // A post-copy move's images; the stream then carries its page transfer.
            crate::postcopy::target::receive(node, peer, send, recv, manifest).await;
            return;
        }
        Ok(first) => {
            receive(
                &node,
                &peer,
                (&mut send, &mut recv, first),
                &mut staging_of,
                &mut tasks,
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(reason) = result {
        // Let running staging finish before the directory goes.
        while tasks.join_next().await.is_some() {}
        if let Some(store) = staging_of {
            store.discard_staging();
        }
        tracing::warn!(%peer, "epoch refused: {reason}");
        let _ = answer(&mut send, &DataReply::Refused { reason }).await;
        let _ = send.finish();
    }
}

async fn receive(
    node: &Node,
    peer: &str,
    (send, recv, first): (&mut SendStream, &mut RecvStream, DataMessage),
    staging_of: &mut Option<ShadowStore>,
    tasks: &mut StagingTasks,
) -> Result<(), String> {
    let (manifest, base_epoch, final_epoch) = match first {
        DataMessage::Offer {
            manifest,
            base_epoch,
            final_epoch,
        } => (manifest, base_epoch, final_epoch),
        other => return Err(format!("expected an offer, got {other:?}")),
    };
    validate_workload_name(&manifest.workload)?;
    let store = ShadowStore::new(Paths::new(&node.data_dir, &manifest.workload).shadow_epochs());
    let expected = node.expected_primary(&manifest.workload);
    let view = ShadowView {
        expected_primary: expected.as_deref(),
        seen_generation: node.fence.seen(&manifest.workload),
        newest_committed: store.newest(),
        data_dirs: node
            .shadow_spec(&manifest.workload)
            .map_or(0, |s| s.data_dirs.len()),
        available: store.available(),
    };
    check_offer(&view, peer, &manifest)?;
    node.fence
        .admit(&manifest.workload, manifest.generation)
        .map_err(|e| e.to_string())?;
    let have_base = base_epoch.is_some_and(|b| store.committed().contains(&b));
    let base_dir = base_epoch.filter(|_| have_base).map(|b| store.epoch_dir(b));
    // The base's data-file hashes, to link unchanged files instead of receiving them.
    let base_hashes: HashMap<String, [u8; 32]> = match &base_dir {
        Some(dir) if !manifest.data.is_empty() => Manifest::read_from(dir)
            .map_err(|e| format!("base epoch: {e}"))?
            .data_files()
            .map(|f| (f.name, f.blake3))
            .collect(),
        _ => HashMap::new(),
    };
    let mut linked: HashSet<String> = HashSet::new();
    let staging = store
        .begin(manifest.epoch)
        .map_err(|e| format!("cannot stage epoch {}: {e}", manifest.epoch))?;
    *staging_of = Some(store.clone());
    answer(send, &DataReply::Accept { have_base }).await?;

    let mut core = Receiving::new(manifest, have_base);
    loop {
        match next_message(recv).await? {
            DataMessage::File { name, encoding } => {
                let entry = core.on_file(&name, encoding)?;
                let cap = Receiving::wire_cap(&entry);
                linked.remove(&name);
                // Every file goes from the stream to disk as it arrives (a first epoch's
                // memory images are the largest), never whole in memory; files stage in
                // parallel, each its own, while the next ones arrive.
                let base = match (encoding, &base_dir) {
                    (Encoding::Whole, _) => None,
                    (Encoding::Delta, Some(dir)) => Some(dir.join(core.base_name(&name))),
                    (Encoding::Delta, None) => {
                        return Err(format!("delta for {name:?} but no base epoch here"))
                    }
                };
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let input = Pieces {
                    rx,
                    piece: Vec::new(),
                    at: 0,
                };
                let st = staging.clone();
                tasks.spawn_blocking(move || {
                    stage_stream(&st, &entry.name, base, input, entry.size)
                });
                if let Err(e) = pipe(recv, &name, cap, tx).await {
                    // A decoder that stopped says why.
                    while !tasks.is_empty() {
                        join_one(tasks).await?;
                    }
                    return Err(e);
                }
                while tasks.len() >= STAGING_TASKS {
                    join_one(tasks).await?;
                }
            }
            DataMessage::Done { seal } => {
                core.on_seal(seal)?;
                let t = std::time::Instant::now();
                while !tasks.is_empty() {
                    join_one(tasks).await?;
                }
                if let Some(bd) = &base_dir {
                    let unsent = core.unsent_data();
                    let (st, bd, bh) = (staging.clone(), bd.clone(), base_hashes.clone());
                    let done =
                        tokio::task::spawn_blocking(move || link_unchanged(&st, &bd, &bh, unsent))
                            .await
                            .map_err(|e| e.to_string())??;
                    for name in done {
                        core.mark_linked(&name);
                        linked.insert(name);
                    }
                }
                let (st, m, skip) = (staging.clone(), core.manifest().clone(), linked.clone());
                let mismatched = tokio::task::spawn_blocking(move || {
                    m.files
                        .iter()
                        .cloned()
                        .chain(m.data_files())
                        .filter(|f| !skip.contains(&f.name))
                        .filter(|f| st.join(&f.name).exists())
                        .filter_map(|f| {
                            match check_file(&st.join(&f.name), &f, m.is_sealed_file(&f.name)) {
                                Ok(()) => None,
                                Err(e) => {
                                    tracing::warn!("staged file refused: {e}");
                                    Some(f.name.clone())
                                }
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| e.to_string())?;
                tracing::debug!(ms = t.elapsed().as_millis() as u64, "staged files verified");
                match core.on_done(mismatched) {
                    DoneDecision::Commit => {
                        let (st, m, s2) = (staging.clone(), core.manifest().clone(), store.clone());
                        tokio::task::spawn_blocking(move || s2.commit(&st, &m, !final_epoch))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| {
                                format!("commit of epoch {}: {e}", core.manifest().epoch)
                            })?;
                        *staging_of = None;
                        let epoch = core.manifest().epoch;
                        node.mark_verified(&core.manifest().workload, epoch);
                        tracing::debug!(
                            epoch,
                            ms = t.elapsed().as_millis() as u64,
                            "verified and committed"
                        );
                        tracing::debug!(workload = %core.manifest().workload, epoch, "epoch committed");
                        answer(send, &DataReply::Committed { epoch }).await?;
                        let _ = send.finish();
                        return Ok(());
                    }
                    DoneDecision::Resend(names) => {
                        for n in &names {
                            let _ = std::fs::remove_file(staging.join(n));
                        }
                        answer(send, &DataReply::Resend { names }).await?;
                    }
                    DoneDecision::Refuse(reason) => return Err(reason),
                }
            }
            DataMessage::Offer { .. } | DataMessage::PostCopy { .. } => {
                return Err("a second offer on one stream".into())
            }
        }
    }
}
