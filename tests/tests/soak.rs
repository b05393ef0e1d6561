//! The randomised fault soak (tests/src/soak.rs), three minutes of it: agents and the
//! coordinator killed and restarted, links cut and healed, hosts partitioned from the
//! coordinator, migrations at random moments; never two running copies, nothing counted
//! lost beyond the recovery point, and everything running where the record says once the
//! faults stop. The seed is printed (UNDERSTUDY_SOAK_SEED replays one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_tests::{require_criu, require_e2e};

#[test]
fn three_minutes_of_random_faults_keep_every_invariant() {
    require_e2e!();
    require_criu!();
    let seed: u64 = std::env::var("UNDERSTUDY_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("soak seed {seed} (UNDERSTUDY_SOAK_SEED={seed} replays it)");
    match understudy_tests::soak::run(seed, Duration::from_secs(180)) {
        Ok(report) => {
            for f in &report.faults {
                eprintln!("  {f}");
            }
            eprintln!(
                "soak seed {seed}: {} faults, {} checks, moves {:?}",
                report.faults.len(),
                report.checks,
                report.moves
            );
            assert!(report.faults.len() >= 10, "too few faults to mean anything");
        }
        Err(e) => panic!("soak seed {seed}: {e}"),
    }
}
