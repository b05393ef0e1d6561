//! Stopping a workload's tree for good: at once (SIGKILL to the PID namespace's init), or
//! as a service manager would (the spec's stop signal, its stop timeout, then SIGKILL),
//! waiting until it is gone.

use std::time::{Duration, Instant};

use understudy_common::workload::WorkloadSpec;

use crate::workload::process::Running;

/// How long a killed tree may take to be gone before the stop counts as failed.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Stops `running` (`spec`'s tree), `graceful`ly or not. Errors if it would not die.
pub async fn stop(running: &Running, spec: &WorkloadSpec, graceful: bool) -> Result<(), String> {
    if graceful {
        running.expect_exit();
        if let Some(sig) = understudy_common::workload::stop_signal_number(&spec.stop_signal) {
            running.signal(sig);
        }
        let limit = Duration::from_millis(spec.stop_timeout_ms);
        let started = Instant::now();
        while running.is_alive() && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if running.is_alive() {
            tracing::warn!(
                workload = %spec.name,
                "still running {limit:?} after {}: killing it",
                spec.stop_signal
            );
        }
    }
    running.kill();
    let started = Instant::now();
    while running.is_alive() {
        if started.elapsed() > STOP_LIMIT {
            return Err(format!(
                "{:?} (pid {}) did not stop within {STOP_LIMIT:?}",
                spec.name, running.pid
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
