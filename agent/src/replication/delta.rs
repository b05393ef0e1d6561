//! Turning an epoch file into wire bytes and back: zstd of the whole file, or zstd of a
//! fast_rsync delta against the signature of the same file in the base epoch.
//!
//! Decoding is capped by the size the manifest announces, so a hostile or broken stream
//! cannot make the shadow allocate more than the file it expects.

use fast_rsync::{apply_limited, diff, Signature, SignatureOptions};
use understudy_common::transfer::Encoding;

/// Signature granularity: one memory page, the unit CRIU's page images change in.
pub const BLOCK: usize = 4096;
const SIG_OPTIONS: SignatureOptions = SignatureOptions {
    block_size: BLOCK as u32,
    crypto_hash_size: 8,
};
/// zstd level: fast; page images compress well even at low levels.
const ZSTD_LEVEL: i32 = 1;

/// Why a file could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
    /// The stored signature is unusable.
    #[error("base signature is corrupt")]
    Signature,
    /// fast_rsync could not compute the delta.
    #[error("delta: {0}")]
    Diff(String),
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

/// The signature of `data`, kept by the primary as the base of the next delta.
pub fn signature(data: &[u8]) -> Vec<u8> {
    Signature::calculate(data, SIG_OPTIONS).into_serialized()
}

/// Encodes `data` for the wire: a delta against `base_sig` when given, else whole.
pub fn encode(data: &[u8], base_sig: Option<&[u8]>) -> Result<(Encoding, Vec<u8>), DeltaError> {
    let (encoding, raw) = match base_sig {
        Some(sig) => {
            let sig = Signature::deserialize(sig.to_vec()).map_err(|_| DeltaError::Signature)?;
            let mut delta = Vec::new();
            diff(&sig.index(), data, &mut delta).map_err(|e| DeltaError::Diff(e.to_string()))?;
            (Encoding::Delta, delta)
        }
        None => (Encoding::Whole, data.to_vec()),
    };
    let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(DeltaError::Zstd)?;
    Ok((encoding, compressed))
}

/// Decodes wire bytes into the file, which must be at most `size` bytes; `base` is the
/// base epoch's file for a delta.
pub fn decode(
    encoding: Encoding,
    wire: &[u8],
    base: Option<&[u8]>,
    size: u64,
) -> Result<Vec<u8>, DeltaError> {
    let limit = usize::try_from(size).map_err(|_| DeltaError::TooLarge { limit: size })?;
    match encoding {
        Encoding::Whole => {
            let out = zstd::bulk::decompress(wire, limit.max(1)).map_err(DeltaError::Zstd)?;
            Ok(out)
        }
        Encoding::Delta => {
            let base = base.ok_or_else(|| DeltaError::Apply("no base file".into()))?;
            // A delta is at most the new file plus small per-op overhead.
            let delta_cap = limit + limit / 8 + 1024;
            let delta = zstd::bulk::decompress(wire, delta_cap).map_err(DeltaError::Zstd)?;
            let mut out = Vec::with_capacity(limit);
            apply_limited(base, &delta, &mut out, limit)
                .map_err(|e| DeltaError::Apply(e.to_string()))?;
            Ok(out)
        }
    }
}

/// Bytes of `new` that differ from `old`, counted in whole blocks (a grown or shrunk
/// tail counts as changed).
pub fn changed_bytes(old: &[u8], new: &[u8]) -> u64 {
    let common = old.len().min(new.len());
    let mut changed = 0u64;
    let mut off = 0;
    while off < common {
        let end = (off + BLOCK).min(common);
        if old[off..end] != new[off..end] {
            changed += (end - off) as u64;
        }
        off = end;
    }
    changed + (new.len().saturating_sub(common)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(n: usize, seed: u8) -> Vec<u8> {
        (0..n * BLOCK)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed ^ (i / BLOCK) as u8)
            })
            .collect()
    }

    #[test]
    fn delta_of_few_changed_pages_is_small_and_exact() {
        let old = pages(256, 1);
        let mut new = old.clone();
        for p in [3usize, 100, 200] {
            new[p * BLOCK..(p + 1) * BLOCK].fill(0xAB ^ p as u8);
        }
        let (enc, wire) = encode(&new, Some(&signature(&old))).unwrap();
        assert_eq!(enc, Encoding::Delta);
        assert!(
            wire.len() < 4 * BLOCK,
            "delta of 3 pages took {} bytes",
            wire.len()
        );
        let got = decode(enc, &wire, Some(&old), new.len() as u64).unwrap();
        assert_eq!(got, new);
        assert_eq!(changed_bytes(&old, &new), 3 * BLOCK as u64);
    }

    #[test]
    fn whole_round_trip_and_cap_enforced() {
        let data = pages(8, 9);
        let (enc, wire) = encode(&data, None).unwrap();
        assert_eq!(decode(enc, &wire, None, data.len() as u64).unwrap(), data);
        assert!(decode(enc, &wire, None, 100).is_err(), "cap not enforced");
    }

    #[test]
    fn delta_against_the_wrong_base_does_not_reproduce_the_file() {
        let old = pages(16, 1);
        let mut new = old.clone();
        new[5] ^= 1;
        let (enc, wire) = encode(&new, Some(&signature(&old))).unwrap();
        let other_base = pages(16, 2);
        match decode(enc, &wire, Some(&other_base), new.len() as u64) {
            Ok(out) => assert_ne!(out, new),
            Err(_) => {}
        }
    }
}
