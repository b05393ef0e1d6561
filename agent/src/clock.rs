//! Wall-clock time as the agent records it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
