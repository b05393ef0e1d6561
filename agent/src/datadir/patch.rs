//! Capturing a changed file as the pages that differ from the shadow's copy.
//!
//! While the tree is frozen, a file whose previous content the shadow holds is read once:
//! each 4 KiB page's fingerprint is compared with the page signature of that content, and
//! only differing pages (and a trailing partial page) are written to the epoch directory.
//! The same pass computes the file's BLAKE3 hash and its new signature, so nothing needs
//! to be read again after the thaw. A random rewrite of 1 % of a large file thus costs one
//! read of the file from the page cache, not a copy of it.

use std::io::Write;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_128;

use crate::replication::delta::{PageSignature, PAGE};

/// Files smaller than this are copied whole (the saving would not pay for the pass).
pub const PATCH_MIN_BYTES: u64 = 256 * 1024;

/// A file captured as differing pages.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The file's size.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub blake3: [u8; 32],
    /// Fingerprints of its full pages: the base of the next delta.
    pub signature: PageSignature,
    /// Indexes of the full pages stored in the patch file, in order.
    pub pages: Vec<u64>,
    /// Bytes after the last full page, stored after them.
    pub tail: u64,
}

impl Patch {
    /// Bytes the patch file holds.
    pub fn stored_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE as u64 + self.tail
    }
}

/// Reads `src` and writes the pages differing from `base` to `dst`.
pub fn capture(src: &Path, dst: &Path, base: &[u128]) -> std::io::Result<Patch> {
    let mut input = std::fs::File::open(src)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dst)?);
    let mut hasher = blake3::Hasher::new();
    let mut signature = Vec::new();
    let mut pages = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * PAGE];
    let mut tail = 0u64;
    loop {
        let filled = understudy_common::io::read_full(&mut input, &mut buf)?;
        let chunk = &buf[..filled];
        hasher.update(chunk);
        size += filled as u64;
        let full = filled - filled % PAGE;
        for page in chunk[..full].chunks_exact(PAGE) {
            let index = signature.len();
            let fp = xxh3_128(page);
            signature.push(fp);
            if base.get(index) != Some(&fp) {
                pages.push(index as u64);
                out.write_all(page)?;
            }
        }
        if full < filled {
            tail = (filled - full) as u64;
            out.write_all(&chunk[full..])?;
        }
        if filled < buf.len() {
            break;
        }
    }
    out.flush()?;
    Ok(Patch {
        size,
        blake3: *hasher.finalize().as_bytes(),
        signature,
        pages,
        tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::delta;

    #[test]
    fn only_changed_pages_and_the_tail_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..10 * PAGE).map(|i| (i / PAGE) as u8).collect();
        let sig = delta::signature(&old);
        let mut new = old.clone();
        new[3 * PAGE + 7] ^= 1;
        new.extend_from_slice(&[9u8; 100]);
        std::fs::write(dir.path().join("f"), &new).unwrap();
        let p = capture(&dir.path().join("f"), &dir.path().join("p"), &sig).unwrap();
        assert_eq!(p.pages, [3]);
        assert_eq!(p.tail, 100);
        assert_eq!(p.size, new.len() as u64);
        assert_eq!(p.blake3, *blake3::hash(&new).as_bytes());
        assert_eq!(p.signature, delta::signature(&new));
        let stored = std::fs::read(dir.path().join("p")).unwrap();
        assert_eq!(stored.len() as u64, p.stored_bytes());
        assert_eq!(&stored[..PAGE], &new[3 * PAGE..4 * PAGE]);
        // The shadow rebuilds the new file from its copy of the old one and the patch.
        let enc = delta::encode_patch(
            &stored[..],
            &p.pages,
            p.signature.len() as u64,
            p.tail,
            p.signature.clone(),
        )
        .unwrap();
        assert_eq!(enc.changed, p.stored_bytes());
        let mut rebuilt = Vec::new();
        delta::decode_into(enc.encoding, &enc.wire, Some(&old), p.size, &mut rebuilt).unwrap();
        assert_eq!(rebuilt, new);
    }
}
