//! [`CriuError`]: everything that can go wrong in a libcriu call, with the
//! operation, libcriu's return code and CRIU's own reason.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// A failed CRIU operation. Every variant names the operation (`"dump"`,
/// `"pre-dump"`, `"restore"`, `"version"`, `"feature-check"`), see [`CriuError::op`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CriuError {
    /// No service binary: neither `CRIU_BIN` at run time nor one found at build time.
    #[error("no CRIU binary: set CRIU_BIN or run packaging/criu/provision-criu.sh as root first")]
    NoServiceBinary,

    /// The images directory could not be opened.
    #[error("criu {op}: cannot open images dir {}: {source}", path.display())]
    ImagesDir {
        /// The operation.
        op: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// An option value CRIU cannot take (e.g. it contains a NUL byte).
    #[error("criu {op}: invalid {what} {value:?}: {problem}")]
    InvalidOption {
        /// The operation.
        op: &'static str,
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A libcriu option setter (`criu_local_set_log_file`...) failed.
    #[error("criu {op}: {call} failed ({code})")]
    Setup {
        /// The operation.
        op: &'static str,
        /// The libcriu function.
        call: &'static str,
        /// Its return code.
        code: i32,
    },

    /// A file descriptor to pass to CRIU could not be made inheritable.
    #[error("criu {op}: cannot make fd {fd} inheritable: {source}")]
    InheritFd {
        /// The operation.
        op: &'static str,
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// CRIU (or libcriu talking to it) reported failure.
    #[error("criu {op} failed ({code}): {reason}")]
    Failed {
        /// The operation.
        op: &'static str,
        /// libcriu's return code, e.g. `-52` (`-EBADE`) when CRIU itself failed.
        code: i32,
        /// CRIU's reason: the last `Error` lines of its log, or what the code means.
        reason: String,
    },
}

impl CriuError {
    /// The operation that failed, if any (`None` for [`CriuError::NoServiceBinary`]).
    pub fn op(&self) -> Option<&'static str> {
        match self {
            Self::NoServiceBinary => None,
            Self::ImagesDir { op, .. }
            | Self::InvalidOption { op, .. }
            | Self::Setup { op, .. }
            | Self::InheritFd { op, .. }
            | Self::Failed { op, .. } => Some(op),
        }
    }

    /// libcriu's return code, for errors that come from a libcriu call.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Setup { code, .. } | Self::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }
}
