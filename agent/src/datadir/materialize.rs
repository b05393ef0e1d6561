//! Putting an epoch's data directories in place on the host that restores it.
//!
//! The epoch's `data/<index>` tree is moved (renamed) to the data directory's host path,
//! so a restore costs no copy however large the directory; then directories, symlinks and
//! every entry's owner, mode, xattrs and mtime are set as the manifest says. The epoch's
//! files are hard links shared with the shadow's older epochs, which are therefore
//! discarded after a restore (the restored workload writes to these inodes).

use std::path::{Path, PathBuf};

use understudy_common::data_entry::{wire_name, DataEntry, DataKind};

use super::meta;

/// The host path of entry `path` (`<index>/<relative path>`), refusing one that would
/// reach outside its data directory through a symlink: no directory on the way may be a
/// symlink (an earlier entry may have made one), nor the entry itself unless `symlink` (it
/// is then replaced, never followed). Paths with `..` were refused when the epoch arrived.
fn entry_target(targets: &[PathBuf], path: &str, symlink: bool) -> Result<PathBuf, String> {
    let (index, rel) = path.split_once('/').unwrap_or((path, ""));
    let base = index
        .parse::<usize>()
        .ok()
        .and_then(|i| targets.get(i))
        .ok_or_else(|| format!("data path {path:?} names no declared data directory"))?;
    let mut p = base.clone();
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let last = i + 1 == parts.len();
        if last && symlink {
            break;
        }
        let is_link = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            return Err(format!(
                "data path {path:?} goes through the symlink {}: refused (an epoch never writes through a symlink)",
                p.display()
            ));
        }
    }
    Ok(p)
}

/// Moves `dir` out of the way (renamed beside itself, then removed in the background).
pub fn remove_aside(dir: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let aside = dir.with_file_name(format!(".{name}.understudy-old-{nanos}"));
    std::fs::rename(dir, &aside).map_err(|e| format!("moving {} aside: {e}", dir.display()))?;
    std::thread::spawn(move || {
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            tracing::warn!("removing {}: {e}", aside.display());
        }
    });
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Puts the data directories of the epoch in `epoch_dir` (described by `entries`) at
/// `targets` (host paths, by index), replacing whatever was there.
pub fn materialize(
    entries: &[DataEntry],
    epoch_dir: &Path,
    targets: &[PathBuf],
) -> Result<(), String> {
    for (i, dst) in targets.iter().enumerate() {
        remove_aside(dst)?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let src = epoch_dir.join(wire_name(&i.to_string()));
        if src.exists() {
            match std::fs::rename(&src, dst) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EXDEV as i32) => {
                    copy_tree(&src, dst)
                        .map_err(|e| format!("copying to {}: {e}", dst.display()))?
                }
                Err(e) => return Err(format!("moving epoch data to {}: {e}", dst.display())),
            }
        } else {
            std::fs::create_dir(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
        }
    }
    for e in entries {
        let p = entry_target(targets, &e.path, matches!(e.kind, DataKind::Symlink { .. }))?;
        match &e.kind {
            DataKind::Dir => {
                std::fs::create_dir_all(&p).map_err(|err| format!("{}: {err}", p.display()))?
            }
            DataKind::Symlink { target } => {
                let _ = std::fs::remove_file(&p);
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|err| format!("{}: {err}", p.display()))?;
            }
            DataKind::File { .. } => {
                if !p.is_file() {
                    return Err(format!("the epoch lacks data file {}", p.display()));
                }
            }
        }
    }
    // Directories last, deepest first, so creating their entries does not move their mtime.
    for e in entries.iter().filter(|e| e.kind != DataKind::Dir) {
        let symlink = matches!(e.kind, DataKind::Symlink { .. });
        let p = entry_target(targets, &e.path, symlink)?;
        meta::apply(&p, &e.meta, symlink).map_err(|err| format!("{}: {err}", p.display()))?;
    }
    for e in entries.iter().rev().filter(|e| e.kind == DataKind::Dir) {
        let p = entry_target(targets, &e.path, false)?;
        meta::apply(&p, &e.meta, false).map_err(|err| format!("{}: {err}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::capture::{capture, finish, Dir, Index};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_captured_tree_comes_back_with_its_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub/empty")).unwrap();
        std::fs::write(src.join("sub/f"), b"data").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        xattr::set(src.join("sub/f"), "user.k", b"v").unwrap();
        let epoch = tmp.path().join("epoch");
        let dirs = [Dir {
            logical: "/srv/x".into(),
            host: src.clone(),
        }];
        let c = capture(
            &dirs,
            &Index::default(),
            &Default::default(),
            &Default::default(),
            &epoch,
        )
        .unwrap();
        let entries = finish(c, &epoch).unwrap().entries;
        let dst = tmp.path().join("host-b/srv/x");
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(dst.join("stale"), b"old").unwrap();
        materialize(&entries, &epoch, std::slice::from_ref(&dst)).unwrap();
        assert!(
            !dst.join("stale").exists(),
            "what was there before is replaced"
        );
        assert_eq!(std::fs::read(dst.join("sub/f")).unwrap(), b"data");
        assert!(dst.join("sub/empty").is_dir());
        assert_eq!(
            std::fs::read_link(dst.join("l")).unwrap(),
            Path::new("sub/f")
        );
        let md = std::fs::metadata(dst.join("sub/f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            xattr::get(dst.join("sub/f"), "user.k").unwrap().unwrap(),
            b"v"
        );
        let (a, b) = (
            std::fs::metadata(src.join("sub/f"))
                .unwrap()
                .modified()
                .unwrap(),
            md.modified().unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn an_epoch_that_names_a_symlink_out_and_entries_under_it_changes_nothing_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("etc");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), b"root:x:0:0").unwrap();
        std::fs::set_permissions(
            outside.join("passwd"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let epoch = tmp.path().join("epoch");
        std::fs::create_dir_all(&epoch).unwrap();
        let meta = understudy_common::data_entry::Meta {
            mode: 0o777,
            ..Default::default()
        };
        let entry = |path: &str, kind: DataKind| DataEntry {
            path: path.into(),
            kind,
            meta: meta.clone(),
        };
        let entries = [
            entry("0", DataKind::Dir),
            entry(
                "0/link",
                DataKind::Symlink {
                    target: outside.display().to_string(),
                },
            ),
            entry("0/link/evil", DataKind::Dir),
        ];
        let dst = tmp.path().join("host-b/srv/x");
        let err = materialize(&entries, &epoch, std::slice::from_ref(&dst)).unwrap_err();
        assert!(err.contains("symlink"), "{err}");
        assert!(!outside.join("evil").exists());
        let entries = [
            entry("0", DataKind::Dir),
            entry(
                "0/link",
                DataKind::Symlink {
                    target: outside.display().to_string(),
                },
            ),
            entry(
                "0/link/passwd",
                DataKind::File {
                    size: 10,
                    blake3: [0; 32],
                    origin: None,
                },
            ),
        ];
        let err = materialize(&entries, &epoch, std::slice::from_ref(&dst)).unwrap_err();
        assert!(err.contains("symlink"), "{err}");
        let md = std::fs::metadata(outside.join("passwd")).unwrap();
        assert_eq!(
            md.permissions().mode() & 0o7777,
            0o644,
            "its mode is untouched"
        );
        assert_eq!(
            std::fs::read(outside.join("passwd")).unwrap(),
            b"root:x:0:0"
        );
    }
}
