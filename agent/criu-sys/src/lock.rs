//! The process-wide lock around libcriu operation calls.
//!
//! libcriu keeps one unsynchronised global (`saved_errno`) that every
//! operation writes, so two operations on different threads would race on
//! it. Operations are therefore serialised. The lock is re-entrant per
//! thread, so a notify callback may itself call into [`Criu`](crate::Criu).

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

static LIBCRIU: Mutex<()> = Mutex::new(());

thread_local! {
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Clears this thread's "held" mark, also when `f` unwinds.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        HELD.with(|h| h.set(false));
    }
}

/// Runs `f` holding the libcriu lock.
pub(crate) fn with_libcriu<R>(f: impl FnOnce() -> R) -> R {
    if HELD.with(Cell::get) {
        return f(); // Nested call from a notify callback on this thread.
    }
    // A panic elsewhere while holding `()` leaves nothing inconsistent.
    let _guard = LIBCRIU.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.with(|h| h.set(true));
    let _release = Release;
    f()
}
