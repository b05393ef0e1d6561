//! Data-plane messages: a primary agent sending one epoch to its shadow over one QUIC
//! stream.
//!
//! The primary offers the epoch (its manifest and the epoch its deltas are against); the
//! shadow accepts, saying whether it holds that base, or refuses. Each file then follows as
//! a `File` frame announcing its encoding and compressed length, followed by exactly that
//! many raw bytes (zstd of the whole file, or of a fast_rsync delta against the base
//! epoch's file of the same name). After `Done` the shadow checks every hash and either
//! commits, or asks for named files whole, once; a file that still fails refuses the epoch.
//!
//! A sealed epoch's memory images (`crate::seal`) are offered with their sealed sizes;
//! their digests, known only once every page is encoded, and the manifest's seal tag come
//! with `Done`.

use serde::{Deserialize, Serialize};

use crate::epoch::Manifest;

/// ALPN protocol name of the agent ⇄ agent data plane.
pub const DATA_ALPN: &[u8] = b"understudy-data/1";
/// Largest data-plane control frame (manifests included).
pub const MAX_DATA_FRAME: u32 = 8 * 1024 * 1024;
/// Largest chunk of a file's wire bytes either side sends or accepts.
pub const MAX_FILE_CHUNK: u32 = 1024 * 1024;

/// Sent by the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataMessage {
    /// An epoch is coming.
    Offer {
        /// What it consists of.
        manifest: Manifest,
        /// The committed epoch deltas are computed against, if any.
        base_epoch: Option<u64>,
        /// The last epoch before a switchover: it is restored at once, and a failed
        /// switchover resumes from the primary's own copy, so the shadow need not sync it
        /// to disk before committing.
        final_epoch: bool,
    },
    /// One file's bytes follow this frame, as they are encoded: chunks of at most
    /// [`MAX_FILE_CHUNK`] bytes, each after its length (4 bytes, big-endian), ending with
    /// an empty chunk.
    File {
        /// File name from the manifest.
        name: String,
        /// How the bytes encode the file.
        encoding: Encoding,
    },
    /// A post-copy move's images (no memory in them) are coming, each file's raw bytes
    /// as chunks like a `File`'s, in the manifest's order, checked against its hashes. Once
    /// the target answers `Staged`, the stream carries CRIU's page-server connection: the
    /// target's `criu lazy-pages` daemon pulling the memory from the old primary's dump.
    PostCopy {
        /// What the images are.
        manifest: Manifest,
    },
    /// Every file has been sent.
    Done {
        /// For a sealed epoch: the memory images' digests and the manifest's tag.
        seal: Option<SealedFiles>,
    },
}

/// The part of a sealed epoch's manifest known only after its files were encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFiles {
    /// The digest of each memory image, in the manifest's order.
    pub digests: Vec<[u8; 32]>,
    /// The manifest's seal tag (`Manifest::seal`).
    pub tag: [u8; 32],
}

/// How a file's bytes are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// zstd of the whole file.
    Whole,
    /// zstd of a fast_rsync delta against the base epoch's file of the same name.
    Delta,
}

/// Sent by the shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataReply {
    /// Go ahead.
    Accept {
        /// Whether the shadow holds the offered base epoch (else send every file whole).
        have_base: bool,
    },
    /// Send these files again, whole: they did not match the manifest.
    Resend {
        /// File names.
        names: Vec<String>,
    },
    /// The post-copy images are staged; the page-server connection follows.
    Staged,
    /// The epoch is committed.
    Committed {
        /// Its number.
        epoch: u64,
    },
    /// The offer or epoch is refused; nothing was committed.
    Refused {
        /// Why.
        reason: String,
    },
}
