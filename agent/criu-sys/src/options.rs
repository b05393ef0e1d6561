//! The plain-data option structs for dump and restore, and their defaults.

use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::bindings;

/// How CRIU locks the network of the dumped/restored tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkLock {
    /// `iptables` rules (needs the iptables binary on the host).
    Iptables,
    /// An nftables table, set up in-process by CRIU.
    #[default]
    Nftables,
    /// No locking.
    Skip,
}

impl NetworkLock {
    pub(crate) fn raw(self) -> bindings::criu_network_lock_method {
        match self {
            Self::Iptables => bindings::CRIU_NETWORK_LOCK_IPTABLES,
            Self::Nftables => bindings::CRIU_NETWORK_LOCK_NFTABLES,
            Self::Skip => bindings::CRIU_NETWORK_LOCK_SKIP,
        }
    }
}

/// Options for [`Criu::dump`](crate::Criu::dump) and
/// [`Criu::pre_dump`](crate::Criu::pre_dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOptions {
    /// Root of the process tree to dump.
    pub pid: i32,
    /// Where the images go (must exist); opened as a directory fd for CRIU.
    pub images_dir: PathBuf,
    /// Resume the tree after dumping instead of killing it.
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Drop connections still in a listener's accept queue instead of failing the dump
    /// (`--skip-in-flight`): their clients see a reset and connect again.
    pub tcp_skip_in_flight: bool,
    /// Allow external unix socket peers.
    pub ext_unix_sk: bool,
    /// Dump file locks.
    pub file_locks: bool,
    /// The tree is a shell job (its session/pgid come from outside).
    pub shell_job: bool,
    /// Track memory changes (soft-dirty) for incremental dumps.
    pub track_mem: bool,
    /// Images of the previous pre-dump, relative to `images_dir`, for chains.
    pub parent_images: Option<String>,
    /// How to lock the network.
    pub network_lock: NetworkLock,
    /// Log file name, written inside `images_dir` (no `/` allowed).
    pub log_file: String,
    /// CRIU log level, 0..=4.
    pub log_level: i32,
    /// `--external` entries (`criu_local_add_external`).
    pub external: Vec<String>,
    /// External mounts as `(key, value)` (`criu_local_add_ext_mount`): on dump the
    /// mount point and the name it is given in the images.
    pub ext_mounts: Vec<(String, String)>,
    /// Treat mounts of the tree's mount namespace that CRIU can find in its own
    /// namespace as external bind mounts, with external sharing and masters allowed
    /// (`--ext-mount-map auto --enable-external-sharing --enable-external-masters`).
    pub auto_external_mounts: bool,
    /// Largest deleted-but-open file whose content goes into the images, bytes.
    pub ghost_limit: Option<u32>,
    /// Post-copy: leave the memory out of the images and serve it from this page server
    /// once they are written (`--lazy-pages --address --port`). The dump returns only once
    /// a `criu lazy-pages` daemon has taken every page (or the transfer failed); the tree
    /// stays frozen until then, and is killed after a complete transfer, resumed after a
    /// failed one (so a caller that must not let it run on fences it, e.g. with a pending
    /// `SIGSTOP` sent at the `post-dump` notification).
    pub lazy_pages: Option<PageServer>,
}

/// Where a post-copy dump serves its memory, and where a `criu lazy-pages` daemon fetches
/// it from. CRIU speaks plain TCP here: keep it on the loopback and carry it further over
/// an authenticated channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageServer {
    /// The address to listen on (dump) or connect to (daemon).
    pub address: String,
    /// The TCP port.
    pub port: u16,
}

impl Default for DumpOptions {
    fn default() -> Self {
        Self {
            pid: 0,
            images_dir: PathBuf::new(),
            leave_running: false,
            tcp_established: false,
            tcp_skip_in_flight: false,
            ext_unix_sk: false,
            file_locks: false,
            shell_job: false,
            track_mem: false,
            parent_images: None,
            network_lock: NetworkLock::Nftables,
            log_file: "dump.log".into(),
            log_level: 4,
            external: Vec::new(),
            ext_mounts: Vec::new(),
            auto_external_mounts: false,
            ghost_limit: None,
            lazy_pages: None,
        }
    }
}

/// Options for [`Criu::restore_child`](crate::Criu::restore_child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Where the images are; opened as a directory fd for CRIU.
    pub images_dir: PathBuf,
    /// Restore established TCP connections.
    pub tcp_established: bool,
    /// Restore TCP sockets closed.
    pub tcp_close: bool,
    /// Allow external unix socket peers.
    pub ext_unix_sk: bool,
    /// Restore file locks.
    pub file_locks: bool,
    /// The tree is a shell job.
    pub shell_job: bool,
    /// How to lock the network.
    pub network_lock: NetworkLock,
    /// Log file name, written inside `images_dir` (no `/` allowed).
    pub log_file: String,
    /// CRIU log level, 0..=4.
    pub log_level: i32,
    /// `(fd, key)` pairs (`criu_local_add_inherit_fd`), e.g. `(3, "pipe:[12345]")`.
    /// The fds are made inheritable (`FD_CLOEXEC` cleared) for the duration of the call.
    pub inherit_fds: Vec<(RawFd, String)>,
    /// External mounts as `(key, value)` (`criu_local_add_ext_mount`): on restore the
    /// name given at dump and the host directory to bind-mount in its place.
    pub ext_mounts: Vec<(String, String)>,
    /// `--external` entries (`criu_local_add_external`).
    pub external: Vec<String>,
    /// As in [`DumpOptions::auto_external_mounts`].
    pub auto_external_mounts: bool,
    /// Root directory of a restored mount namespace (`--root`).
    pub root: Option<PathBuf>,
    /// Leave the restored tasks in the restoring process's cgroups instead of recreating
    /// the ones recorded at dump (`--manage-cgroups=ignore`); the caller places them.
    pub ignore_cgroups: bool,
    /// Post-copy: the images hold no memory of the tree; a `criu lazy-pages` daemon started
    /// on `images_dir` (see [`Criu::lazy_pages_daemon`](crate::Criu::lazy_pages_daemon))
    /// fills it in as the tree touches it and in the background.
    pub lazy_pages: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            images_dir: PathBuf::new(),
            tcp_established: false,
            tcp_close: false,
            ext_unix_sk: false,
            file_locks: false,
            shell_job: false,
            network_lock: NetworkLock::Nftables,
            log_file: "restore.log".into(),
            log_level: 4,
            inherit_fds: Vec::new(),
            ext_mounts: Vec::new(),
            external: Vec::new(),
            auto_external_mounts: false,
            root: None,
            ignore_cgroups: false,
            lazy_pages: false,
        }
    }
}
