//! A delta as a shadow applies it: arbitrary commands (compressed here, so that the fuzzer
//! works on the commands rather than on zstd's framing; one input in eight is handed to the
//! decompressor as is) applied onto a base file. It must never panic, and what it builds is
//! never larger than the announced size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_common::delta_apply::apply_stream;

fuzz_target!(|data: &[u8]| {
    let [base_pages, size_byte, mode, rest @ ..] = data else {
        return;
    };
    let base: Vec<u8> = (0..usize::from(*base_pages % 8) * 4096 + usize::from(*size_byte))
        .map(|i| (i % 251) as u8)
        .collect();
    let size = u64::from(*size_byte) * 1024;
    let wire = if mode % 8 == 0 {
        rest.to_vec()
    } else {
        zstd::bulk::compress(rest, 1).expect("zstd compresses")
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (base_path, out) = (dir.path().join("base"), dir.path().join("out"));
    std::fs::write(&base_path, &base).expect("the base is written");
    if apply_stream(&base_path, &out, &wire[..], size).is_ok() {
        let built = std::fs::metadata(&out)
            .expect("the built file exists")
            .len();
        assert!(built <= size, "built {built} bytes for an announced {size}");
    }
});
