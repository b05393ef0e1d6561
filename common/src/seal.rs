//! Sealing epoch files page by page: checkpoints encrypted at rest.
//!
//! A memory image is cut into 4 KiB pages (the last may be shorter) and each page is sealed
//! on its own with AES-256-GCM (ring; hardware AES where the CPU has it) under a key derived from the workload's data
//! key. The nonce is synthetic: a keyed BLAKE3 hash of the page and of what the record is
//! bound to (workload, file name), so the same page of the same file seals to the same
//! record. That is what lets the shadow keep applying deltas without the key: an unchanged
//! page is an unchanged record, a COPY of the base's; a changed page is a LITERAL of a
//! freshly sealed record. What it gives away is which pages are equal, which the deltas
//! already tell the shadow. A record is `nonce (12) ‖ ciphertext ‖ tag (16)`, with the
//! binding as associated data, so a record moved to another file or workload does not open.
//!
//! A sealed file's *digest* is the BLAKE3 hash of its records' xxh3-128 fingerprints in
//! order: the primary knows it without sealing the pages it copies (their fingerprints are
//! in the base's signature) and the shadow checks it without the key. The epoch's manifest
//! carries a [`tag`]: a MAC under the data key over the whole manifest (workload,
//! generation, epoch, every file's name, size and digest), so each file is bound to its
//! epoch and name, and no record can be dropped, moved or replayed from another epoch
//! without the restoring agent refusing it.

use std::io::{Read, Write};

use crate::io::read_full;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// Plaintext bytes per record.
pub const PAGE: usize = 4096;
/// Bytes a record adds to its page: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;
/// Bytes of a record of a full page.
pub const RECORD: usize = PAGE + OVERHEAD;

const ENC_CONTEXT: &str = "understudy 2026-12 epoch page sealing key";
const NONCE_CONTEXT: &str = "understudy 2026-12 epoch page synthetic nonce";
const TAG_CONTEXT: &str = "understudy 2026-12 epoch manifest tag";

/// Bytes of the sealed form of a file of `plain` bytes.
pub fn sealed_size(plain: u64) -> u64 {
    let full = plain / PAGE as u64;
    let tail = plain % PAGE as u64;
    full * RECORD as u64 + if tail > 0 { tail + OVERHEAD as u64 } else { 0 }
}

/// The fingerprint of one record, as a sealed file's digest takes it.
pub fn record_fingerprint(record: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(record)
}

/// A sealed file's digest, from its records' fingerprints in order.
pub fn digest(fingerprints: &[u128]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for f in fingerprints {
        h.update(&f.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// The size and digest of the sealed file read from `input` (the shadow's check, which
/// needs no key).
pub fn digest_reader(mut input: impl Read) -> std::io::Result<(u64, [u8; 32])> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * RECORD];
    let mut size = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        for record in buf[..n].chunks(RECORD) {
            h.update(&record_fingerprint(record).to_le_bytes());
        }
        size += n as u64;
        if n < buf.len() {
            return Ok((size, *h.finalize().as_bytes()));
        }
    }
}

/// The MAC of an epoch's manifest (its encoding with the tag left out) under `key`.
pub fn tag(key: &DataKey, manifest_bytes: &[u8]) -> [u8; 32] {
    let k = blake3::derive_key(TAG_CONTEXT, &key.0);
    *blake3::keyed_hash(&k, manifest_bytes).as_bytes()
}

/// Whether `tag` is the MAC of `manifest_bytes` under `key` (compared in constant time).
pub fn tag_matches(key: &DataKey, manifest_bytes: &[u8], tag_given: &[u8; 32]) -> bool {
    let k = blake3::derive_key(TAG_CONTEXT, &key.0);
    blake3::keyed_hash(&k, manifest_bytes) == blake3::Hash::from_bytes(*tag_given)
}

/// Why a record or a file did not seal or open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A record did not open: another key or binding, or altered.
    #[error("record {index} does not open: altered, or sealed for another file or key")]
    Refused {
        /// Its index in the file.
        index: u64,
    },
    /// The sealed file ends inside a record's header.
    #[error("record {index} is cut short ({len} bytes)")]
    Truncated {
        /// Its index.
        index: u64,
        /// Its length.
        len: usize,
    },
}

/// A workload's data key: 32 random bytes, wiped when dropped.
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut k = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)?;
        Ok(DataKey(k))
    }

    /// The key from its bytes (as carried in an order).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(bytes)
    }

    /// The key's bytes (to put in an order).
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the wipe from being optimised away as a dead store.
        std::hint::black_box(&self.0);
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// A data key as it travels in an order or a lease, or sits in the coordinator's store
/// (never printed).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyBytes(pub [u8; 32]);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(…)")
    }
}

impl KeyBytes {
    /// A fresh random key.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut k = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)?;
        Ok(KeyBytes(k))
    }
}

/// What every record of one file is bound to (generation and epoch are bound by the
/// manifest's [`tag`]: an unchanged page keeps its record across them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The workload.
    pub workload: String,
    /// The file's name in the epoch.
    pub file: String,
}

impl Binding {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.workload.len() + self.file.len() + 16);
        for part in [self.workload.as_bytes(), self.file.as_bytes()] {
            b.extend_from_slice(&(part.len() as u64).to_le_bytes());
            b.extend_from_slice(part);
        }
        b
    }
}

/// Seals and opens the records of one file.
pub struct Sealer {
    aead: LessSafeKey,
    nonce_key: [u8; 32],
    aad: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

impl Sealer {
    /// For the file `binding` names, under `key`.
    pub fn new(key: &DataKey, binding: &Binding) -> Self {
        let enc = blake3::derive_key(ENC_CONTEXT, &key.0);
        let unbound = match UnboundKey::new(&AES_256_GCM, &enc) {
            Ok(k) => k,
            // A 32-byte key is what AES-256-GCM takes.
            Err(_) => unreachable!("AES-256-GCM takes 32-byte keys"),
        };
        Sealer {
            aead: LessSafeKey::new(unbound),
            nonce_key: blake3::derive_key(NONCE_CONTEXT, &key.0),
            aad: binding.bytes(),
        }
    }

    fn nonce(&self, page: &[u8]) -> [u8; NONCE_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.nonce_key);
        h.update(&(self.aad.len() as u64).to_le_bytes());
        h.update(&self.aad);
        h.update(page);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&h.finalize().as_bytes()[..NONCE_LEN]);
        n
    }

    /// The record of `page` (at most [`PAGE`] bytes), appended to `out`.
    pub fn seal(&self, page: &[u8], out: &mut Vec<u8>) {
        let nonce = self.nonce(page);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(page);
        let tag = self.aead.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&self.aad),
            &mut out[start..],
        );
        match tag {
            Ok(t) => out.extend_from_slice(t.as_ref()),
            // Sealing fails only for inputs longer than GCM can count (64 GiB), never a page.
            Err(_) => unreachable!("a page is within AES-GCM's limit"),
        }
    }

    /// Opens record `index` in place (`record`, as [`Sealer::seal`] made it): its page.
    /// The binding (workload, file) is checked as the AEAD's associated data; where the
    /// record sits in its file is checked by the file's digest, bound by the manifest's tag.
    pub fn open_in<'a>(&self, index: u64, record: &'a mut [u8]) -> Result<&'a [u8], SealError> {
        if record.len() < OVERHEAD {
            return Err(SealError::Truncated {
                index,
                len: record.len(),
            });
        }
        let (nonce, body) = record.split_at_mut(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let page = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(n), Aad::from(&self.aad), body)
            .map_err(|_| SealError::Refused { index })?;
        Ok(page)
    }

    /// The page of record `index` (`record`, as [`Sealer::seal`] made it).
    pub fn open(&self, index: u64, record: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut copy = record.to_vec();
        self.open_in(index, &mut copy).map(<[u8]>::to_vec)
    }

    /// Opens the sealed file `input` into `output` (its plaintext, from offset 0), with
    /// `threads` threads each opening a range of records; bytes of plaintext.
    pub fn open_file(
        &self,
        input: &std::fs::File,
        output: &std::fs::File,
        threads: usize,
    ) -> Result<u64, SealError> {
        use std::os::unix::fs::FileExt;
        let len = input.metadata()?.len();
        let full = len / RECORD as u64;
        let tail = (len % RECORD as u64) as usize;
        if tail > 0 && tail < OVERHEAD {
            return Err(SealError::Truncated {
                index: full,
                len: tail,
            });
        }
        let records = full + u64::from(tail > 0);
        let plain = full * PAGE as u64 + tail.saturating_sub(OVERHEAD) as u64;
        output.set_len(plain)?;
        // Records read and written per step.
        const STEP: u64 = 64;
        let per_thread = records.div_ceil(threads.max(1) as u64).max(1);
        let range = |from: u64| -> Result<(), SealError> {
            let to = (from + per_thread).min(records);
            let mut buf = vec![0u8; STEP as usize * RECORD];
            let mut plain_buf = Vec::with_capacity(STEP as usize * PAGE);
            let mut first = from;
            while first < to {
                let last = (first + STEP).min(to);
                let start = first * RECORD as u64;
                let n = ((last * RECORD as u64).min(len) - start) as usize;
                input.read_exact_at(&mut buf[..n], start)?;
                plain_buf.clear();
                for (i, record) in buf[..n].chunks_mut(RECORD).enumerate() {
                    plain_buf.extend_from_slice(self.open_in(first + i as u64, record)?);
                }
                output.write_all_at(&plain_buf, first * PAGE as u64)?;
                first = last;
            }
            Ok(())
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..records)
                .step_by(per_thread as usize)
                .map(|from| s.spawn(move || range(from)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or(Err(SealError::Io(std::io::Error::other(
                        "a thread opening records stopped",
                    ))))
                })
                .collect::<Result<Vec<()>, SealError>>()
        })?;
        Ok(plain)
    }

    /// Seals everything read from `input` into `out`, a page at a time; bytes written.
    pub fn seal_stream(&self, mut input: impl Read, mut out: impl Write) -> Result<u64, SealError> {
        let mut page = vec![0u8; PAGE];
        let mut record = Vec::with_capacity(RECORD);
        let mut written = 0u64;
        loop {
            let n = read_full(&mut input, &mut page)?;
            if n == 0 {
                return Ok(written);
            }
            record.clear();
            self.seal(&page[..n], &mut record);
            out.write_all(&record)?;
            written += record.len() as u64;
            if n < PAGE {
                return Ok(written);
            }
        }
    }

    /// Opens a file sealed by [`Sealer::seal_stream`] from `input` into `out`; bytes of
    /// plaintext written.
    pub fn open_stream(&self, mut input: impl Read, mut out: impl Write) -> Result<u64, SealError> {
        let mut record = vec![0u8; RECORD];
        let mut written = 0u64;
        for index in 0.. {
            let n = read_full(&mut input, &mut record)?;
            if n == 0 {
                break;
            }
            let page = self.open(index, &record[..n])?;
            out.write_all(&page)?;
            written += page.len() as u64;
            if n < RECORD {
                break;
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(file: &str) -> Binding {
        Binding {
            workload: "db".into(),
            file: file.into(),
        }
    }

    /// Pages of varied bytes with a 128-byte marker in page 2.
    fn image(pages: usize) -> (Vec<u8>, Vec<u8>) {
        let mut data: Vec<u8> = (0..pages * PAGE + 100)
            .map(|i| (i as u8).wrapping_mul(29) ^ (i / PAGE) as u8)
            .collect();
        let marker: Vec<u8> = (0..128u8).map(|i| b'A' + i % 26).collect();
        data[2 * PAGE + 7..2 * PAGE + 7 + 128].copy_from_slice(&marker);
        (data, marker)
    }

    #[test]
    fn a_sealed_file_opens_to_itself_and_shows_none_of_its_bytes() {
        let key = DataKey::generate().unwrap();
        let s = Sealer::new(&key, &binding("pages-1.img"));
        let (data, marker) = image(5);
        let mut sealed = Vec::new();
        let n = s.seal_stream(data.as_slice(), &mut sealed).unwrap();
        assert_eq!(n as usize, sealed.len());
        assert_eq!(sealed.len(), 5 * RECORD + 100 + OVERHEAD);
        assert!(!sealed.windows(marker.len()).any(|w| w == marker));
        let mut opened = Vec::new();
        // Fed in odd pieces, as a file is read.
        let reader = std::io::BufReader::with_capacity(999, sealed.as_slice());
        s.open_stream(reader, &mut opened).unwrap();
        assert_eq!(opened, data);
        let fps: Vec<u128> = sealed.chunks(RECORD).map(record_fingerprint).collect();
        let reader = std::io::BufReader::with_capacity(777, sealed.as_slice());
        assert_eq!(
            digest_reader(reader).unwrap(),
            (sealed.len() as u64, digest(&fps))
        );
        assert_eq!(sealed_size(data.len() as u64), sealed.len() as u64);
    }

    #[test]
    fn a_file_opened_by_several_threads_is_the_file_and_an_altered_record_is_named() {
        let key = DataKey::generate().unwrap();
        let s = Sealer::new(&key, &binding("pages-1.img"));
        let (data, _) = image(300);
        let mut sealed = Vec::new();
        s.seal_stream(data.as_slice(), &mut sealed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("sealed"), dir.path().join("plain"));
        std::fs::write(&src, &sealed).unwrap();
        for threads in [1, 3, 8] {
            let n = s
                .open_file(
                    &std::fs::File::open(&src).unwrap(),
                    &std::fs::File::create(&dst).unwrap(),
                    threads,
                )
                .unwrap();
            assert_eq!(n, data.len() as u64);
            assert_eq!(std::fs::read(&dst).unwrap(), data, "{threads} threads");
        }
        sealed[200 * RECORD + 99] ^= 1;
        std::fs::write(&src, &sealed).unwrap();
        let err = s
            .open_file(
                &std::fs::File::open(&src).unwrap(),
                &std::fs::File::create(&dst).unwrap(),
                3,
            )
            .unwrap_err();
        assert!(matches!(err, SealError::Refused { index: 200 }), "{err}");
    }

    #[test]
    fn an_unchanged_page_seals_to_the_same_record_so_deltas_still_find_it() {
        let key = DataKey::generate().unwrap();
        let s = Sealer::new(&key, &binding("pages-1.img"));
        let (old, _) = image(4);
        let mut new = old.clone();
        new[PAGE + 5] ^= 1;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.seal_stream(old.as_slice(), &mut a).unwrap();
        s.seal_stream(new.as_slice(), &mut b).unwrap();
        let records = |v: &Vec<u8>| v.chunks(RECORD).map(<[u8]>::to_vec).collect::<Vec<_>>();
        let (ra, rb) = (records(&a), records(&b));
        let same: Vec<bool> = ra.iter().zip(&rb).map(|(x, y)| x == y).collect();
        assert_eq!(same, vec![true, false, true, true, true]);
    }

    #[test]
    fn records_do_not_open_under_another_key_file_or_workload_or_when_altered() {
        let key = DataKey::generate().unwrap();
        let s = Sealer::new(&key, &binding("pages-1.img"));
        let mut record = Vec::new();
        s.seal(&[7u8; PAGE], &mut record);
        assert_eq!(s.open(0, &record).unwrap(), vec![7u8; PAGE]);
        let refused = |s: &Sealer, r: &[u8]| matches!(s.open(0, r), Err(SealError::Refused { .. }));
        assert!(refused(
            &Sealer::new(&key, &binding("pages-2.img")),
            &record
        ));
        let mut other_workload = binding("pages-1.img");
        other_workload.workload = "web".into();
        assert!(refused(&Sealer::new(&key, &other_workload), &record));
        let other = DataKey::generate().unwrap();
        assert!(refused(
            &Sealer::new(&other, &binding("pages-1.img")),
            &record
        ));
        for at in [0, NONCE_LEN + 10, record.len() - 1] {
            let mut bad = record.clone();
            bad[at] ^= 0x80;
            assert!(refused(&s, &bad), "altered at {at}");
        }
        assert!(matches!(
            s.open(3, &record[..10]),
            Err(SealError::Truncated { index: 3, len: 10 })
        ));
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Prints how fast 256 MiB seal and open here (`cargo test --release -p
    /// understudy-common seal_speed -- --ignored --nocapture`); not part of the tests.
    #[test]
    #[ignore]
    fn seal_speed() {
        let key = DataKey::generate().unwrap();
        let s = Sealer::new(
            &key,
            &Binding {
                workload: "w".into(),
                file: "pages-1.img".into(),
            },
        );
        let data: Vec<u8> = (0..256usize << 20).map(|i| (i * 7 % 251) as u8).collect();
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let t = std::time::Instant::now();
        let mut sealed = Vec::with_capacity(data.len() + data.len() / 100);
        s.seal_stream(data.as_slice(), &mut sealed).unwrap();
        eprintln!("seal 256 MiB: {:?}", t.elapsed());
        let (src, dst) = (dir.path().join("s"), dir.path().join("p"));
        std::fs::write(&src, &sealed).unwrap();
        for threads in [1, 2] {
            let t = std::time::Instant::now();
            s.open_file(
                &std::fs::File::open(&src).unwrap(),
                &std::fs::File::create(&dst).unwrap(),
                threads,
            )
            .unwrap();
            eprintln!("open 256 MiB, {threads} threads: {:?}", t.elapsed());
        }
        let t = std::time::Instant::now();
        let _ = digest_reader(std::fs::File::open(&src).unwrap()).unwrap();
        eprintln!("digest 256 MiB: {:?}", t.elapsed());
    }
}
