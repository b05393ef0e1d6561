//! `soak [MINUTES] [SEED]`: the randomised fault soak (tests/src/soak.rs) for a while,
//! on namespace hosts with the workspace's binaries (run as root, after
//! `cargo build --workspace --bins`). Prints the seed first, the faults as it makes them,
//! and exits 1 naming the invariant that broke.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test program

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("soak: seed {seed}, {minutes} minutes");
    match understudy_tests::soak::run(seed, Duration::from_secs_f64(minutes * 60.0)) {
        Ok(report) => {
            for f in &report.faults {
                println!("  {f}");
            }
            println!(
                "soak: seed {seed}: {} faults, {} checks, moves {:?}: every invariant held",
                report.faults.len(),
                report.checks,
                report.moves
            );
        }
        Err(e) => {
            println!("soak: seed {seed}: FAILED: {e}");
            std::process::exit(1);
        }
    }
}
