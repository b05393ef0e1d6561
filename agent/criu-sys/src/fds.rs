//! File descriptors handed to CRIU: the images directory, and the
//! `FD_CLOEXEC` guard that lets inherited fds reach the `criu swrk` child.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::CriuError;

/// Opens `path` as a directory (read-only, close-on-exec).
pub(crate) fn open_images_dir(op: &'static str, path: &Path) -> Result<File, CriuError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|source| CriuError::ImagesDir {
            op,
            path: path.to_path_buf(),
            source,
        })
}

/// Clears `FD_CLOEXEC` on some fds and puts their old flags back on drop.
///
/// While it lives, any process this one forks and execs (not only libcriu's
/// `criu swrk` child) inherits these fds.
#[derive(Debug)]
pub(crate) struct InheritGuard {
    /// `(fd, flags before)`.
    saved: Vec<(RawFd, libc::c_int)>,
}

impl InheritGuard {
    pub(crate) fn new(op: &'static str, fds: &[RawFd]) -> Result<Self, CriuError> {
        let mut guard = Self { saved: Vec::new() };
        for &fd in fds {
            let flags =
                get_fd_flags(fd).map_err(|source| CriuError::InheritFd { op, fd, source })?;
            if flags & libc::FD_CLOEXEC != 0 {
                set_fd_flags(fd, flags & !libc::FD_CLOEXEC)
                    .map_err(|source| CriuError::InheritFd { op, fd, source })?;
                guard.saved.push((fd, flags));
            }
        }
        Ok(guard)
    }
}

impl Drop for InheritGuard {
    fn drop(&mut self) {
        for &(fd, flags) in &self.saved {
            // Best effort: the fd was valid a moment ago and is still the caller's.
            let _ = set_fd_flags(fd, flags);
        }
    }
}

fn get_fd_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFD only reads the descriptor flags; an invalid fd yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(flags)
    }
}

fn set_fd_flags(fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the descriptor flags of `fd`, which the
    // caller handed us to pass on to CRIU; no memory is involved.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
