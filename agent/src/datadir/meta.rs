//! Reading and applying an entry's metadata: owner, mode, modification time and
//! extended attributes (symlinks' own, never their targets').

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use understudy_common::data_entry::Meta;

/// Reads `path`'s metadata, `md` being its `symlink_metadata`.
pub fn read(path: &Path, md: &std::fs::Metadata) -> std::io::Result<Meta> {
    let mut xattrs = Vec::new();
    for name in xattr::list(path)? {
        let Some(text) = name.to_str() else {
            continue;
        };
        if let Some(value) = xattr::get(path, &name)? {
            xattrs.push((text.to_owned(), value));
        }
    }
    xattrs.sort();
    Ok(Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        xattrs,
    })
}

/// Applies `meta` to `path` (a symlink when `symlink`: only owner, xattrs and time).
pub fn apply(path: &Path, meta: &Meta, symlink: bool) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))?;
    if !symlink {
        // After chown, which clears set-id bits.
        std::fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode),
        )?;
    }
    for (name, value) in &meta.xattrs {
        xattr::set(path, name, value)?;
    }
    let t = TimeSpec::new(
        meta.mtime_ns.div_euclid(1_000_000_000),
        meta.mtime_ns.rem_euclid(1_000_000_000),
    );
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(std::io::Error::from)?;
    Ok(())
}
