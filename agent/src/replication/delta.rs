//! Turning an epoch file into wire bytes (the shadow's end, decoding them as they arrive,
//! is `understudy_common::delta_apply`).
//!
//! A file goes either whole (zstd) or as a delta (zstd of an rsync delta in librsync's
//! format — COPY and LITERAL commands) against the shadow's copy of the same file in the
//! last acknowledged epoch.
//!
//! The primary keeps a *page signature* of each file it sent: a 128-bit xxh3 fingerprint
//! per 4 KiB page. The delta is computed page by page: a page equal to the base page at the
//! same index, or to any base page (a page that moved when the layout shifted), becomes a
//! COPY; anything else a LITERAL. CRIU's page images are page-aligned, so this finds what
//! rsync's byte-granular rolling search finds there, at memory speed: the byte-granular
//! search (fast_rsync::diff) was measured at 14.5 s of CPU per epoch of a 1 GiB workload.
//! Fingerprints need not be cryptographic: every rebuilt file is checked against its
//! BLAKE3 hash from the manifest, and a mismatch is resent whole.
//!
//! A memory image of a sealed epoch ([`encode_sealed`]) goes as records
//! (`understudy_common::seal`): the delta is in record coordinates, a page found in the
//! base a COPY of the base's record, any other page a LITERAL of its freshly sealed record,
//! so only changed pages are sealed and the shadow applies it without the key.

use std::collections::HashMap;
use std::io::{Read, Write};

use understudy_common::delta_apply::{DELTA_MAGIC, OP_COPY_N8_N8, OP_END, OP_LITERAL_N8};
use understudy_common::seal::{self, Sealer, RECORD};
use understudy_common::transfer::Encoding;
use xxhash_rust::xxh3::xxh3_128;

/// Page size of signatures and deltas.
pub const PAGE: usize = 4096;
/// zstd level: fast; page images compress well even at low levels.
const ZSTD_LEVEL: i32 = 1;

/// Fingerprints of a file's full pages, in order.
pub type PageSignature = Vec<u128>;

/// Why a file could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
    /// Reading the file or writing the wire bytes failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The delta does not apply to the base.
    #[error("delta does not apply to the base file: {0}")]
    Apply(String),
    /// The decoded file is larger than announced.
    #[error("decoded data exceeds the announced {limit} bytes")]
    TooLarge {
        /// The announced size.
        limit: u64,
    },
}

/// What encoding one file produced besides its wire bytes (which went to the caller's
/// writer as they were made).
#[derive(Debug)]
pub struct Encoded {
    /// Whole or delta.
    pub encoding: Encoding,
    /// The file's page signature, the base of the next delta.
    pub signature: PageSignature,
    /// Bytes of the file not found at the same place in the base (all of it without one).
    pub changed: u64,
}

/// A file encoded into memory (tests).
#[cfg(test)]
#[derive(Debug)]
pub struct EncodedFile {
    /// Whole or delta.
    pub encoding: Encoding,
    /// The bytes to send.
    pub wire: Vec<u8>,
    /// The file's page signature.
    pub signature: PageSignature,
    /// Bytes changed.
    pub changed: u64,
}

#[cfg(test)]
impl EncodedFile {
    fn of(e: Encoded, wire: Vec<u8>) -> Self {
        EncodedFile {
            encoding: e.encoding,
            wire,
            signature: e.signature,
            changed: e.changed,
        }
    }
}

/// The page signature of `data`.
pub fn signature(data: &[u8]) -> PageSignature {
    data.chunks_exact(PAGE).map(xxh3_128).collect()
}

/// A literal run longer than this goes out as several LITERAL commands, so a long run of
/// changed pages is never held whole.
const LITERAL_RUN: usize = 1 << 20;

/// Writes delta commands to `out` as they are decided, merging adjacent COPYs and
/// buffering at most [`LITERAL_RUN`] literal bytes.
struct DeltaWriter<W: Write> {
    out: W,
    copy: Option<(u64, u64)>,
    literal: Vec<u8>,
}

impl<W: Write> DeltaWriter<W> {
    fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(&DELTA_MAGIC.to_be_bytes())?;
        Ok(DeltaWriter {
            out,
            copy: None,
            literal: Vec::new(),
        })
    }

    fn copy(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.flush_literal()?;
        match &mut self.copy {
            Some((o, l)) if *o + *l == offset => *l += len,
            _ => {
                self.flush_copy()?;
                self.copy = Some((offset, len));
            }
        }
        Ok(())
    }

    fn literal(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.flush_copy()?;
        self.literal.extend_from_slice(bytes);
        if self.literal.len() >= LITERAL_RUN {
            self.flush_literal()?;
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> std::io::Result<()> {
        if let Some((offset, len)) = self.copy.take() {
            self.out.write_all(&[OP_COPY_N8_N8])?;
            self.out.write_all(&offset.to_be_bytes())?;
            self.out.write_all(&len.to_be_bytes())?;
        }
        Ok(())
    }

    fn flush_literal(&mut self) -> std::io::Result<()> {
        if !self.literal.is_empty() {
            self.out.write_all(&[OP_LITERAL_N8])?;
            self.out
                .write_all(&(self.literal.len() as u64).to_be_bytes())?;
            self.out.write_all(&self.literal)?;
            self.literal.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.flush_copy()?;
        self.flush_literal()?;
        self.out.write_all(&[OP_END])?;
        Ok(self.out)
    }
}

/// Bytes read per step while encoding: files are streamed, never held whole.
const READ_CHUNK: usize = 256 * PAGE;

/// Reads `r` to its end in chunks of whole pages, calling `f` on each.
fn for_each_chunk(
    mut r: impl Read,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let filled = understudy_common::io::read_full(&mut r, &mut buf)?;
        if filled == 0 {
            return Ok(());
        }
        f(&buf[..filled])?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

/// The zstd stream the raw wire bytes go through on their way to `out`.
fn compressor<W: Write>(out: W) -> Result<zstd::stream::write::Encoder<'static, W>, DeltaError> {
    zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(DeltaError::Zstd)
}

/// For each base page fingerprint, the first page that has it.
fn index_of(base: &[u128]) -> HashMap<u128, usize> {
    let mut m = HashMap::with_capacity(base.len());
    for (j, f) in base.iter().enumerate() {
        m.entry(*f).or_insert(j);
    }
    m
}

/// Encodes the file read from `r` for the wire, writing the bytes to `out` as they are
/// made: a delta against `base` when given, else whole.
pub fn stream_reader(
    r: impl Read,
    base: Option<&[u128]>,
    out: impl Write,
) -> Result<Encoded, DeltaError> {
    let mut signature = Vec::new();
    let mut changed = 0u64;
    let z = compressor(out)?;
    let encoding = match base {
        None => {
            let mut z = z;
            for_each_chunk(r, |chunk| {
                signature.extend(chunk.chunks_exact(PAGE).map(xxh3_128));
                changed += chunk.len() as u64;
                z.write_all(chunk)
            })
            .map_err(DeltaError::Io)?;
            z.finish().map_err(DeltaError::Io)?;
            Encoding::Whole
        }
        Some(base) => {
            let mut w = DeltaWriter::new(z).map_err(DeltaError::Io)?;
            let mut anywhere: Option<HashMap<u128, usize>> = None;
            let mut index = 0usize;
            for_each_chunk(r, |chunk| {
                let full = chunk.len() - chunk.len() % PAGE;
                for page in chunk[..full].chunks_exact(PAGE) {
                    let fp = xxh3_128(page);
                    signature.push(fp);
                    if base.get(index) == Some(&fp) {
                        w.copy((index * PAGE) as u64, PAGE as u64)?;
                    } else {
                        changed += PAGE as u64;
                        let map = anywhere.get_or_insert_with(|| index_of(base));
                        match map.get(&fp) {
                            Some(&j) => w.copy((j * PAGE) as u64, PAGE as u64)?,
                            None => w.literal(page)?,
                        }
                    }
                    index += 1;
                }
                if full < chunk.len() {
                    changed += (chunk.len() - full) as u64;
                    w.literal(&chunk[full..])?;
                }
                Ok(())
            })
            .map_err(DeltaError::Io)?;
            w.finish()
                .and_then(|z| z.finish())
                .map_err(DeltaError::Io)?;
            Encoding::Delta
        }
    };
    Ok(Encoded {
        encoding,
        signature,
        changed,
    })
}

/// [`stream_reader`] into memory.
#[cfg(test)]
pub fn encode_reader(r: impl Read, base: Option<&[u128]>) -> Result<EncodedFile, DeltaError> {
    let mut wire = Vec::new();
    let e = stream_reader(r, base, &mut wire)?;
    Ok(EncodedFile::of(e, wire))
}

/// What sealing a file produced besides its wire bytes.
#[derive(Debug)]
pub struct Sealed {
    /// The plaintext page signature and the bytes changed.
    pub encoded: Encoded,
    /// The fingerprint of every record, in order: the base of the next delta with the
    /// page signature, and the sealed file's digest.
    pub records: Vec<u128>,
}

/// A sealed file encoded into memory (tests).
#[cfg(test)]
#[derive(Debug)]
pub struct SealedFile {
    /// The wire bytes, the plaintext page signature and the bytes changed.
    pub encoded: EncodedFile,
    /// The fingerprint of every record.
    pub records: Vec<u128>,
}

/// A base a sealed delta can copy from (page signature and record fingerprints): only one
/// with a record for each of its pages.
pub fn usable_sealed_base<'a>(
    base: Option<(&'a [u128], &'a [u128])>,
) -> Option<(&'a [u128], &'a [u128])> {
    base.filter(|(pages, records)| records.len() >= pages.len())
}

/// Where a sealed file's records go: delta commands, or the whole file's records.
enum SealedOut<W: Write> {
    Delta(DeltaWriter<W>),
    Whole(W),
}

/// Encodes the file read from `r` sealed by `sealer`, writing the bytes to `out` as they
/// are made: a delta in record coordinates against `base` (the base file's page signature
/// and record fingerprints) when [`usable_sealed_base`], else whole.
pub fn stream_sealed(
    r: impl Read,
    base: Option<(&[u128], &[u128])>,
    sealer: &Sealer,
    out: impl Write,
) -> Result<Sealed, DeltaError> {
    let base = usable_sealed_base(base);
    let mut signature = Vec::new();
    let mut records = Vec::new();
    let mut changed = 0u64;
    let z = compressor(out)?;
    let mut w = match base {
        Some(_) => SealedOut::Delta(DeltaWriter::new(z).map_err(DeltaError::Io)?),
        None => SealedOut::Whole(z),
    };
    let mut anywhere: Option<HashMap<u128, usize>> = None;
    let mut record = Vec::with_capacity(RECORD);
    let mut index = 0usize;
    for_each_chunk(r, |chunk| {
        for page in chunk.chunks(PAGE) {
            let fp = xxh3_128(page);
            let full = page.len() == PAGE;
            let mut found = None;
            if full {
                signature.push(fp);
                if let Some((pages, _)) = base {
                    if pages.get(index) == Some(&fp) {
                        found = Some(index);
                    } else {
                        changed += PAGE as u64;
                        let map = anywhere.get_or_insert_with(|| index_of(pages));
                        found = map.get(&fp).copied();
                    }
                } else {
                    changed += PAGE as u64;
                }
            } else {
                changed += page.len() as u64;
            }
            match (found, base, &mut w) {
                (Some(j), Some((_, base_records)), SealedOut::Delta(w)) => {
                    records.push(base_records[j]);
                    w.copy((j * RECORD) as u64, RECORD as u64)?;
                }
                (_, _, w) => {
                    record.clear();
                    sealer.seal(page, &mut record);
                    records.push(seal::record_fingerprint(&record));
                    match w {
                        SealedOut::Delta(w) => w.literal(&record)?,
                        SealedOut::Whole(z) => z.write_all(&record)?,
                    }
                }
            }
            index += 1;
        }
        Ok(())
    })
    .map_err(DeltaError::Io)?;
    let encoding = match w {
        SealedOut::Delta(w) => {
            w.finish()
                .and_then(|z| z.finish())
                .map_err(DeltaError::Io)?;
            Encoding::Delta
        }
        SealedOut::Whole(z) => {
            z.finish().map_err(DeltaError::Io)?;
            Encoding::Whole
        }
    };
    Ok(Sealed {
        encoded: Encoded {
            encoding,
            signature,
            changed,
        },
        records,
    })
}

/// [`stream_sealed`] into memory.
#[cfg(test)]
pub fn encode_sealed(
    r: impl Read,
    base: Option<(&[u128], &[u128])>,
    sealer: &Sealer,
) -> Result<SealedFile, DeltaError> {
    let mut wire = Vec::new();
    let s = stream_sealed(r, base, sealer, &mut wire)?;
    Ok(SealedFile {
        encoded: EncodedFile::of(s.encoded, wire),
        records: s.records,
    })
}

/// Encodes a file captured as changed pages (see `datadir::patch`), writing the bytes to
/// `out` as they are made: `stored` reads the changed full pages (indexes `pages`,
/// ascending) then `tail` trailing bytes; every other of the `total_pages` full pages is a
/// COPY of the base page at the same index.
pub fn stream_patch(
    mut stored: impl Read,
    (pages, total_pages, tail): (&[u64], u64, u64),
    signature: PageSignature,
    out: impl Write,
) -> Result<Encoded, DeltaError> {
    let mut w = DeltaWriter::new(compressor(out)?).map_err(DeltaError::Io)?;
    let mut next = pages.iter().peekable();
    let mut page = vec![0u8; PAGE];
    for index in 0..total_pages {
        if next.peek() == Some(&&index) {
            next.next();
            stored.read_exact(&mut page).map_err(DeltaError::Io)?;
            w.literal(&page).map_err(DeltaError::Io)?;
        } else {
            w.copy(index * PAGE as u64, PAGE as u64)
                .map_err(DeltaError::Io)?;
        }
    }
    let mut rest = Vec::new();
    stored
        .take(tail)
        .read_to_end(&mut rest)
        .map_err(DeltaError::Io)?;
    if rest.len() as u64 != tail {
        return Err(DeltaError::Apply(
            "patch file is shorter than recorded".into(),
        ));
    }
    w.literal(&rest).map_err(DeltaError::Io)?;
    w.finish()
        .and_then(|z| z.finish())
        .map_err(DeltaError::Io)?;
    Ok(Encoded {
        encoding: Encoding::Delta,
        signature,
        changed: pages.len() as u64 * PAGE as u64 + tail,
    })
}

/// [`stream_patch`] into memory.
#[cfg(test)]
pub fn encode_patch(
    stored: impl Read,
    pages: &[u64],
    total_pages: u64,
    tail: u64,
    signature: PageSignature,
) -> Result<EncodedFile, DeltaError> {
    let mut wire = Vec::new();
    let e = stream_patch(stored, (pages, total_pages, tail), signature, &mut wire)?;
    Ok(EncodedFile::of(e, wire))
}

/// Encodes `data` for the wire: a delta against `base` when given, else whole.
#[cfg(test)]
pub fn encode(data: &[u8], base: Option<&[u128]>) -> Result<EncodedFile, DeltaError> {
    encode_reader(data, base)
}

/// Applies a decoded file's wire bytes in memory with fast_rsync and writes the result to
/// `out`: the reference the shadow's streaming path (`apply`) is tested against.
#[cfg(test)]
pub fn decode_into(
    encoding: Encoding,
    wire: &[u8],
    base: Option<&[u8]>,
    size: u64,
    out: &mut impl std::io::Write,
) -> Result<(), DeltaError> {
    let limit = usize::try_from(size).map_err(|_| DeltaError::TooLarge { limit: size })?;
    match encoding {
        Encoding::Whole => {
            let data = zstd::bulk::decompress(wire, limit.max(1)).map_err(DeltaError::Zstd)?;
            out.write_all(&data).map_err(DeltaError::Zstd)
        }
        Encoding::Delta => {
            let base = base.ok_or_else(|| DeltaError::Apply("no base file".into()))?;
            // A delta is at most the new file plus per-command overhead.
            let delta_cap = limit + limit / 8 + 1024;
            let delta = zstd::bulk::decompress(wire, delta_cap).map_err(DeltaError::Zstd)?;
            fast_rsync::apply_limited(base, &delta, out, limit)
                .map_err(|e| DeltaError::Apply(e.to_string()))
        }
    }
}

/// Decodes wire bytes into the file in memory, which must be at most `size` bytes; `base`
/// is the base epoch's file for a delta (tests).
#[cfg(test)]
pub fn decode(
    encoding: Encoding,
    wire: &[u8],
    base: Option<&[u8]>,
    size: u64,
) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::new();
    decode_into(encoding, wire, base, size, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(n: usize, seed: u8) -> Vec<u8> {
        (0..n * PAGE)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed ^ (i / PAGE) as u8)
            })
            .collect()
    }

    #[test]
    fn delta_of_few_changed_pages_is_small_and_exact() {
        let old = pages(256, 1);
        let mut new = old.clone();
        for p in [3usize, 100, 200] {
            new[p * PAGE..(p + 1) * PAGE].fill(0xAB ^ p as u8);
        }
        let enc = encode(&new, Some(&signature(&old))).unwrap();
        assert_eq!(enc.encoding, Encoding::Delta);
        assert!(
            enc.wire.len() < 4 * PAGE,
            "delta of 3 pages took {} bytes",
            enc.wire.len()
        );
        assert_eq!(enc.changed, 3 * PAGE as u64);
        let got = decode(enc.encoding, &enc.wire, Some(&old), new.len() as u64).unwrap();
        assert_eq!(got, new);
        assert_eq!(enc.signature, signature(&new));
    }

    #[test]
    fn pages_shifted_by_an_inserted_page_are_copied_not_resent() {
        let old = pages(64, 7);
        let mut new = old[..10 * PAGE].to_vec();
        new.extend(std::iter::repeat_n(0x5A, PAGE));
        new.extend_from_slice(&old[10 * PAGE..]);
        new.extend_from_slice(&[1, 2, 3]); // a partial tail page
        let enc = encode(&new, Some(&signature(&old))).unwrap();
        assert!(enc.wire.len() < 2 * PAGE, "{} bytes", enc.wire.len());
        let got = decode(enc.encoding, &enc.wire, Some(&old), new.len() as u64).unwrap();
        assert_eq!(got, new);
    }

    fn sealer() -> Sealer {
        let key = understudy_common::seal::DataKey::from_bytes([7; 32]);
        Sealer::new(
            &key,
            &understudy_common::seal::Binding {
                workload: "w".into(),
                file: "pages-1.img".into(),
            },
        )
    }

    fn sealed_whole(s: &Sealer, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s.seal_stream(data, &mut out).unwrap();
        out
    }

    #[test]
    fn a_sealed_delta_rebuilds_the_sealed_file_and_seals_only_what_changed() {
        let s = sealer();
        let old = pages(64, 3);
        let first = encode_sealed(old.as_slice(), None, &s).unwrap();
        assert_eq!(first.encoded.encoding, Encoding::Whole);
        let old_sealed = sealed_whole(&s, &old);
        let whole = zstd::bulk::decompress(&first.encoded.wire, old_sealed.len()).unwrap();
        assert_eq!(whole, old_sealed);
        let fps: Vec<u128> = old_sealed
            .chunks(RECORD)
            .map(seal::record_fingerprint)
            .collect();
        assert_eq!(first.records, fps);

        let mut new = old.clone();
        new[7 * PAGE + 1] ^= 1; // changed in place
        new[20 * PAGE..21 * PAGE].copy_from_slice(&old[3 * PAGE..4 * PAGE]); // moved
        new.extend_from_slice(&[9, 9, 9]); // a tail
        let enc = encode_sealed(
            new.as_slice(),
            Some((&first.encoded.signature, &first.records)),
            &s,
        )
        .unwrap();
        assert_eq!(enc.encoded.encoding, Encoding::Delta);
        assert!(
            enc.encoded.wire.len() < 4 * RECORD,
            "{} wire bytes for two changed pages",
            enc.encoded.wire.len()
        );
        let new_sealed = sealed_whole(&s, &new);
        assert_eq!(
            apply_streamed(&old_sealed, &enc.encoded.wire, new_sealed.len() as u64).unwrap(),
            new_sealed
        );
        let fps: Vec<u128> = new_sealed
            .chunks(RECORD)
            .map(seal::record_fingerprint)
            .collect();
        assert_eq!(enc.records, fps);
        let marker = &new[10 * PAGE..10 * PAGE + 64];
        assert!(!enc.encoded.wire.windows(64).any(|w| w == marker));
    }

    #[test]
    fn whole_round_trip_and_cap_enforced() {
        let data = pages(8, 9);
        let enc = encode(&data, None).unwrap();
        assert_eq!(
            decode(enc.encoding, &enc.wire, None, data.len() as u64).unwrap(),
            data
        );
        assert!(
            decode(enc.encoding, &enc.wire, None, 100).is_err(),
            "cap not enforced"
        );
    }

    #[test]
    fn delta_against_the_wrong_base_does_not_reproduce_the_file() {
        let old = pages(16, 1);
        let mut new = old.clone();
        new[5] ^= 1;
        let enc = encode(&new, Some(&signature(&old))).unwrap();
        let other_base = pages(16, 2);
        if let Ok(out) = decode(enc.encoding, &enc.wire, Some(&other_base), new.len() as u64) {
            assert_ne!(out, new);
        }
    }

    /// Applies `wire` onto `base` in a temporary directory.
    fn apply_streamed(
        base: &[u8],
        wire: &[u8],
        size: u64,
    ) -> Result<Vec<u8>, understudy_common::delta_apply::ApplyError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base"), base).unwrap();
        let out = dir.path().join("out");
        understudy_common::delta_apply::apply_stream(&dir.path().join("base"), &out, wire, size)?;
        Ok(std::fs::read(&out).unwrap())
    }

    #[test]
    fn our_deltas_rebuild_the_file_changed_moved_shrunk_and_grown() {
        let old = pages(16, 1);
        let mut new = old.clone();
        new[5 * PAGE] ^= 1; // changed in place
        new[9 * PAGE..10 * PAGE].copy_from_slice(&old[2 * PAGE..3 * PAGE]); // moved page
        new.truncate(12 * PAGE + 10); // shrunk, with a tail
        let enc = encode(&new, Some(&signature(&old))).unwrap();
        assert_eq!(
            apply_streamed(&old, &enc.wire, new.len() as u64).unwrap(),
            new
        );

        let mut grown = old.clone();
        grown.extend_from_slice(&pages(3, 9));
        let enc = encode(&grown, Some(&signature(&old))).unwrap();
        assert_eq!(
            apply_streamed(&old, &enc.wire, grown.len() as u64).unwrap(),
            grown
        );
        assert!(matches!(
            apply_streamed(&old, &enc.wire, grown.len() as u64 - 1),
            Err(understudy_common::delta_apply::ApplyError::TooLarge { .. })
        ));
    }

    /// A writer that records the largest single write it was handed.
    #[derive(Default)]
    struct Largest {
        bytes: Vec<u8>,
        largest: usize,
    }

    impl Write for Largest {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.largest = self.largest.max(b.len());
            self.bytes.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_long_run_of_changed_pages_streams_in_bounded_literals_and_rebuilds_the_file() {
        // 3 MiB of changed pages in one run, between unchanged ones.
        let old = pages(1000, 1);
        let mut new = old.clone();
        let fresh = pages(768, 77);
        new[100 * PAGE..868 * PAGE].copy_from_slice(&fresh);
        let mut raw = Largest::default();
        // The raw delta (before zstd), to see how it was cut.
        let mut w = DeltaWriter::new(&mut raw).unwrap();
        let base = signature(&old);
        for (i, page) in new.chunks_exact(PAGE).enumerate() {
            if base[i] == xxh3_128(page) {
                w.copy((i * PAGE) as u64, PAGE as u64).unwrap();
            } else {
                w.literal(page).unwrap();
            }
        }
        w.finish().unwrap();
        assert!(
            raw.largest <= LITERAL_RUN,
            "one write of {} bytes",
            raw.largest
        );
        let overhead = raw.bytes.len() - 768 * PAGE;
        assert!(overhead < 128, "{overhead} bytes of commands");

        let mut wire = Largest::default();
        let e = stream_reader(&new[..], Some(&base), &mut wire).unwrap();
        assert_eq!(e.changed, 768 * PAGE as u64);
        assert_eq!(
            apply_streamed(&old, &wire.bytes, new.len() as u64).unwrap(),
            new
        );
        assert_eq!(
            decode(Encoding::Delta, &wire.bytes, Some(&old), new.len() as u64).unwrap(),
            new
        );
    }
}
