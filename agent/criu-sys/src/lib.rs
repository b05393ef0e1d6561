//! Bindings to libcriu, CRIU's C library, and a small safe wrapper around them.
//!
//! [`bindings`] holds the raw bindgen output. Everything else is the safe
//! API: build a [`DumpOptions`] or [`RestoreOptions`] and hand it to a
//! [`Criu`], which talks to a CRIU service binary (`criu swrk`) for each
//! call. This is the only crate of the workspace allowed to use `unsafe`;
//! every `unsafe` block carries a `// SAFETY:` comment.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::dbg_macro,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    unsafe_op_in_unsafe_fn,
    missing_docs,
    missing_debug_implementations
)]

pub mod bindings;
mod criu;
mod error;
mod fds;
mod handle;
mod lazy;
mod lock;
mod log;
mod notify;
mod options;

pub use criu::Criu;
pub use error::CriuError;
pub use options::{DumpOptions, NetworkLock, PageServer, RestoreOptions};
