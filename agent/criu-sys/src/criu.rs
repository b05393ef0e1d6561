//! [`Criu`]: the safe entry point. Each call builds a libcriu options handle
//! from a [`DumpOptions`]/[`RestoreOptions`], runs one operation through the
//! CRIU service binary (`<binary> swrk <fd>`) and maps failures to
//! [`CriuError`].

use std::ffi::c_int;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::bindings;
use crate::fds::{open_images_dir, InheritGuard};
use crate::handle::OptsHandle;
use crate::lazy::{self, ConfigFile};
use crate::lock::with_libcriu;
use crate::log::failure_reason;
use crate::notify::{trampoline, with_callback};
use crate::{CriuError, DumpOptions, NetworkLock, PageServer, RestoreOptions};

/// The CRIU service binary found at build time (may be empty).
const DEFAULT_BIN: &str = env!("CRIU_DEFAULT_BIN");

/// A CRIU service binary to run operations with. Cheap to clone; holds no
/// resources between calls. Operations of all `Criu`s in a process are
/// serialised (libcriu has unsynchronised global state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criu {
    service_binary: PathBuf,
}

impl Criu {
    /// Uses `service_binary` (run as `<binary> swrk <fd>`; looked up in
    /// `PATH` if it has no `/`).
    pub fn new(service_binary: impl Into<PathBuf>) -> Self {
        Self {
            service_binary: service_binary.into(),
        }
    }

    /// `CRIU_BIN` from the environment if set, else the binary found at build
    /// time (`CRIU_DEFAULT_BIN`, if it still exists), else an error.
    pub fn from_env() -> Result<Self, CriuError> {
        if let Some(bin) = std::env::var_os("CRIU_BIN").filter(|b| !b.is_empty()) {
            return Ok(Self::new(bin));
        }
        if !DEFAULT_BIN.is_empty() && Path::new(DEFAULT_BIN).exists() {
            return Ok(Self::new(DEFAULT_BIN));
        }
        Err(CriuError::NoServiceBinary)
    }

    /// The service binary this runs.
    pub fn service_binary(&self) -> &Path {
        &self.service_binary
    }

    /// The `criu lazy-pages` daemon that feeds a lazy restore of `images_dir` (see
    /// [`RestoreOptions::lazy_pages`]) from the page server at `server`, logging to
    /// `log_file` inside `images_dir`. Spawn it before the restore; it exits 0 once every
    /// page is in, non-zero when the transfer failed (the restored tree is then missing
    /// memory and must not run on).
    pub fn lazy_pages_daemon(
        &self,
        images_dir: &Path,
        server: &PageServer,
        log_file: &str,
    ) -> std::process::Command {
        lazy::daemon(&self.service_binary, images_dir, server, log_file)
    }

    /// Dumps the tree rooted at `opts.pid` into `opts.images_dir`.
    pub fn dump(&self, opts: &DumpOptions) -> Result<(), CriuError> {
        self.run_dump("dump", bindings::criu_local_dump, opts, None)
    }

    /// Like [`dump`](Self::dump), calling `notify` with each CRIU notify
    /// action (`"pre-dump"`, `"network-lock"`, `"post-dump"`...) as it
    /// happens. Returning `false` makes CRIU fail the dump. A panic in
    /// `notify` fails the dump and is resumed once CRIU has finished.
    pub fn dump_with_notify(
        &self,
        opts: &DumpOptions,
        notify: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(), CriuError> {
        self.run_dump("dump", bindings::criu_local_dump, opts, Some(notify))
    }

    /// A pre-dump (memory only, the tree keeps running) for an incremental
    /// chain: later dumps name it in `parent_images`. CRIU enforces memory
    /// tracking here, so check [`feature_mem_track`](Self::feature_mem_track)
    /// first: without soft-dirty support CRIU 4.2 fails (with a `BUG`).
    pub fn pre_dump(&self, opts: &DumpOptions) -> Result<(), CriuError> {
        self.run_dump("pre-dump", bindings::criu_local_pre_dump, opts, None)
    }

    /// Restores the tree in `opts.images_dir` so that its root becomes a child
    /// of the calling process (which must reap it); returns the root's pid.
    pub fn restore_child(&self, opts: &RestoreOptions) -> Result<i32, CriuError> {
        let op = "restore";
        let dir = open_images_dir(op, &opts.images_dir)?;
        let log_path = prepare_log(op, &opts.images_dir, &opts.log_file)?;
        let mut h = OptsHandle::new(op, &self.service_binary)?;
        h.set_images_dir_fd(dir.as_raw_fd());
        h.set_flag(
            bindings::criu_local_set_tcp_established,
            opts.tcp_established,
        );
        h.set_flag(bindings::criu_local_set_tcp_close, opts.tcp_close);
        h.set_flag(bindings::criu_local_set_ext_unix_sk, opts.ext_unix_sk);
        h.set_flag(bindings::criu_local_set_file_locks, opts.file_locks);
        h.set_flag(bindings::criu_local_set_shell_job, opts.shell_job);
        if opts.ignore_cgroups {
            // libcriu maps `manage_cgroups = false` to CRIU's `ignore` mode.
            h.set_flag(bindings::criu_local_set_manage_cgroups, false);
        }
        apply_common(
            &mut h,
            &opts.log_file,
            opts.log_level,
            opts.network_lock,
            &opts.external,
            &opts.ext_mounts,
        )?;
        set_auto_external_mounts(&mut h, opts.auto_external_mounts);
        let config = if opts.lazy_pages {
            Some(ConfigFile::write(
                op,
                &opts.images_dir,
                &lazy::restore_lines(),
            )?)
        } else {
            None
        };
        if let Some(config) = &config {
            set_config_file(&mut h, config)?;
        }
        if let Some(root) = &opts.root {
            let root = h.c_string("root", root.as_os_str().as_encoded_bytes())?;
            h.set_str("criu_local_set_root", bindings::criu_local_set_root, &root)?;
        }
        for (fd, key) in &opts.inherit_fds {
            let key = h.c_string("inherit fd key", key.as_bytes())?;
            h.add_inherit_fd(*fd, &key)?;
        }
        let fds: Vec<_> = opts.inherit_fds.iter().map(|(fd, _)| *fd).collect();
        let (rc, errno) = with_libcriu(|| -> Result<_, CriuError> {
            let _inherit = InheritGuard::new(op, &fds)?;
            // SAFETY: `h` holds fully initialised options and the images dir
            // fd (`dir`) stays open until after the call. The inherited fds
            // are plain numbers to libcriu: a bad one fails the restore.
            let rc = unsafe { bindings::criu_local_restore_child(h.as_ptr()) };
            Ok((rc, io::Error::last_os_error()))
        })?;
        drop(dir);
        if rc > 0 {
            Ok(rc)
        } else {
            Err(self.failure(op, rc, log_path.as_deref(), None, errno))
        }
    }

    /// The version of the service binary, as `major * 10000 + minor * 100 + sublevel`.
    pub fn version(&self) -> Result<i32, CriuError> {
        let op = "version";
        let mut h = OptsHandle::new(op, &self.service_binary)?;
        let (rc, errno) = with_libcriu(|| {
            // SAFETY: `h` holds fully initialised options.
            let rc = unsafe { bindings::criu_local_get_version(h.as_ptr()) };
            (rc, io::Error::last_os_error())
        });
        if rc > 0 {
            Ok(rc)
        } else {
            Err(self.failure(op, rc, None, None, errno))
        }
    }

    /// Whether memory tracking (soft-dirty, for `track_mem` and pre-dump
    /// chains) works with this CRIU and kernel.
    pub fn feature_mem_track(&self) -> Result<bool, CriuError> {
        let op = "feature-check";
        let mut h = OptsHandle::new(op, &self.service_binary)?;
        let mut features = bindings::criu_feature_check {
            mem_track: true,
            lazy_pages: false,
            pidfd_store: false,
        };
        let (rc, errno) = with_libcriu(|| {
            // SAFETY: `h` holds fully initialised options; `features` is a
            // valid, writable criu_feature_check of exactly the size passed.
            let rc = unsafe {
                bindings::criu_local_feature_check(
                    h.as_ptr(),
                    &mut features,
                    std::mem::size_of::<bindings::criu_feature_check>(),
                )
            };
            (rc, io::Error::last_os_error())
        });
        if rc == 0 {
            Ok(features.mem_track)
        } else {
            Err(self.failure(op, rc, None, None, errno))
        }
    }

    fn run_dump(
        &self,
        op: &'static str,
        operation: unsafe extern "C" fn(*mut bindings::criu_opts) -> c_int,
        opts: &DumpOptions,
        notify: Option<&mut dyn FnMut(&str) -> bool>,
    ) -> Result<(), CriuError> {
        let dir = open_images_dir(op, &opts.images_dir)?;
        let log_path = prepare_log(op, &opts.images_dir, &opts.log_file)?;
        let mut h = OptsHandle::new(op, &self.service_binary)?;
        h.set_pid(opts.pid);
        h.set_images_dir_fd(dir.as_raw_fd());
        h.set_flag(bindings::criu_local_set_leave_running, opts.leave_running);
        h.set_flag(
            bindings::criu_local_set_tcp_established,
            opts.tcp_established,
        );
        h.set_flag(
            bindings::criu_local_set_tcp_skip_in_flight,
            opts.tcp_skip_in_flight,
        );
        h.set_flag(bindings::criu_local_set_ext_unix_sk, opts.ext_unix_sk);
        h.set_flag(bindings::criu_local_set_file_locks, opts.file_locks);
        h.set_flag(bindings::criu_local_set_shell_job, opts.shell_job);
        h.set_flag(bindings::criu_local_set_track_mem, opts.track_mem);
        if let Some(parent) = &opts.parent_images {
            let parent = h.c_string("parent images", parent.as_bytes())?;
            h.set_str(
                "criu_local_set_parent_images",
                bindings::criu_local_set_parent_images,
                &parent,
            )?;
        }
        apply_common(
            &mut h,
            &opts.log_file,
            opts.log_level,
            opts.network_lock,
            &opts.external,
            &opts.ext_mounts,
        )?;
        set_auto_external_mounts(&mut h, opts.auto_external_mounts);
        if let Some(limit) = opts.ghost_limit {
            h.set_ghost_limit(limit);
        }
        let config = match &opts.lazy_pages {
            Some(server) => Some(ConfigFile::write(
                op,
                &opts.images_dir,
                &lazy::dump_lines(server),
            )?),
            None => None,
        };
        if let Some(config) = &config {
            set_config_file(&mut h, config)?;
        }
        let call = |h: &mut OptsHandle| {
            // SAFETY: `operation` is criu_local_dump or criu_local_pre_dump;
            // `h` holds fully initialised options and the images dir fd
            // (`dir`) stays open until after the call. The notify callback,
            // if set, is `trampoline`, which is sound to call at any time.
            let rc = unsafe { operation(h.as_ptr()) };
            (rc, io::Error::last_os_error())
        };
        let ((rc, errno), refused) = with_libcriu(|| match notify {
            Some(cb) => {
                h.set_notify_cb(Some(trampoline));
                with_callback(cb, || call(&mut h))
            }
            None => (call(&mut h), None),
        });
        drop(dir);
        // 0: dumped; 1: dumped and restored (self-dump); < 0: failed.
        if rc >= 0 {
            Ok(())
        } else {
            Err(self.failure(op, rc, log_path.as_deref(), refused, errno))
        }
    }

    fn failure(
        &self,
        op: &'static str,
        code: c_int,
        log_path: Option<&Path>,
        refused: Option<String>,
        errno: io::Error,
    ) -> CriuError {
        let mut reason = failure_reason(code, log_path, &self.service_binary);
        if let Some(action) = refused {
            reason = format!("notify callback refused {action:?}; {reason}");
        }
        // errno means something after CRIU's own failure (its cr_errno) or a
        // failure to start it (-1); after -ECOMM & co it is stale.
        let errno_meaningful = code == -libc::EBADE || code == -1;
        if errno_meaningful && errno.raw_os_error().is_some_and(|e| e != 0) {
            reason = format!("{reason} (errno: {errno})");
        }
        CriuError::Failed { op, code, reason }
    }
}

/// Checks the log file name and removes a stale log of that name, so a
/// failure's reason never comes from an earlier run. `None` if no log.
fn prepare_log(
    op: &'static str,
    images_dir: &Path,
    log_file: &str,
) -> Result<Option<PathBuf>, CriuError> {
    if log_file.is_empty() {
        return Ok(None);
    }
    if log_file.contains('/') || log_file == "." || log_file == ".." {
        return Err(CriuError::InvalidOption {
            op,
            what: "log file",
            value: log_file.into(),
            problem: "must be a plain file name (it is written inside images_dir)",
        });
    }
    let path = images_dir.join(log_file);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CriuError::ImagesDir {
            op,
            path: path.clone(),
            source: e,
        }),
        _ => Ok(Some(path)),
    }
}

/// Names the RPC configuration file in the request.
fn set_config_file(h: &mut OptsHandle, config: &ConfigFile) -> Result<(), CriuError> {
    let path = h.c_string("config file", config.path().as_os_str().as_encoded_bytes())?;
    h.set_str(
        "criu_local_set_config_file",
        bindings::criu_local_set_config_file,
        &path,
    )
}

/// `--ext-mount-map auto` with external sharing and masters allowed, or none of them.
fn set_auto_external_mounts(h: &mut OptsHandle, on: bool) {
    h.set_flag(bindings::criu_local_set_auto_ext_mnt, on);
    h.set_flag(bindings::criu_local_set_ext_sharing, on);
    h.set_flag(bindings::criu_local_set_ext_masters, on);
}

/// Settings shared by dump and restore.
fn apply_common(
    h: &mut OptsHandle,
    log_file: &str,
    log_level: i32,
    network_lock: NetworkLock,
    external: &[String],
    ext_mounts: &[(String, String)],
) -> Result<(), CriuError> {
    if !log_file.is_empty() {
        let log_file = h.c_string("log file", log_file.as_bytes())?;
        h.set_str(
            "criu_local_set_log_file",
            bindings::criu_local_set_log_file,
            &log_file,
        )?;
    }
    h.set_log_level(log_level);
    h.set_network_lock(network_lock.raw())?;
    for key in external {
        let key = h.c_string("external", key.as_bytes())?;
        h.set_str(
            "criu_local_add_external",
            bindings::criu_local_add_external,
            &key,
        )?;
    }
    for (key, val) in ext_mounts {
        let key = h.c_string("ext mount key", key.as_bytes())?;
        let val = h.c_string("ext mount value", val.as_bytes())?;
        h.add_pair(
            "criu_local_add_ext_mount",
            bindings::criu_local_add_ext_mount,
            &key,
            &val,
        )?;
    }
    Ok(())
}
