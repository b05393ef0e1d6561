//! The notify-callback trampoline. libcriu's callback gets no user-data
//! pointer, so the Rust closure is parked in a thread-local for the duration
//! of the libcriu call, which invokes the callback on the calling thread.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CStr};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::bindings::criu_notify_arg_t;

/// A notify callback with its borrow's lifetime erased; only ever
/// dereferenced while [`with_callback`] (which holds the borrow) runs.
type Callback = dyn FnMut(&str) -> bool + 'static;

thread_local! {
    /// The active callback; taken out while it runs (no aliasing `&mut`).
    static ACTIVE: Cell<Option<NonNull<Callback>>> = const { Cell::new(None) };
    /// The action the callback refused (returned false or panicked on).
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A panic caught in the callback, to resume once libcriu has returned.
    static PANIC: RefCell<Option<Box<dyn Any + Send>>> = const { RefCell::new(None) };
}

/// What libcriu gets back for a refused action: non-zero fails the
/// operation, and negative keeps `criu_local_dump`'s result negative
/// (a positive one would mean "restored").
const REFUSE: c_int = -libc::ECANCELED;

/// Puts the previous callback back, also when `body` unwinds.
struct Restore(Option<NonNull<Callback>>);

impl Drop for Restore {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// Runs `body` (a libcriu call whose options have [`trampoline`] as notify
/// callback) with `cb` as this thread's callback. Returns `body`'s result
/// and the action `cb` refused, if any. A panic in `cb` is resumed here.
pub(crate) fn with_callback<R>(
    cb: &mut dyn FnMut(&str) -> bool,
    body: impl FnOnce() -> R,
) -> (R, Option<String>) {
    let short: NonNull<dyn FnMut(&str) -> bool + '_> = NonNull::from(cb);
    // SAFETY: only the trait object's lifetime bound changes (same layout).
    // The pointer is reachable through ACTIVE only until `_restore` drops at
    // the end of this function, while `cb`'s borrow is still held.
    let erased: NonNull<Callback> = unsafe { std::mem::transmute(short) };
    let _restore = Restore(ACTIVE.with(|a| a.replace(Some(erased))));
    REFUSED.with(|r| r.borrow_mut().take());
    let result = body();
    let refused = REFUSED.with(|r| r.borrow_mut().take());
    if let Some(payload) = PANIC.with(|p| p.borrow_mut().take()) {
        panic::resume_unwind(payload);
    }
    (result, refused)
}

/// The C callback given to `criu_local_set_notify_cb`.
///
/// # Safety
///
/// `action` must be NULL or a NUL-terminated string valid for the call, as
/// libcriu passes it.
pub(crate) unsafe extern "C" fn trampoline(action: *mut c_char, _na: criu_notify_arg_t) -> c_int {
    let action = if action.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL, and NUL-terminated and alive per this fn's contract.
        unsafe { CStr::from_ptr(action) }
            .to_string_lossy()
            .into_owned()
    };
    let Some(mut cb) = ACTIVE.with(Cell::take) else {
        return 0; // No Rust callback installed: acknowledge.
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `cb` was installed by `with_callback`, which is still on
        // this thread's stack holding the closure's `&mut` borrow; it was
        // taken out of ACTIVE, so this is the only live reference.
        let f = unsafe { cb.as_mut() };
        f(&action)
    }));
    ACTIVE.with(|a| a.set(Some(cb)));
    match outcome {
        Ok(true) => 0,
        Ok(false) => {
            REFUSED.with(|r| *r.borrow_mut() = Some(action));
            REFUSE
        }
        Err(payload) => {
            REFUSED.with(|r| *r.borrow_mut() = Some(action));
            PANIC.with(|p| *p.borrow_mut() = Some(payload));
            REFUSE
        }
    }
}
