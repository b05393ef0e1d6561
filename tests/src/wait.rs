//! Polling under a deadline instead of bare sleeps.

use std::time::{Duration, Instant};

/// Calls `check` every 100 ms until it returns `Ok`, or fails after `deadline` with the
/// last error it gave.
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() >= deadline => {
                panic!("{what}: not true after {deadline:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
