//! `decisions` benchmark:
//!
//! - `decisions cost [TICKS]`: the engine's cost per tick on a fabricated fleet of 1,000
//!   hosts and 10,000 workloads (default 200 ticks);
//! - `decisions needless [SMD_DIR ASD_DIR]`: normal telemetry (the second halves of the
//!   SMD and ASD train files) replayed through the agent's detector and health assessment
//!   into the engine: the moves it would make, none of them needed;
//! - `decisions lead [RUNS]`: faults on namespace hosts with real binaries and CRIU
//!   (default 10 runs of each): from onset to the workload answering on its new host, and
//!   how long before the failure point the move finished.
//!
//! With no argument, `cost` and `needless` (`lead` needs root, CRIU and half an hour).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark program

mod cost;
mod lead;
mod needless;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("cost") => cost::run(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200)),
        Some("lead") => lead::run(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10)),
        Some("needless") => needless::run(args.get(1).map(Into::into), args.get(2).map(Into::into)),
        None => {
            cost::run(200);
            needless::run(None, None);
        }
        Some(other) => {
            eprintln!("decisions: unknown part {other:?} (cost, needless, lead)");
            std::process::exit(64);
        }
    }
}
