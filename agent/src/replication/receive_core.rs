//! The shadow's side of one epoch transfer, as decisions without I/O: whether to accept an
//! offer, whether a file frame is acceptable, and what to do once every file is in
//! (commit, ask for mismatched files whole once, or refuse).

use std::collections::BTreeSet;

use understudy_common::data_entry::{check_entry_path, wire_name, DataKind};
use understudy_common::epoch::{FileEntry, Manifest};
use understudy_common::transfer::{Encoding, SealedFiles, MAX_FILE_CHUNK};

/// What the shadow knows when an offer arrives.
#[derive(Debug, Clone)]
pub struct ShadowView<'a> {
    /// The primary the coordinator said to accept epochs from, if any.
    pub expected_primary: Option<&'a str>,
    /// The newest generation this agent has seen for the workload.
    pub seen_generation: Option<u64>,
    /// The newest committed epoch, if any.
    pub newest_committed: Option<u64>,
    /// How many data directories the workload's spec declares.
    pub data_dirs: usize,
    /// Bytes free where epochs are kept, if known.
    pub available: Option<u64>,
}

/// Whether to accept an offer from `peer`.
pub fn check_offer(view: &ShadowView<'_>, peer: &str, manifest: &Manifest) -> Result<(), String> {
    match view.expected_primary {
        None => {
            return Err(format!(
                "this host is not a shadow of workload {:?}",
                manifest.workload
            ))
        }
        Some(p) if p != peer => {
            return Err(format!(
                "workload {:?} is shadowed here for primary {p}, not {peer}",
                manifest.workload
            ))
        }
        Some(_) => {}
    }
    if let Some(seen) = view.seen_generation {
        if manifest.generation < seen {
            return Err(format!(
                "stale generation {} for workload {:?}: this agent has already seen generation {seen}",
                manifest.generation, manifest.workload
            ));
        }
    }
    if let Some(newest) = view.newest_committed {
        if manifest.epoch <= newest {
            return Err(format!(
                "epoch {} is not newer than committed epoch {newest}",
                manifest.epoch
            ));
        }
    }
    for f in &manifest.files {
        if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
            return Err(format!("file name {:?} is not allowed", f.name));
        }
    }
    // The memory images the manifest announces must fit where they would be written (data
    // files are not counted: unchanged ones are linked from the base epoch). A peer's
    // numbers are never allocated or trusted beyond that.
    if let Some(free) = view.available {
        let total = manifest
            .files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size));
        if total > free {
            return Err(format!(
                "epoch {} of workload {:?} announces {total} bytes of files; only {free} bytes are free here",
                manifest.epoch, manifest.workload
            ));
        }
    }
    for d in &manifest.data {
        check_entry_path(&d.path, view.data_dirs)?;
        if let DataKind::File {
            origin: Some(o), ..
        } = &d.kind
        {
            check_entry_path(o, view.data_dirs)?;
        }
    }
    Ok(())
}

/// Outcome of the `Done` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneDecision {
    /// Every file matches: commit.
    Commit,
    /// Ask for these files whole.
    Resend(Vec<String>),
    /// Give up on this epoch.
    Refuse(String),
}

/// One epoch being received.
#[derive(Debug)]
pub struct Receiving {
    manifest: Manifest,
    have_base: bool,
    received: BTreeSet<String>,
    resent_once: bool,
}

impl Receiving {
    /// Starts receiving `manifest`; `have_base` says whether deltas can be applied.
    pub fn new(manifest: Manifest, have_base: bool) -> Self {
        Receiving {
            manifest,
            have_base,
            received: BTreeSet::new(),
            resent_once: false,
        }
    }

    /// The manifest being received.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Checks a `File` frame before its bytes are read; returns the manifest entry.
    pub fn on_file(&mut self, name: &str, encoding: Encoding) -> Result<FileEntry, String> {
        let entry = self
            .manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .or_else(|| self.manifest.data_files().find(|f| f.name == name))
            .ok_or_else(|| format!("file {name:?} is not in the manifest"))?;
        if encoding == Encoding::Delta && !self.have_base {
            return Err(format!("delta for {name:?} but no base epoch here"));
        }
        self.received.insert(name.to_owned());
        Ok(entry)
    }

    /// The most wire bytes a file may take: zstd never expands by more than a small
    /// fraction; deltas add per-command overhead.
    pub fn wire_cap(entry: &FileEntry) -> u64 {
        entry.size + entry.size / 4 + 64 * 1024
    }

    /// The base epoch's file a delta for `name` applies to: the data file's origin, or
    /// the file of the same name.
    pub fn base_name(&self, name: &str) -> String {
        self.manifest
            .data
            .iter()
            .find(|d| wire_name(&d.path) == name)
            .and_then(|d| match &d.kind {
                DataKind::File { origin, .. } => origin.as_deref().map(wire_name),
                _ => None,
            })
            .unwrap_or_else(|| name.to_owned())
    }

    /// Data files not received (yet): `(name, base name, hash)`, for linking from the
    /// base epoch when it holds the same content.
    pub fn unsent_data(&self) -> Vec<(String, String, [u8; 32])> {
        self.manifest
            .data_files()
            .filter(|f| !self.received.contains(&f.name))
            .map(|f| (self.base_name(&f.name), f))
            .map(|(base, f)| (f.name, base, f.blake3))
            .collect()
    }

    /// Records that `name` was linked from the base epoch (its content is known good).
    pub fn mark_linked(&mut self, name: &str) {
        self.received.insert(name.to_owned());
    }

    /// Completes a sealed epoch's manifest from `Done`: the memory images' digests and the
    /// seal tag (which only the restoring agent, with the key, can check).
    pub fn on_seal(&mut self, seal: Option<SealedFiles>) -> Result<(), String> {
        let Some(seal) = seal else {
            return if self.manifest.seal.is_some() {
                Err("the epoch was sealed and now is not".into())
            } else {
                Ok(())
            };
        };
        if seal.digests.len() != self.manifest.files.len() {
            return Err(format!(
                "{} digests for {} memory images",
                seal.digests.len(),
                self.manifest.files.len()
            ));
        }
        for (f, d) in self.manifest.files.iter_mut().zip(seal.digests) {
            f.blake3 = d;
        }
        self.manifest.seal = Some(seal.tag);
        Ok(())
    }

    /// Decides after `Done`, given the files whose content did not match the manifest.
    pub fn on_done(&mut self, mismatched: Vec<String>) -> DoneDecision {
        let mut bad: BTreeSet<String> = mismatched.into_iter().collect();
        for f in self
            .manifest
            .files
            .iter()
            .cloned()
            .chain(self.manifest.data_files())
        {
            if !self.received.contains(&f.name) {
                bad.insert(f.name);
            }
        }
        if bad.is_empty() {
            return DoneDecision::Commit;
        }
        if self.resent_once {
            return DoneDecision::Refuse(format!(
                "BLAKE3 mismatch on {} even after resending whole; epoch {} refused",
                bad.into_iter().collect::<Vec<_>>().join(", "),
                self.manifest.epoch
            ));
        }
        self.resent_once = true;
        self.have_base = false;
        for name in &bad {
            self.received.remove(name);
        }
        DoneDecision::Resend(bad.into_iter().collect())
    }
}

/// What a chunk's length `len` says about a file being received, given the wire bytes so
/// far (`total`, updated) and the file's `cap`: its end (`None`), or a chunk of that many
/// bytes to read.
pub fn chunk(name: &str, len: u32, total: &mut u64, cap: u64) -> Result<Option<usize>, String> {
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_FILE_CHUNK {
        return Err(format!(
            "file {name:?}: a chunk of {len} bytes (at most {MAX_FILE_CHUNK})"
        ));
    }
    *total += u64::from(len);
    if *total > cap {
        return Err(format!(
            "file {name:?}: more than {cap} wire bytes for its content"
        ));
    }
    Ok(Some(len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(gen: u64, epoch: u64) -> Manifest {
        Manifest {
            workload: "w".into(),
            generation: gen,
            epoch,
            taken_unix_ms: 0,
            stdio_key: None,
            files: vec![
                FileEntry {
                    name: "a.img".into(),
                    size: 100,
                    blake3: [0; 32],
                },
                FileEntry {
                    name: "pages-1.img".into(),
                    size: 1 << 20,
                    blake3: [1; 32],
                },
            ],
            data: vec![],
            seal: None,
        }
    }

    fn view(seen: Option<u64>) -> ShadowView<'static> {
        ShadowView {
            expected_primary: Some("host-a"),
            seen_generation: seen,
            newest_committed: Some(4),
            data_dirs: 1,
            available: Some(1 << 30),
        }
    }

    #[test]
    fn an_offer_announcing_more_than_fits_here_is_refused_before_any_byte_is_read() {
        let mut m = manifest(2, 5);
        m.files[0].size = 1 << 40; // a 1 TiB memory image
        let e = check_offer(&view(Some(2)), "host-a", &m).unwrap_err();
        assert!(
            e.contains("announces 10995") && e.contains("only 1073741824 bytes are free"),
            "{e}"
        );
        // Sizes that add past u64 do not wrap into something small.
        let mut m = manifest(2, 5);
        m.files[0].size = u64::MAX;
        m.files[1].size = 2;
        assert!(check_offer(&view(Some(2)), "host-a", &m).is_err());
    }

    #[test]
    fn offers_are_fenced_by_primary_generation_and_epoch() {
        assert!(check_offer(&view(Some(2)), "host-a", &manifest(2, 5)).is_ok());
        let e = check_offer(&view(Some(3)), "host-a", &manifest(2, 5)).unwrap_err();
        assert!(
            e.contains("stale generation 2") && e.contains("generation 3"),
            "{e}"
        );
        assert!(check_offer(&view(Some(2)), "host-c", &manifest(2, 5)).is_err());
        assert!(check_offer(&view(Some(2)), "host-a", &manifest(2, 4)).is_err());
        let mut m = manifest(2, 5);
        m.files[0].name = "../../etc/passwd".into();
        assert!(check_offer(&view(Some(2)), "host-a", &m).is_err());
        for path in ["0/../../x", "1/a"] {
            let mut m = manifest(2, 5);
            m.data.push(understudy_common::data_entry::DataEntry {
                path: path.into(),
                kind: DataKind::Dir,
                meta: Default::default(),
            });
            let e = check_offer(&view(Some(2)), "host-a", &m).unwrap_err();
            assert!(e.contains(path), "{e}");
        }
    }

    #[test]
    fn unsent_data_files_are_linked_from_their_origin_or_asked_for() {
        let mut m = manifest(1, 5);
        for (path, origin) in [
            ("0/kept", Some("0/kept")),
            ("0/moved", Some("0/old")),
            ("0/new", None),
        ] {
            m.data.push(understudy_common::data_entry::DataEntry {
                path: path.into(),
                kind: DataKind::File {
                    size: 1,
                    blake3: [7; 32],
                    origin: origin.map(Into::into),
                },
                meta: Default::default(),
            });
        }
        let mut r = Receiving::new(m, true);
        r.on_file("a.img", Encoding::Delta).unwrap();
        r.on_file("pages-1.img", Encoding::Delta).unwrap();
        r.on_file("data/0/new", Encoding::Whole).unwrap();
        let unsent = r.unsent_data();
        assert_eq!(
            unsent
                .iter()
                .map(|(n, b, _)| (n.as_str(), b.as_str()))
                .collect::<Vec<_>>(),
            [
                ("data/0/kept", "data/0/kept"),
                ("data/0/moved", "data/0/old")
            ]
        );
        r.mark_linked("data/0/kept");
        assert_eq!(
            r.on_done(vec![]),
            DoneDecision::Resend(vec!["data/0/moved".into()])
        );
    }

    #[test]
    fn mismatch_is_resent_whole_once_then_refused() {
        let mut r = Receiving::new(manifest(1, 5), true);
        r.on_file("a.img", Encoding::Delta).unwrap();
        r.on_file("pages-1.img", Encoding::Delta).unwrap();
        assert_eq!(
            r.on_done(vec!["pages-1.img".into()]),
            DoneDecision::Resend(vec!["pages-1.img".into()])
        );
        // The resend must be whole.
        assert!(r.on_file("pages-1.img", Encoding::Delta).is_err());
        r.on_file("pages-1.img", Encoding::Whole).unwrap();
        assert_eq!(r.on_done(vec![]), DoneDecision::Commit);

        let mut r = Receiving::new(manifest(1, 5), false);
        r.on_file("a.img", Encoding::Whole).unwrap();
        r.on_file("pages-1.img", Encoding::Whole).unwrap();
        r.on_done(vec!["a.img".into()]);
        r.on_file("a.img", Encoding::Whole).unwrap();
        assert!(
            matches!(r.on_done(vec!["a.img".into()]), DoneDecision::Refuse(e) if e.contains("a.img"))
        );
    }

    #[test]
    fn missing_files_and_oversized_frames_are_caught() {
        let mut r = Receiving::new(manifest(1, 5), false);
        assert!(r.on_file("nope.img", Encoding::Whole).is_err());
        let a = r.on_file("a.img", Encoding::Whole).unwrap();
        let cap = Receiving::wire_cap(&a);
        let mut total = 0;
        assert_eq!(chunk("a.img", 4, &mut total, cap), Ok(Some(4)));
        assert_eq!(chunk("a.img", 0, &mut total, cap), Ok(None));
        let e = chunk("a.img", MAX_FILE_CHUNK + 1, &mut total, cap).unwrap_err();
        assert!(e.contains("a.img") && e.contains("chunk"), "{e}");
        let mut over = 0;
        let e = loop {
            match chunk(
                "a.img",
                MAX_FILE_CHUNK,
                &mut over,
                3 * u64::from(MAX_FILE_CHUNK),
            ) {
                Ok(Some(_)) => continue,
                other => break other.unwrap_err(),
            }
        };
        assert!(e.contains("more than"), "{e}");
        assert_eq!(over, 4 * u64::from(MAX_FILE_CHUNK));
        assert_eq!(
            r.on_done(vec![]),
            DoneDecision::Resend(vec!["pages-1.img".into()])
        );
    }
}
