//! The one shutdown root of a process: the first SIGTERM or SIGINT starts a bounded drain,
//! a second one exits at once.

use tokio::signal::unix::{signal, SignalKind};

/// Exit code used when a second signal cuts the drain short.
pub const FORCED_EXIT: i32 = 130;

/// Waits for the first SIGTERM or SIGINT; after it returns, a second signal exits the
/// process immediately with [`FORCED_EXIT`].
pub async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal received, exiting without draining");
        std::process::exit(FORCED_EXIT);
    });
    Ok(())
}

/// Sets up logging to stderr, `info` by default, overridable with `RUST_LOG`.
pub fn init_logging() {
    // Fails only if a subscriber is already set (as in tests), which is fine to ignore.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
