//! [`OptsHandle`]: owns one libcriu `criu_opts` (freed on drop) and offers
//! checked setters for it. All raw option-setting FFI lives here.

use std::ffi::{c_char, c_int, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use crate::bindings::{self, criu_opts};
use crate::CriuError;

type FlagSetter = unsafe extern "C" fn(*mut criu_opts, bool);
type StrSetter = unsafe extern "C" fn(*mut criu_opts, *const c_char) -> c_int;
type PairSetter = unsafe extern "C" fn(*mut criu_opts, *const c_char, *const c_char) -> c_int;

/// A `criu_opts` set up to run `service_binary` (`criu swrk`) for one
/// operation. Not `Send`: libcriu keeps no locks.
#[derive(Debug)]
pub(crate) struct OptsHandle {
    ptr: NonNull<criu_opts>,
    op: &'static str,
}

impl OptsHandle {
    /// Initialises the options and points them at `service_binary`.
    pub(crate) fn new(op: &'static str, service_binary: &Path) -> Result<Self, CriuError> {
        let mut raw: *mut criu_opts = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer holding NULL, which
        // criu_local_init_opts frees (a no-op) before storing a fresh allocation.
        let rc = unsafe { bindings::criu_local_init_opts(&mut raw) };
        let ptr = match NonNull::new(raw) {
            Some(ptr) if rc == 0 => ptr,
            _ => {
                return Err(CriuError::Setup {
                    op,
                    call: "criu_local_init_opts",
                    code: rc,
                })
            }
        };
        // From here on Drop frees the options on every path.
        let mut handle = Self { ptr, op };
        let bin = handle.c_string("service binary", service_binary.as_os_str().as_bytes())?;
        handle.set_str(
            "criu_local_set_service_binary",
            bindings::criu_local_set_service_binary,
            &bin,
        )?;
        Ok(handle)
    }

    /// The raw pointer, for the operation calls themselves.
    pub(crate) fn as_ptr(&mut self) -> *mut criu_opts {
        self.ptr.as_ptr()
    }

    /// A C string for `what`, or an error if `value` has a NUL byte.
    pub(crate) fn c_string(&self, what: &'static str, value: &[u8]) -> Result<CString, CriuError> {
        CString::new(value).map_err(|_| CriuError::InvalidOption {
            op: self.op,
            what,
            value: String::from_utf8_lossy(value).into_owned(),
            problem: "contains a NUL byte",
        })
    }

    fn check(&self, call: &'static str, rc: c_int) -> Result<(), CriuError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(CriuError::Setup {
                op: self.op,
                call,
                code: rc,
            })
        }
    }

    /// Calls a `void criu_local_set_*(opts, bool)` setter.
    pub(crate) fn set_flag(&mut self, setter: FlagSetter, value: bool) {
        // SAFETY: `setter` is one of libcriu's boolean setters, which only
        // store `value` into the live options `self.ptr` owns.
        unsafe { setter(self.ptr.as_ptr(), value) }
    }

    /// Calls an `int criu_local_*(opts, const char *)` setter and checks it.
    pub(crate) fn set_str(
        &mut self,
        call: &'static str,
        setter: StrSetter,
        value: &CString,
    ) -> Result<(), CriuError> {
        // SAFETY: `setter` is a libcriu string setter; it strdup()s the
        // NUL-terminated `value` (alive for the call) into the live options.
        let rc = unsafe { setter(self.ptr.as_ptr(), value.as_ptr()) };
        self.check(call, rc)
    }

    /// Calls an `int criu_local_*(opts, const char *, const char *)` adder and checks it.
    pub(crate) fn add_pair(
        &mut self,
        call: &'static str,
        setter: PairSetter,
        key: &CString,
        value: &CString,
    ) -> Result<(), CriuError> {
        // SAFETY: as in `set_str`, for two strings that outlive the call.
        let rc = unsafe { setter(self.ptr.as_ptr(), key.as_ptr(), value.as_ptr()) };
        self.check(call, rc)
    }

    pub(crate) fn set_pid(&mut self, pid: i32) {
        // SAFETY: stores an int into the live options.
        unsafe { bindings::criu_local_set_pid(self.ptr.as_ptr(), pid) }
    }

    /// `fd` must stay open until the operation has run; CRIU opens it as
    /// `/proc/<our pid>/fd/<fd>`, so it need not be inheritable.
    pub(crate) fn set_images_dir_fd(&mut self, fd: c_int) {
        // SAFETY: stores an int into the live options.
        unsafe { bindings::criu_local_set_images_dir_fd(self.ptr.as_ptr(), fd) }
    }

    pub(crate) fn set_ghost_limit(&mut self, limit: u32) {
        // SAFETY: stores an int into the live options.
        unsafe { bindings::criu_local_set_ghost_limit(self.ptr.as_ptr(), limit) }
    }

    pub(crate) fn set_log_level(&mut self, level: i32) {
        // SAFETY: stores an int into the live options.
        unsafe { bindings::criu_local_set_log_level(self.ptr.as_ptr(), level) }
    }

    pub(crate) fn set_network_lock(
        &mut self,
        method: bindings::criu_network_lock_method,
    ) -> Result<(), CriuError> {
        // SAFETY: stores a valid enum value into the live options.
        let rc = unsafe { bindings::criu_local_set_network_lock(self.ptr.as_ptr(), method) };
        self.check("criu_local_set_network_lock", rc)
    }

    pub(crate) fn add_inherit_fd(&mut self, fd: c_int, key: &CString) -> Result<(), CriuError> {
        // SAFETY: libcriu copies `fd` and strdup()s `key` into the live options.
        let rc =
            unsafe { bindings::criu_local_add_inherit_fd(self.ptr.as_ptr(), fd, key.as_ptr()) };
        self.check("criu_local_add_inherit_fd", rc)
    }

    /// Installs (or clears) the notify callback.
    pub(crate) fn set_notify_cb(
        &mut self,
        cb: Option<unsafe extern "C" fn(*mut c_char, bindings::criu_notify_arg_t) -> c_int>,
    ) {
        // SAFETY: stores the function pointer into the live options; libcriu
        // calls it only from within this handle's operation calls.
        unsafe { bindings::criu_local_set_notify_cb(self.ptr.as_ptr(), cb) }
    }
}

impl Drop for OptsHandle {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from criu_local_init_opts, is owned solely
        // by this handle and is never used after this.
        unsafe { bindings::criu_local_free_opts(self.ptr.as_ptr()) }
    }
}
