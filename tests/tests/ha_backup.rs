//! Backing up a coordinator group and restoring it after the whole group was lost (real
//! binaries on namespace hosts): `understudy backup` while the workload runs; the three
//! members killed and their files deleted; a new group formed; `understudy restore` into
//! it; the agents started again. The workload is back under its generation, on the host it
//! never left, committing epochs, its counter going on; damaged backups and a restore into
//! a group that already holds workloads are refused by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs;
use std::time::Duration;

use understudy_tests::cluster::Cluster;
use understudy_tests::command::said as text;
use understudy_tests::copies::{advancing, create_counter, the_one_copy};
use understudy_tests::wait::eventually;
use understudy_tests::{require_criu, require_e2e};

const HOSTS: [&str; 2] = ["host-a", "host-b"];
const MEMBERS: [&str; 3] = ["coord", "coord2", "witness"];

#[test]
fn a_group_lost_whole_comes_back_from_its_backup_without_moving_the_workload() {
    require_e2e!();
    require_criu!();
    let c = Cluster::started_group(&HOSTS);
    create_counter(&c, "steady", "host-a", "host-b", "500ms");
    let before = c.wait_for_epochs("steady", 2);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("group.backup");
    let file_s = file.to_str().unwrap();
    let o = c.cli(&["backup", "--out", file_s]);
    assert!(o.status.success(), "backup: {}", text(&o));
    assert!(text(&o).contains("1 workload"), "{}", text(&o));

    // A restore into a group that holds workloads is refused, and so is a damaged file.
    let o = c.cli(&["restore", "--from", file_s]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(
        text(&o).contains("already holds 1 workload"),
        "{}",
        text(&o)
    );
    let bytes = fs::read(&file).unwrap();
    let damaged = dir.path().join("damaged.backup");
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    fs::write(&damaged, bad).unwrap();
    let o = c.cli(&["restore", "--from", damaged.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(
        text(&o).contains("damaged.backup") && text(&o).contains("checksum"),
        "{}",
        text(&o)
    );

    // The disaster: agents stopped (the workload runs on), every member lost with its files.
    for h in HOSTS {
        c.stop(h);
    }
    for m in MEMBERS {
        c.kill(m);
        for f in fs::read_dir(c.host_dir(m).join("data")).unwrap() {
            fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
    assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");

    // A new group, the backup restored into it, the agents started again.
    for m in MEMBERS {
        c.start_member(m);
    }
    c.init_group();
    let o = c.cli(&["workload", "list"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("steady"),
        "the new group starts empty: {}",
        text(&o)
    );
    let o = c.cli(&["restore", "--from", file_s]);
    assert!(o.status.success(), "restore: {}", text(&o));
    assert!(text(&o).contains("1 workloads"), "{}", text(&o));
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(HOSTS.len());
    let w = c.workload("steady").unwrap();
    assert_eq!(w.generation, before.generation, "{w:?}");
    let epochs = w.epochs;
    eventually("steady's epochs go on", Duration::from_secs(30), || {
        let w = c.workload("steady")?;
        if w.epochs >= epochs + 2 {
            Ok(())
        } else {
            Err(format!(
                "{} epochs (was {epochs}); {:?}",
                w.epochs, w.unprotected
            ))
        }
    });
    assert_eq!(the_one_copy(&c, &HOSTS, "steady"), "host-a");
    advancing(&c, "host-a", "steady");
    // Every member holds the restored records (they came through the log).
    eventually("every member caught up", Duration::from_secs(20), || {
        let s = c.cluster_status()?;
        let behind: Vec<_> = s
            .members
            .iter()
            .filter(|m| s.leader != Some(m.id) && m.lag != Some(0))
            .map(|m| (m.id, m.lag))
            .collect();
        if s.members.len() == 3 && behind.is_empty() {
            Ok(())
        } else {
            Err(format!("behind {behind:?}"))
        }
    });

    // The same backup seeds a single coordinator's store offline, refused into a group
    // member's config and into a store that holds workloads.
    let member_cfg = c.host_dir("coord").join("coordinator.toml");
    let o = c.cli(&[
        "store",
        "restore",
        "--config",
        member_cfg.to_str().unwrap(),
        "--from",
        file_s,
    ]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("understudy restore"), "{}", text(&o));
    let full = fs::read_to_string(&member_cfg).unwrap();
    let store = c.host_dir("coord").join("data/coordinator.redb");
    let single = full[..full.find("[cluster]").unwrap()].replace(
        store.to_str().unwrap(),
        &format!("{}/single.redb", dir.path().display()),
    );
    let single_cfg = dir.path().join("single.toml");
    fs::write(&single_cfg, single).unwrap();
    let cfg = single_cfg.to_str().unwrap();
    let o = c.cli(&["store", "restore", "--config", cfg, "--from", file_s]);
    assert!(o.status.success(), "{}", text(&o));
    let o = c.cli(&["store", "check", "--config", cfg]);
    assert!(text(&o).contains("workload records: 1"), "{}", text(&o));
    let o = c.cli(&["store", "restore", "--config", cfg, "--from", file_s]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(
        text(&o).contains("already holds 1 workload"),
        "{}",
        text(&o)
    );
}
