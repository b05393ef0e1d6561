//! An epoch manifest as a shadow reads it from disk or a primary sends it: the raw file
//! (magic, version, length, checksum), and — since a fuzzer cannot forge a BLAKE3 checksum —
//! a valid envelope around arbitrary payload bytes, so the decoder behind the checksum is
//! reached too. Whatever decodes must encode back to a manifest that decodes to itself, and
//! every data entry it lists must be one whose path can be checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_common::data_entry::check_entry_path;
use understudy_common::epoch::Manifest;

/// `Manifest::to_bytes`'s envelope: magic, format version, length, payload, BLAKE3.
fn envelope(payload: &[u8]) -> Vec<u8> {
    let reference = Manifest {
        workload: String::new(),
        generation: 0,
        epoch: 0,
        taken_unix_ms: 0,
        stdio_key: None,
        files: Vec::new(),
        data: Vec::new(),
        seal: None,
    }
    .to_bytes()
    .expect("an empty manifest encodes");
    let mut out = reference[..6].to_vec();
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    for bytes in [data.to_vec(), envelope(data)] {
        let Ok(m) = Manifest::from_bytes(&bytes) else {
            continue;
        };
        let again = Manifest::from_bytes(&m.to_bytes().expect("a decoded manifest encodes"))
            .expect("an encoded manifest decodes");
        assert_eq!(again, m);
        let _ = (m.total_bytes(), m.data_bytes());
        for f in m.data_files() {
            let _ = f.name.len();
        }
        for e in &m.data {
            let _ = check_entry_path(&e.path, 4);
            let _ = e.size();
        }
    }
});
