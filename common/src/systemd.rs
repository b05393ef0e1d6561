//! What a long-running process tells systemd when its unit is `Type=notify`: that it is
//! ready, that it is alive (`WatchdogSec=`), and that it is stopping (sd_notify(3)). Where
//! systemd did not start the process (no `NOTIFY_SOCKET`) every call does nothing.
//!
//! The variables stay in this process's environment (each message reads the socket's
//! address from it); processes that start workloads remove them with [`forget`] so that
//! no workload inherits them.

use std::time::Duration;

use sd_notify::NotifyState;

/// The variables systemd hands a `Type=notify` service.
const VARIABLES: [&str; 4] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
];

/// Tells systemd the service is up, with `status` for `systemctl status`.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!("could not tell systemd the service is ready: {e}");
    }
}

/// Tells systemd the service is stopping (a drain follows).
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// How often to tell systemd the service is alive: a third of `WatchdogSec`, or `None`
/// where no watchdog is set for this process.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 3))
    } else {
        None
    }
}

/// Tells systemd the service is alive every third of `WatchdogSec`, as long as `alive`
/// answers: it runs on the async runtime and takes whatever locks the service's work
/// takes, so a runtime or a lock that stops answering stops the pings, and systemd kills
/// and restarts the service. Returns `None` where no watchdog is set.
pub fn spawn_watchdog<F>(alive: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> bool + Send + 'static,
{
    let period = watchdog_period()?;
    tracing::info!(?period, "telling systemd's watchdog the service is alive");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if alive() {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
        }
    }))
}

/// Removes systemd's variables from this process's environment; for a process that is
/// about to start a workload (which must not talk to the agent's unit) and has no other
/// threads reading the environment.
pub fn forget() {
    for v in VARIABLES {
        std::env::remove_var(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, as it sets this process's environment.
    #[test]
    fn readiness_and_the_watchdog_period_reach_the_socket_systemd_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "3000000");
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        assert_eq!(watchdog_period(), Some(Duration::from_secs(1)));
        ready("serving");
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving\n");
        // Another process's watchdog is not this one's.
        std::env::set_var("WATCHDOG_PID", "1");
        assert_eq!(watchdog_period(), None);
        forget();
        assert!(std::env::var_os("NOTIFY_SOCKET").is_none());
        assert_eq!(watchdog_period(), None);
        stopping(); // nowhere to send it: no error, no message
        socket.set_nonblocking(true).unwrap();
        assert!(
            socket.recv(&mut buf).is_err(),
            "nothing sent once forgotten"
        );
    }
}
