//! End to end with real CRIU: faults while capturing or staging data directories never
//! leave a partial epoch, and protection resumes once the fault is gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::time::Duration;

use understudy_common::epoch::Manifest;
use understudy_tests::cluster::Cluster;
use understudy_tests::tmpfs::Tmpfs;
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

fn started_cluster(env_a: &[(&str, &str)]) -> Cluster {
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent_env("host-a", env_a);
    c.start_agent("host-b");
    c.wait_connected(2);
    c
}

fn random_file(path: &Path, bytes: usize) {
    let mut data = vec![0u8; bytes];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(path, data).unwrap();
}

fn newest_epoch_dir(store: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(store)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("epoch-")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .max()
}

#[test]
fn disk_full_on_the_shadow_keeps_the_previous_epoch_and_recovers_when_space_returns() {
    require_e2e!();
    require_criu!();
    let c = started_cluster(&[]);
    let logical = c.logical_dir("full");
    let a = c.data_path("host-a", &logical);
    std::fs::create_dir_all(&a).unwrap();
    random_file(&a.join("small"), 64 << 10);
    // host-b keeps this workload's epochs on a small filesystem of their own.
    let store_fs = c.host_dir("host-b").join("data/workloads/full");
    let tmpfs = Tmpfs::mount(&store_fs, "40m");
    c.create_with_data_dir(
        "full",
        "500ms",
        &logical,
        &["/bin/sh", "-c", "while :; do sleep 1; done"],
    );
    c.wait_for_epochs("full", 2);

    // Written beside the data directory and renamed in, so no epoch sees half of it.
    let outside = a.with_file_name("big.tmp");
    random_file(&outside, 48 << 20);
    std::fs::rename(&outside, a.join("big")).unwrap();
    let why = eventually("shadow shown lagging", Duration::from_secs(20), || match c
        .workload("full")?
        .unprotected
    {
        Some(w) => Ok(w),
        None => Err("still protected".into()),
    });
    assert!(
        why.starts_with("shadow lagging") && why.contains("No space left on device"),
        "{why}"
    );
    let show = String::from_utf8_lossy(&c.cli(&["workload", "show", "full"]).stdout).into_owned();
    assert!(show.contains("shadow lagging"), "{show}");
    // The last committed epoch is whole, and no staging is left behind.
    let store = store_fs.join("shadow");
    let (n, dir) = newest_epoch_dir(&store).expect("a committed epoch");
    Manifest::read_from(&dir).unwrap().verify_dir(&dir).unwrap();
    assert!(
        !dir.join("data/0/big").exists(),
        "epoch {n} has no part of the failed one"
    );
    eventually("staging discarded", Duration::from_secs(5), || {
        let staging = std::fs::read_dir(&store)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".staging"));
        if staging {
            Err("staging left".into())
        } else {
            Ok(())
        }
    });

    tmpfs.resize("256m");
    eventually(
        "epochs resume once space returns",
        Duration::from_secs(30),
        || {
            let w = c.workload("full")?;
            let e = w.last_epoch.ok_or("no epoch")?;
            if w.unprotected.is_none() && e.epoch > n && e.data_bytes >= 48 << 20 {
                Ok(())
            } else {
                Err(format!("epoch {} unprotected {:?}", e.epoch, w.unprotected))
            }
        },
    );
    // And the big file moves with the workload (out of the tmpfs store onto host-b's disk).
    let out = c.cli(&["migrate", "full"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let b = c.data_path("host-b", &logical);
    assert_eq!(std::fs::read(b.join("big")).unwrap().len(), 48 << 20);
}

#[test]
fn a_directory_left_by_an_interrupted_dump_does_not_block_later_epochs() {
    require_e2e!();
    require_criu!();
    // CRIU killed while its parasite held a tree (an agent killed mid-epoch) leaves
    // `proc.crtools` in the working directory of the tree's root, the supervisor's own
    // directory; CRIU then fails every later dump of a tree whose /proc is another PID
    // namespace's ("Can't get /proc fd").
    let c = started_cluster(&[]);
    let leftover = c.trees_dir().join("left/proc.crtools");
    std::fs::create_dir_all(&leftover).unwrap();
    let logical = c.logical_dir("left");
    std::fs::create_dir_all(c.data_path("host-a", &logical)).unwrap();
    c.create_with_data_dir(
        "left",
        "300ms",
        &logical,
        &["/bin/sh", "-c", "while :; do sleep 1; done"],
    );
    let w = c.wait_for_epochs("left", 2);
    assert!(w.unprotected.is_none(), "{:?}", w.unprotected);
    assert!(!leftover.exists(), "the leftover directory is still there");
}

/// Removes a directory when dropped, also when the test fails.
struct RemovedAtEnd(&'static Path);

impl Drop for RemovedAtEnd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

#[test]
fn another_trees_dump_in_progress_does_not_fail_this_trees_epochs_or_move() {
    require_e2e!();
    require_criu!();
    // While CRIU dumps a tree it keeps `proc.crtools` in the working directory of the
    // tree's root. Trees that shared `/` failed each other's dumps when two dumped at once
    // (seen as "Can't get proc fd" failing a move in CI). Here `/` holds one that is not
    // ours (not empty, so nothing removes it), as another tree's dump would: a tree with and
    // one without its own mount namespace are still dumped, and one moves and goes on.
    let theirs = Path::new("/proc.crtools");
    std::fs::create_dir_all(theirs.join("busy")).unwrap();
    let _cleanup = RemovedAtEnd(theirs);
    let c = started_cluster(&[]);
    let logical = c.logical_dir("shared-cwd");
    std::fs::create_dir_all(c.data_path("host-a", &logical)).unwrap();
    c.create_with_data_dir(
        "shared-cwd",
        "300ms",
        &logical,
        &["/bin/sh", "-c", "while :; do sleep 1; done"],
    );
    understudy_tests::copies::create_counter(&c, "counter", "host-a", "host-b", "300ms");
    for name in ["shared-cwd", "counter"] {
        let w = c.wait_for_epochs(name, 2);
        assert!(w.unprotected.is_none(), "{name}: {:?}", w.unprotected);
    }
    let out = c.cli(&["migrate", "counter"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.workload("counter").unwrap().primary, "host-b");
    // The restored tree is dumped too: its epochs go on from host-b.
    let before = c.workload("counter").unwrap().epochs;
    let w = c.wait_for_epochs("counter", before + 2);
    assert!(w.unprotected.is_none(), "{:?}", w.unprotected);
}

#[test]
fn an_unreadable_data_file_fails_the_epoch_loudly_and_commits_nothing() {
    require_e2e!();
    require_criu!();
    // The agent runs as root and could read any file; the fault hook makes reading this
    // one fail as it would for an agent without the rights.
    let c = started_cluster(&[("UNDERSTUDY_FAULT_UNREADABLE", "locked-away")]);
    let logical = c.logical_dir("perm");
    let a = c.data_path("host-a", &logical);
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::write(a.join("readable"), b"fine").unwrap();
    std::fs::write(a.join("sub/locked-away"), b"secret").unwrap();
    c.create_with_data_dir(
        "perm",
        "300ms",
        &logical,
        &["/bin/sh", "-c", "while :; do sleep 1; done"],
    );
    let why = eventually("epoch failure reported", Duration::from_secs(15), || {
        c.workload("perm")?
            .unprotected
            .ok_or_else(|| "no failure yet".to_string())
    });
    let shown = logical.join("sub/locked-away");
    assert!(
        why.contains(shown.to_str().unwrap()) && why.contains("Permission denied"),
        "{why}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let w = c.workload("perm").unwrap();
    assert_eq!(w.epochs, 0, "no epoch committed without that file");
    let store = c.host_dir("host-b").join("data/workloads/perm/shadow");
    assert!(
        newest_epoch_dir(&store).is_none(),
        "nothing committed on the shadow"
    );
    // The workload itself keeps running.
    assert!(
        matches!(
            w.state,
            understudy_coordinator::workloads::WorkloadState::Running
        ),
        "{:?}",
        w.state
    );
}
