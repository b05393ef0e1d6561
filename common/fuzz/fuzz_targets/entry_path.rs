//! A data-entry path from a peer (`<index>/<components>`): one that is accepted must stay
//! inside the data directory it is joined to — no root, no `..`, no `.`, no empty part — and
//! name one of the workload's directories.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use understudy_common::data_entry::{check_entry_path, wire_name};

fuzz_target!(|data: &[u8]| {
    let Some((&dirs, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let dirs = usize::from(dirs % 5);
    if check_entry_path(path, dirs).is_err() {
        return;
    }
    let joined = Path::new("/data").join(path);
    assert!(joined.starts_with("/data"), "{path:?} leaves the directory");
    for c in Path::new(path).components() {
        assert!(
            matches!(c, Component::Normal(_)),
            "{path:?} has the component {c:?}"
        );
    }
    assert!(!path.contains("//") && !path.ends_with('/'), "{path:?}");
    let index: usize = path
        .split('/')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("an accepted path starts with its directory's index");
    assert!(index < dirs, "{path:?} names directory {index} of {dirs}");
    let _ = wire_name(path);
});
