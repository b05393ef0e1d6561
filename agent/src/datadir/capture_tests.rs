//! Unit tests of change detection and capture on real files.

use std::os::unix::fs::PermissionsExt;

use super::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    snaps: PathBuf,
    n: u32,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        Fixture {
            snaps: tmp.path().join("snaps"),
            data,
            _tmp: tmp,
            n: 0,
        }
    }

    fn dirs(&self) -> Vec<Dir> {
        vec![Dir {
            logical: "/srv/app".into(),
            host: self.data.clone(),
        }]
    }

    /// Captures and finishes against `index`; returns entries, index and bytes copied.
    fn epoch(&mut self, index: &Index) -> (Vec<DataEntry>, Index, u64) {
        self.n += 1;
        let snap = self.snaps.join(self.n.to_string());
        let c = capture(&self.dirs(), index, &HashMap::new(), &HashSet::new(), &snap).unwrap();
        let copied = c.snapshot_bytes;
        let Finished { entries, index, .. } = finish(c, &snap).unwrap();
        (entries, index, copied)
    }

    /// Makes every file's timestamps old enough not to be racy.
    fn age(&self) {
        let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
        for e in std::fs::read_dir(&self.data).unwrap().flatten() {
            nix::sys::stat::utimensat(
                None,
                &e.path(),
                &old,
                &old,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
    }
}

fn entry<'a>(entries: &'a [DataEntry], path: &str) -> &'a DataEntry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} missing from {entries:?}"))
}

fn origin(e: &DataEntry) -> Option<&str> {
    match &e.kind {
        DataKind::File { origin, .. } => origin.as_deref(),
        _ => panic!("{} is not a file", e.path),
    }
}

#[test]
fn a_first_capture_copies_everything_and_lists_dirs_and_symlinks() {
    let mut f = Fixture::new();
    std::fs::write(f.data.join("a"), b"alpha").unwrap();
    std::fs::create_dir(f.data.join("empty")).unwrap();
    std::os::unix::fs::symlink("a", f.data.join("link")).unwrap();
    let (entries, _, copied) = f.epoch(&Index::default());
    assert_eq!(copied, 5);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["0", "0/a", "0/empty", "0/link"]);
    assert_eq!(entry(&entries, "0/empty").kind, DataKind::Dir);
    assert_eq!(
        entry(&entries, "0/link").kind,
        DataKind::Symlink { target: "a".into() }
    );
    assert_eq!(origin(entry(&entries, "0/a")), None);
    assert_eq!(std::fs::read(f.snaps.join("1/data/0/a")).unwrap(), b"alpha");
}

#[test]
fn unchanged_files_are_not_copied_and_changed_ones_are() {
    let mut f = Fixture::new();
    std::fs::write(f.data.join("same"), b"same").unwrap();
    std::fs::write(f.data.join("grows"), b"v1").unwrap();
    f.age();
    let (_, index, _) = f.epoch(&Index::default());
    std::fs::write(f.data.join("grows"), b"v2 longer").unwrap();
    let (entries, _, copied) = f.epoch(&index);
    assert_eq!(copied, 9, "only the changed file is copied");
    assert!(!f.snaps.join("2/data/0/same").exists());
    assert_eq!(origin(entry(&entries, "0/grows")), Some("0/grows"));
    assert_eq!(origin(entry(&entries, "0/same")), Some("0/same"));
}

#[test]
fn recently_written_files_are_checked_again() {
    let mut f = Fixture::new();
    std::fs::write(f.data.join("hot"), b"v1").unwrap();
    let (_, index, _) = f.epoch(&Index::default());
    // Same size, and possibly the same coarse mtime: only the racy rule catches this.
    std::fs::write(f.data.join("hot"), b"v2").unwrap();
    let (entries, _, copied) = f.epoch(&index);
    assert_eq!(copied, 2);
    let DataKind::File { blake3, .. } = entry(&entries, "0/hot").kind else {
        panic!()
    };
    assert_eq!(blake3, *blake3::hash(b"v2").as_bytes());
}

#[test]
fn renames_and_mode_changes_keep_content_without_copying() {
    let mut f = Fixture::new();
    std::fs::write(f.data.join("old"), b"content").unwrap();
    std::fs::write(f.data.join("mode"), b"m").unwrap();
    f.age();
    let (_, index, _) = f.epoch(&Index::default());
    std::fs::rename(f.data.join("old"), f.data.join("new")).unwrap();
    std::fs::set_permissions(f.data.join("mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (entries, _, copied) = f.epoch(&index);
    assert_eq!(copied, 0);
    assert!(entries.iter().all(|e| e.path != "0/old"));
    assert_eq!(origin(entry(&entries, "0/new")), Some("0/old"));
    assert_eq!(entry(&entries, "0/mode").meta.mode, 0o600);
    // In the epoch after, the renamed file's content is at its new path.
    let (_, index, _) = f.epoch(&index);
    let (entries, _, copied) = f.epoch(&index);
    assert_eq!(copied, 0);
    assert_eq!(origin(entry(&entries, "0/new")), Some("0/new"));
}

#[test]
fn decide_prefers_the_same_inode() {
    let mut index = Index::default();
    let stat = Stat {
        ino: 7,
        size: 3,
        mtime_ns: 10,
        ctime_ns: 10,
    };
    index.entries.insert(
        "0/a".into(),
        Known {
            stat: Some(stat),
            racy: false,
            entry: DataEntry {
                path: "0/a".into(),
                kind: DataKind::File {
                    size: 3,
                    blake3: [0; 32],
                    origin: None,
                },
                meta: Meta::default(),
            },
        },
    );
    let by_ino: HashMap<u64, String> = [(7, "0/a".to_string())].into();
    assert_eq!(decide("0/a", &stat, &index, &by_ino), Decision::Reuse);
    let replaced = Stat { ino: 8, ..stat };
    assert_eq!(
        decide("0/a", &replaced, &index, &by_ino),
        Decision::Snapshot {
            origin: Some("0/a".into())
        }
    );
    assert_eq!(
        decide("0/b", &stat, &index, &by_ino),
        Decision::SameContent {
            origin: "0/a".into()
        }
    );
    let grown = Stat { size: 4, ..stat };
    assert_eq!(
        decide("0/a", &grown, &index, &by_ino),
        Decision::Snapshot {
            origin: Some("0/a".into())
        }
    );
    assert_eq!(
        decide("0/c", &replaced, &index, &by_ino),
        Decision::Snapshot { origin: None }
    );
}

#[test]
fn a_large_file_with_a_known_base_is_captured_as_its_changed_pages() {
    let mut f = Fixture::new();
    let old: Vec<u8> = (0..PATCH_MIN_BYTES as usize * 2)
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(f.data.join("big"), &old).unwrap();
    f.age();
    let (_, index, _) = f.epoch(&Index::default());
    let sigs: HashMap<String, PageSignature> = [(
        wire_name("0/big"),
        crate::replication::delta::signature(&old),
    )]
    .into();
    let mut new = old.clone();
    new[5 * 4096 + 1] ^= 0xff;
    std::fs::write(f.data.join("big"), &new).unwrap();
    let snap = f.snaps.join("patched");
    let c = capture(&f.dirs(), &index, &sigs, &HashSet::new(), &snap).unwrap();
    assert_eq!(c.snapshot_bytes, 4096, "one page stored, not the file");
    let done = finish(c, &snap).unwrap();
    let p = &done.patches[&wire_name("0/big")];
    assert_eq!(p.pages, [5]);
    let DataKind::File { blake3, .. } = entry(&done.entries, "0/big").kind else {
        panic!()
    };
    assert_eq!(blake3, *blake3::hash(&new).as_bytes());
}
