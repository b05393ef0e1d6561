//! Dumps in memory-backed scratch space: a primary whose scratch space (a tmpfs) becomes too
//! small for its workload's dump says so in the workload's record, the workload keeps
//! running and the shadow keeps its last epoch; given room again, epochs resume.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::time::Duration;

use understudy_tests::cluster::Cluster;
use understudy_tests::copies::{advancing, create_counter};
use understudy_tests::tmpfs::Tmpfs;
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

/// Files in `dir` and below.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn a_scratch_space_too_small_for_the_dump_says_so_and_loses_nothing() {
    require_e2e!();
    require_criu!();
    let hosts = ["host-a", "host-b"];
    let c = Cluster::new(&hosts);
    // host-a's scratch space is a file system of its own, which can be made too small.
    let tmpfs = Tmpfs::mount(&c.scratch_dir("host-a"), "256m");
    c.start_coordinator();
    for h in hosts {
        c.start_agent(h);
    }
    c.wait_connected(hosts.len());
    create_counter(&c, "tight", "host-a", "host-b", "500ms");
    let before = c.wait_for_epochs("tight", 2);
    // The dumps went to the scratch space, not the disk, and are gone once committed.
    assert!(
        c.log("host-a").contains("memory-backed scratch space"),
        "{}",
        c.log("host-a")
    );
    assert_eq!(
        files_under(&c.host_dir("host-a").join("data/workloads/tight/primary")),
        0,
        "a dump was written under the data directory"
    );

    tmpfs.resize("1m");
    let w = eventually(
        "the record says why epochs stopped",
        Duration::from_secs(30),
        || {
            let w = c.workload("tight")?;
            match &w.unprotected {
                Some(why) if why.contains("scratch space") && why.contains("does not fit") => Ok(w),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let last = w.last_epoch.clone().unwrap();
    assert!(last.epoch >= before.last_epoch.clone().unwrap().epoch);
    advancing(&c, "host-a", "tight");
    // The shadow keeps its last committed epoch, and no new one arrives.
    std::thread::sleep(Duration::from_secs(2));
    let still = c.workload("tight").unwrap();
    assert_eq!(
        still.last_epoch.as_ref().map(|e| e.epoch),
        Some(last.epoch),
        "an epoch committed without room to dump it"
    );
    let shadow = c
        .host_dir("host-b")
        .join(format!("data/workloads/tight/shadow/epoch-{}", last.epoch));
    assert!(shadow.join("manifest.bin").exists(), "{}", shadow.display());

    tmpfs.resize("256m");
    eventually("epochs resume with room", Duration::from_secs(30), || {
        let w = c.workload("tight")?;
        match (&w.last_epoch, &w.unprotected) {
            (Some(e), None) if e.epoch > last.epoch => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    advancing(&c, "host-a", "tight");
}
