//! Applying a delta as it arrives: the shadow builds a file from its copy of the base
//! epoch's file and a delta read from the stream a command at a time, so that memory stays
//! a few buffers whatever the file's size or however far the delta decompresses.
//!
//! A file sent whole is zstd of its bytes, decoded the same way ([`decode_whole`]).
//!
//! A delta is zstd of librsync's delta format: a magic number, then commands until END.
//! LITERAL carries new bytes (length inline in the command for 1–64 bytes, else in 1, 2, 4
//! or 8 following bytes); COPY takes a range of the base (offset and length each in 1, 2,
//! 4 or 8 bytes, big-endian). This module's primary writes only LITERAL with 8-byte lengths
//! and COPY with 8-byte offsets and lengths; the others are taken too, so any delta in the
//! format (fast_rsync's included) applies. The format is the data plane's, so it lives
//! here with the wire protocol; the primary's encoder is the agent's.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// librsync delta magic.
pub const DELTA_MAGIC: u32 = 0x7273_0236;
/// END: the delta is complete.
pub const OP_END: u8 = 0x00;
/// Commands 0x01..=0x40 are literals of that many bytes.
const OP_LITERAL_INLINE_MAX: u8 = 0x40;
/// LITERAL with a 1, 2, 4 or 8-byte length (to [`OP_LITERAL_N8`]).
const OP_LITERAL_N1: u8 = 0x41;
/// LITERAL with an 8-byte big-endian length.
pub const OP_LITERAL_N8: u8 = 0x44;
/// COPY with offset and length widths (1, 2, 4, 8) × (1, 2, 4, 8), to [`OP_COPY_N8_N8`].
const OP_COPY_N1_N1: u8 = 0x45;
/// COPY with 8-byte big-endian offset and length.
pub const OP_COPY_N8_N8: u8 = 0x54;

/// Why a delta was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Reading the base, decompressing the delta or writing the new file failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The delta is not well formed, or does not fit its base.
    #[error("{0}")]
    Malformed(String),
    /// The new file would be larger than announced.
    #[error("the delta builds more than the announced {limit} bytes")]
    TooLarge {
        /// The announced size.
        limit: u64,
    },
}
/// Decodes a file sent whole (zstd) as it is read from `input` into `out`, a piece at a
/// time: memory stays flat however large the file or however far the data expands. More
/// than `size` decoded bytes is refused.
pub fn decode_whole(input: impl Read, out: &mut impl Write, size: u64) -> Result<(), ApplyError> {
    let mut dec = zstd::stream::read::Decoder::new(input).map_err(ApplyError::Io)?;
    let n =
        std::io::copy(&mut (&mut dec).take(size.saturating_add(1)), out).map_err(ApplyError::Io)?;
    if n > size {
        return Err(ApplyError::TooLarge { limit: size });
    }
    Ok(())
}

/// Largest piece copied or written at once.
const PIECE: usize = 1 << 20;
const WIDTHS: [usize; 4] = [1, 2, 4, 8];

/// Builds the file at `out`, at most `size` bytes, from a copy of `base` and the delta read
/// from `input` (zstd): only ranges that differ from the base at the same offset are
/// written. A delta that is cut short, malformed, copies from beyond the base, has bytes
/// after its end or builds more than `size` bytes is refused; `out` is then incomplete and
/// the caller discards it.
pub fn apply_stream(
    base: &Path,
    out: &Path,
    input: impl Read,
    size: u64,
) -> Result<(), ApplyError> {
    let io = ApplyError::Io;
    let mut delta = BufReader::new(zstd::stream::read::Decoder::new(input).map_err(io)?);
    let mut magic = [0u8; 4];
    read_delta(&mut delta, &mut magic)?;
    if u32::from_be_bytes(magic) != DELTA_MAGIC {
        return Err(ApplyError::Malformed(format!(
            "not a delta: it starts with {magic:02x?}"
        )));
    }
    let base_len = std::fs::metadata(base).map_err(io)?.len();
    std::fs::copy(base, out).map_err(io)?;
    let base_file = std::fs::File::open(base).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(io)?;
    let mut buf = Vec::new();
    let mut pos = 0u64;
    loop {
        let mut op = [0u8; 1];
        read_delta(&mut delta, &mut op)?;
        let op = op[0];
        let grow = |len: u64| match pos.checked_add(len) {
            Some(end) if end <= size => Ok(end),
            _ => Err(ApplyError::TooLarge { limit: size }),
        };
        match op {
            OP_END => {
                if delta.read(&mut [0u8; 1]).map_err(io)? != 0 {
                    return Err(ApplyError::Malformed("bytes after the delta's end".into()));
                }
                file.set_len(pos).map_err(io)?;
                return Ok(());
            }
            1..=OP_LITERAL_INLINE_MAX | OP_LITERAL_N1..=OP_LITERAL_N8 => {
                let len = if op <= OP_LITERAL_INLINE_MAX {
                    u64::from(op)
                } else {
                    read_int(&mut delta, WIDTHS[usize::from(op - OP_LITERAL_N1)])?
                };
                let end = grow(len)?;
                while pos < end {
                    let n = piece(&mut buf, end - pos);
                    read_delta(&mut delta, &mut buf[..n])?;
                    file.write_all_at(&buf[..n], pos).map_err(io)?;
                    pos += n as u64;
                }
            }
            OP_COPY_N1_N1..=OP_COPY_N8_N8 => {
                let k = usize::from(op - OP_COPY_N1_N1);
                let offset = read_int(&mut delta, WIDTHS[k / 4])?;
                let len = read_int(&mut delta, WIDTHS[k % 4])?;
                if offset.checked_add(len).is_none_or(|e| e > base_len) {
                    return Err(ApplyError::Malformed(format!(
                        "COPY of {len} bytes at {offset} beyond the end of the {base_len}-byte base"
                    )));
                }
                let end = grow(len)?;
                // The copy of the base already holds the range at its own offset.
                if offset == pos {
                    pos = end;
                    continue;
                }
                let mut from = offset;
                while pos < end {
                    let n = piece(&mut buf, end - pos);
                    base_file.read_exact_at(&mut buf[..n], from).map_err(io)?;
                    file.write_all_at(&buf[..n], pos).map_err(io)?;
                    pos += n as u64;
                    from += n as u64;
                }
            }
            other => {
                return Err(ApplyError::Malformed(format!(
                    "unknown delta command 0x{other:02x}"
                )))
            }
        }
    }
}

/// Grows `buf` to the next piece of at most `left` bytes; returns its length.
fn piece(buf: &mut Vec<u8>, left: u64) -> usize {
    let n = usize::try_from(left).unwrap_or(PIECE).min(PIECE);
    if buf.len() < n {
        buf.resize(n, 0);
    }
    n
}

fn read_delta(delta: &mut impl Read, into: &mut [u8]) -> Result<(), ApplyError> {
    delta.read_exact(into).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => ApplyError::Malformed("the delta is cut short".into()),
        _ => ApplyError::Io(e),
    })
}

/// A big-endian unsigned integer of `width` bytes.
fn read_int(delta: &mut impl Read, width: usize) -> Result<u64, ApplyError> {
    let mut b = [0u8; 8];
    read_delta(delta, &mut b[8 - width..])?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    fn pages(n: usize, seed: u8) -> Vec<u8> {
        (0..n * PAGE)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed ^ (i / PAGE) as u8)
            })
            .collect()
    }

    /// Applies `wire` onto `base` in a temporary directory.
    fn apply(base: &[u8], wire: &[u8], size: u64) -> Result<Vec<u8>, ApplyError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base"), base).unwrap();
        let out = dir.path().join("out");
        apply_stream(&dir.path().join("base"), &out, wire, size)?;
        Ok(std::fs::read(&out).unwrap())
    }

    fn zstd(raw: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(raw, 1).unwrap()
    }

    #[test]
    fn every_command_width_applies() {
        let old = pages(2, 1);
        let mut raw = DELTA_MAGIC.to_be_bytes().to_vec();
        raw.extend_from_slice(&[0x02, b'h', b'i']); // inline literal
        raw.extend_from_slice(&[OP_LITERAL_N1 + 1, 0, 3, b'a', b'b', b'c']); // 2-byte length
        raw.extend_from_slice(&[OP_COPY_N1_N1, 10, 5]); // 1-byte offset and length
        raw.extend_from_slice(&[OP_COPY_N1_N1 + 4 * 3 + 1, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 4]); // 8 and 2
        raw.push(OP_END);
        let mut want = b"hiabc".to_vec();
        want.extend_from_slice(&old[10..15]);
        want.extend_from_slice(&old[PAGE..PAGE + 4]);
        assert_eq!(apply(&old, &zstd(&raw), 100).unwrap(), want);
    }

    #[test]
    fn malformed_deltas_are_refused_naming_what_is_wrong() {
        let old = pages(2, 3);
        let magic = DELTA_MAGIC.to_be_bytes();
        let with = |body: &[u8]| [&magic[..], body].concat();
        let copy = |offset: u64, len: u64| {
            [
                &[OP_COPY_N8_N8][..],
                &offset.to_be_bytes(),
                &len.to_be_bytes(),
            ]
            .concat()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not a delta".to_vec(), "not a delta"),
            (with(&[0x03, b'a']), "cut short"),
            (with(&[0x03, b'a', b'b', b'c']), "cut short"),
            (
                with(&[0x03, b'a', b'b', b'c', OP_END, 0x01]),
                "after the delta's end",
            ),
            (with(&[0x7f]), "unknown delta command 0x7f"),
            (
                with(&[&copy(PAGE as u64, 2 * PAGE as u64)[..], &[OP_END]].concat()),
                "beyond the end",
            ),
            (
                with(&[&copy(u64::MAX, 2)[..], &[OP_END]].concat()),
                "beyond the end",
            ),
            (
                with(&[&[OP_LITERAL_N8][..], &u64::MAX.to_be_bytes()].concat()),
                "more than the announced",
            ),
        ];
        for (raw, want) in cases {
            let err = apply(&old, &zstd(&raw), 4 * PAGE as u64)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} does not say {want:?}");
        }
        // Not zstd at all.
        assert!(apply(&old, b"plain bytes", 100).is_err());
    }

    #[test]
    fn a_huge_literal_is_written_a_piece_at_a_time() {
        // 64 MiB of new bytes in one command, a few KiB compressed; the buffer used is a
        // piece, whatever the command announces.
        let len = 64usize << 20;
        let mut raw = DELTA_MAGIC.to_be_bytes().to_vec();
        raw.push(OP_LITERAL_N8);
        raw.extend_from_slice(&(len as u64).to_be_bytes());
        raw.resize(raw.len() + len, 0x5a);
        raw.push(OP_END);
        let out = apply(&pages(1, 0), &zstd(&raw), len as u64).unwrap();
        assert_eq!(out.len(), len);
        assert!(out.iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn a_whole_file_decodes_as_in_one_piece_and_is_capped() {
        let data = pages(40, 3);
        let wire = zstd(&data);
        // Fed in small reads, as pieces arrive from the network.
        let reader = std::io::BufReader::with_capacity(7, wire.as_slice());
        let mut out = Vec::new();
        decode_whole(reader, &mut out, data.len() as u64).unwrap();
        assert_eq!(out, data);
        // Data that expands past the announced size is refused.
        let mut out = Vec::new();
        let err = decode_whole(wire.as_slice(), &mut out, 1000).unwrap_err();
        assert!(matches!(err, ApplyError::TooLarge { limit: 1000 }), "{err}");
        assert!(out.len() <= 1001);
    }

    #[test]
    fn fast_rsync_deltas_with_every_command_width_apply_as_fast_rsync_applies_them() {
        // Byte-granular deltas of unaligned edits use short literals and narrow copies.
        for (n, seed) in [(3usize, 2u8), (40, 7), (300, 11)] {
            let old = pages(n, seed);
            let mut new = old.clone();
            new.drain(100..(n * PAGE / 3));
            new.splice(7..7, b"inserted bytes".iter().copied());
            new.extend_from_slice(&pages(1, seed + 1)[..1000]);
            let sig = fast_rsync::Signature::calculate(
                &old,
                fast_rsync::SignatureOptions {
                    block_size: 64,
                    crypto_hash_size: 8,
                },
            );
            let mut raw = Vec::new();
            fast_rsync::diff(&sig.index(), &new, &mut raw).unwrap();
            let mut reference = Vec::new();
            fast_rsync::apply(&old, &raw, &mut reference).unwrap();
            assert_eq!(reference, new);
            assert_eq!(apply(&old, &zstd(&raw), new.len() as u64).unwrap(), new);
        }
    }
}
