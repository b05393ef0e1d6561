//! Post-copy (CRIU's lazy pages): the options libcriu has no setter for, passed to the
//! service in an RPC configuration file, and the `criu lazy-pages` daemon that feeds a
//! tree restored without its memory.
//!
//! libcriu 4.2 cannot ask for `--lazy-pages`, and in the RPC request it ignores the page
//! server's address for a lazy dump (it would listen on every address). CRIU reads a
//! configuration file named in the request after the request itself, so the few options
//! go there: written next to the images directory, removed when the call returns.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{CriuError, PageServer};

/// An RPC configuration file, removed on drop.
#[derive(Debug)]
pub(crate) struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `lines` (CRIU long options without their dashes) beside `images_dir`.
    pub(crate) fn write(
        op: &'static str,
        images_dir: &Path,
        lines: &[String],
    ) -> Result<Self, CriuError> {
        let name = images_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = images_dir.parent().unwrap_or(Path::new("/"));
        let path = parent.join(format!(".{name}.criu.conf"));
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).map_err(|source| CriuError::ImagesDir {
            op,
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("criu: {}: not removed: {e}", self.path.display());
            }
        }
    }
}

/// The configuration lines of a lazy dump serving its memory at `server`.
pub(crate) fn dump_lines(server: &PageServer) -> Vec<String> {
    vec![
        "lazy-pages".into(),
        format!("address {}", server.address),
        format!("port {}", server.port),
    ]
}

/// The configuration lines of a lazy restore.
pub(crate) fn restore_lines() -> Vec<String> {
    vec!["lazy-pages".into()]
}

/// The command of a `criu lazy-pages` daemon for the images in `images_dir`, fetching the
/// memory from the page server at `server`, logging to `log_file` in `images_dir`. Start it
/// before the lazy restore of the same directory (they meet on a socket there); it exits
/// once every page has been copied in (status 0) or when it cannot go on.
pub(crate) fn daemon(
    service_binary: &Path,
    images_dir: &Path,
    server: &PageServer,
    log_file: &str,
) -> Command {
    let mut cmd = Command::new(service_binary);
    cmd.arg("lazy-pages")
        .arg("--page-server")
        .args(["--address", &server.address])
        .args(["--port", &server.port.to_string()])
        .arg("--images-dir")
        .arg(images_dir)
        .arg("--work-dir")
        .arg(images_dir)
        .args(["--log-file", log_file, "-v4"]);
    cmd
}
