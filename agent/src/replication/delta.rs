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
use std::io::Read;

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

/// What encoding one file produced.
#[derive(Debug)]
pub struct EncodedFile {
    /// Whole or delta.
    pub encoding: Encoding,
    /// The bytes to send.
    pub wire: Vec<u8>,
    /// The file's page signature, the base of the next delta.
    pub signature: PageSignature,
    /// Bytes of the file not found at the same place in the base (all of it without one).
    pub changed: u64,
}

/// The page signature of `data`.
pub fn signature(data: &[u8]) -> PageSignature {
    data.chunks_exact(PAGE).map(xxh3_128).collect()
}

#[derive(Debug, Default)]
struct DeltaWriter {
    out: Vec<u8>,
    copy: Option<(u64, u64)>,
    literal: Vec<u8>,
}

impl DeltaWriter {
    fn new() -> Self {
        let mut w = DeltaWriter::default();
        w.out.extend_from_slice(&DELTA_MAGIC.to_be_bytes());
        w
    }

    fn copy(&mut self, offset: u64, len: u64) {
        self.flush_literal();
        match &mut self.copy {
            Some((o, l)) if *o + *l == offset => *l += len,
            _ => {
                self.flush_copy();
                self.copy = Some((offset, len));
            }
        }
    }

    fn literal(&mut self, bytes: &[u8]) {
        self.flush_copy();
        self.literal.extend_from_slice(bytes);
    }

    fn flush_copy(&mut self) {
        if let Some((offset, len)) = self.copy.take() {
            self.out.push(OP_COPY_N8_N8);
            self.out.extend_from_slice(&offset.to_be_bytes());
            self.out.extend_from_slice(&len.to_be_bytes());
        }
    }

    fn flush_literal(&mut self) {
        if !self.literal.is_empty() {
            self.out.push(OP_LITERAL_N8);
            self.out
                .extend_from_slice(&(self.literal.len() as u64).to_be_bytes());
            self.out.append(&mut self.literal);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.flush_copy();
        self.flush_literal();
        self.out.push(OP_END);
        self.out
    }
}

/// Bytes read per step while encoding: files are streamed, never held whole.
const READ_CHUNK: usize = 256 * PAGE;

/// Reads `r` to its end in chunks of whole pages, calling `f` on each.
fn for_each_chunk(mut r: impl Read, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let filled = understudy_common::io::read_full(&mut r, &mut buf)?;
        if filled == 0 {
            return Ok(());
        }
        f(&buf[..filled]);
        if filled < buf.len() {
            return Ok(());
        }
    }
}

/// Encodes the file read from `r` for the wire: a delta against `base` when given, else
/// whole.
pub fn encode_reader(r: impl Read, base: Option<&[u128]>) -> Result<EncodedFile, DeltaError> {
    let mut signature = Vec::new();
    let mut changed = 0u64;
    let (encoding, raw) = match base {
        None => {
            let mut whole = Vec::new();
            for_each_chunk(r, |chunk| {
                signature.extend(chunk.chunks_exact(PAGE).map(xxh3_128));
                whole.extend_from_slice(chunk);
            })
            .map_err(DeltaError::Zstd)?;
            changed = whole.len() as u64;
            (Encoding::Whole, whole)
        }
        Some(base) => {
            let mut w = DeltaWriter::new();
            let mut anywhere: Option<HashMap<u128, usize>> = None;
            let mut index = 0usize;
            for_each_chunk(r, |chunk| {
                let full = chunk.len() - chunk.len() % PAGE;
                for page in chunk[..full].chunks_exact(PAGE) {
                    let fp = xxh3_128(page);
                    signature.push(fp);
                    if base.get(index) == Some(&fp) {
                        w.copy((index * PAGE) as u64, PAGE as u64);
                    } else {
                        changed += PAGE as u64;
                        let map = anywhere.get_or_insert_with(|| {
                            let mut m = HashMap::with_capacity(base.len());
                            for (j, f) in base.iter().enumerate() {
                                m.entry(*f).or_insert(j);
                            }
                            m
                        });
                        match map.get(&fp) {
                            Some(&j) => w.copy((j * PAGE) as u64, PAGE as u64),
                            None => w.literal(page),
                        }
                    }
                    index += 1;
                }
                if full < chunk.len() {
                    changed += (chunk.len() - full) as u64;
                    w.literal(&chunk[full..]);
                }
            })
            .map_err(DeltaError::Zstd)?;
            (Encoding::Delta, w.finish())
        }
    };
    let wire = zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(DeltaError::Zstd)?;
    Ok(EncodedFile {
        encoding,
        wire,
        signature,
        changed,
    })
}

/// What sealing a file produced besides its wire bytes.
#[derive(Debug)]
pub struct SealedFile {
    /// The wire bytes, the plaintext page signature and the bytes changed.
    pub encoded: EncodedFile,
    /// The fingerprint of every record, in order: the base of the next delta with the
    /// page signature, and the sealed file's digest.
    pub records: Vec<u128>,
}

/// Encodes the file read from `r` sealed by `sealer`: a delta in record coordinates against
/// `base` (the base file's page signature and record fingerprints) when given, else whole.
pub fn encode_sealed(
    r: impl Read,
    base: Option<(&[u128], &[u128])>,
    sealer: &Sealer,
) -> Result<SealedFile, DeltaError> {
    // A base without a record for each of its pages cannot be copied from.
    let base = base.filter(|(pages, records)| records.len() >= pages.len());
    let mut signature = Vec::new();
    let mut records = Vec::new();
    let mut changed = 0u64;
    let mut w = DeltaWriter::new();
    let mut whole = Vec::new();
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
                        let map = anywhere.get_or_insert_with(|| {
                            let mut m = HashMap::with_capacity(pages.len());
                            for (j, f) in pages.iter().enumerate() {
                                m.entry(*f).or_insert(j);
                            }
                            m
                        });
                        found = map.get(&fp).copied();
                    }
                } else {
                    changed += PAGE as u64;
                }
            } else {
                changed += page.len() as u64;
            }
            match (found, base) {
                (Some(j), Some((_, base_records))) => {
                    records.push(base_records[j]);
                    w.copy((j * RECORD) as u64, RECORD as u64);
                }
                _ => {
                    record.clear();
                    sealer.seal(page, &mut record);
                    records.push(seal::record_fingerprint(&record));
                    if base.is_some() {
                        w.literal(&record);
                    } else {
                        whole.extend_from_slice(&record);
                    }
                }
            }
            index += 1;
        }
    })
    .map_err(DeltaError::Zstd)?;
    let (encoding, raw) = match base {
        Some(_) => (Encoding::Delta, w.finish()),
        None => (Encoding::Whole, whole),
    };
    let wire = zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(DeltaError::Zstd)?;
    Ok(SealedFile {
        encoded: EncodedFile {
            encoding,
            wire,
            signature,
            changed,
        },
        records,
    })
}

/// Encodes a file captured as changed pages (see `datadir::patch`): `stored` reads the
/// changed full pages (indexes `pages`, ascending) then `tail` trailing bytes; every other
/// of the `total_pages` full pages is a COPY of the base page at the same index.
pub fn encode_patch(
    mut stored: impl Read,
    pages: &[u64],
    total_pages: u64,
    tail: u64,
    signature: PageSignature,
) -> Result<EncodedFile, DeltaError> {
    let mut w = DeltaWriter::new();
    let mut next = pages.iter().peekable();
    let mut page = vec![0u8; PAGE];
    for index in 0..total_pages {
        if next.peek() == Some(&&index) {
            next.next();
            stored.read_exact(&mut page).map_err(DeltaError::Zstd)?;
            w.literal(&page);
        } else {
            w.copy(index * PAGE as u64, PAGE as u64);
        }
    }
    let mut rest = Vec::new();
    stored
        .take(tail)
        .read_to_end(&mut rest)
        .map_err(DeltaError::Zstd)?;
    if rest.len() as u64 != tail {
        return Err(DeltaError::Apply(
            "patch file is shorter than recorded".into(),
        ));
    }
    w.literal(&rest);
    let wire = zstd::bulk::compress(&w.finish(), ZSTD_LEVEL).map_err(DeltaError::Zstd)?;
    Ok(EncodedFile {
        encoding: Encoding::Delta,
        wire,
        signature,
        changed: pages.len() as u64 * PAGE as u64 + tail,
    })
}

/// Encodes `data` for the wire: a delta against `base` when given, else whole.
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
}
