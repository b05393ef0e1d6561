//! End to end with real CRIU and QUIC between namespace hosts: `understudy migrate
//! --post-copy`. The workload (192 MiB of random memory it checksums, and a counter) runs
//! on the target before its memory has arrived and ends with all of it; when the old
//! primary is lost in the middle of the copy, the workload comes back from the shadow's
//! last epoch, whole, and runs exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use understudy_coordinator::workloads::WorkloadState;
use understudy_tests::cluster::Cluster;
use understudy_tests::copies;
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

/// 192 MiB of random bytes, their CRC printed at the start and every 200 counts; a count
/// every 10 ms; the wall clock (ms) every 10 counts.
const BIG: &str = "import os, sys, time, zlib\nblob = bytearray(os.urandom(192 * 1024 * 1024))\nprint('crc', zlib.crc32(blob), flush=True)\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    if n % 10 == 0:\n        print('t', int(time.time() * 1000), flush=True)\n    if n % 200 == 0:\n        print('crc', zlib.crc32(blob), flush=True)\n    time.sleep(0.01)\n";

/// Each piece (256 KiB at most) of the page transfer waits this long on the old primary:
/// 192 MiB take at least ~6 s to arrive, so that a test acts well inside the copy.
const SLOW: &str = "slow-post-copy:8";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `crc` values in `log`.
fn crcs(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("crc ")?.trim().parse().ok())
        .collect()
}

/// The `t` stamps in `log`.
fn stamps(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("t ")?.trim().parse().ok())
        .collect()
}

fn cluster() -> Cluster {
    understudy_tests::criu::allow_post_copy();
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent_env("host-a", &[("UNDERSTUDY_FAULTS", SLOW)]);
    c.start_agent("host-b");
    c.wait_connected(2);
    copies::create_python(&c, "big", ("host-a", "host-b"), "2s", BIG);
    c.wait_for_epochs("big", 1);
    c
}

/// Starts `migrate big --post-copy` and returns once host-b's copy has been restored (its
/// agent says so) and runs, its memory still arriving, slowly, from host-a. (Not once it
/// prints: a copy faulting in its first pages over the slowed transfer may print only when
/// most of its memory has arrived.)
fn moving_to_b(c: &Cluster) -> std::process::Child {
    const RESTORED: &str = "post-copy: restored; the memory follows";
    let restored = c.log("host-b").matches(RESTORED).count();
    let migrate = c
        .cli_command()
        .args(["migrate", "big", "--post-copy"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("host-b's copy restored", Duration::from_secs(60), || {
        if c.log("host-b").matches(RESTORED).count() > restored {
            Ok(())
        } else {
            Err("not restored on host-b yet".to_string())
        }
    });
    migrate
}

/// Waits for `host`'s log of `big` to hold a CRC; returns the first.
fn first_crc(c: &Cluster, host: &str) -> u64 {
    eventually(
        &format!("a checksum on {host}"),
        Duration::from_secs(30),
        || {
            crcs(&c.output_log(host, "big"))
                .first()
                .copied()
                .ok_or_else(|| "none yet".to_string())
        },
    )
}

#[test]
fn a_post_copy_move_runs_on_the_target_before_its_memory_has_arrived_and_keeps_all_of_it() {
    require_e2e!();
    require_criu!();
    let c = cluster();
    let original = first_crc(&c, "host-a");
    let before = c.workload("big").unwrap();

    let out = c.cli(&["migrate", "big", "--post-copy"]);
    let done_ms = now_ms();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate --post-copy failed: {stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        copies::seen(&c, &["host-a", "host-b"], "big")
    );
    assert!(stdout.contains("post-copy"), "{stdout}");
    let after = c.workload("big").unwrap();
    assert_eq!(after.primary, "host-b");
    assert_eq!(after.generation, before.generation + 1);
    assert_eq!(after.state, WorkloadState::Running);

    // It ran on host-b before the move was over: the move is answered only once the last
    // page is in, and host-b's copy had printed the time well before that.
    let b_log = c.output_log("host-b", "big");
    let first_stamp = *stamps(&b_log).first().expect("host-b printed the time");
    let last_on_a = copies::last_count(&c, "host-a", "big");
    let b_counts = numbers(&b_log);
    eprintln!(
        "post-copy: host-a counted to {last_on_a}, host-b went on from {}; host-b's first stamp {} ms before the move was answered; freeze {:?} ms",
        b_counts[0],
        done_ms.saturating_sub(first_stamp),
        after.last_migration.as_ref().and_then(|m| m.freeze_ms)
    );
    assert!(
        first_stamp + 500 < done_ms,
        "host-b's copy printed first at {first_stamp}, the move was answered at {done_ms}: it did not run while its memory arrived"
    );
    // With its state: the count goes on from host-a's, and its memory is all there.
    assert!(
        b_counts[0] > last_on_a.saturating_sub(1) && b_counts[0] <= last_on_a + 1,
        "host-b started at {} after host-a's {last_on_a}",
        b_counts[0]
    );
    assert!(
        b_counts.windows(2).all(|w| w[1] == w[0] + 1),
        "counts on host-b skip"
    );
    let b_crc = first_crc(&c, "host-b");
    assert_eq!(
        b_crc, original,
        "the memory on host-b is not the memory on host-a"
    );
    // Exactly one copy, on host-b, going on.
    assert_eq!(
        copies::the_one_copy(&c, &["host-a", "host-b"], "big"),
        "host-b"
    );
    copies::advancing(&c, "host-b", "big");

    // A workload with a data directory cannot move by post-copy: refused, naming the field.
    let logical = c.logical_dir("files");
    for h in ["host-a", "host-b"] {
        std::fs::create_dir_all(c.data_path(h, &logical)).unwrap();
    }
    c.create_with_data_dir("files", "1s", &logical, &["/bin/sleep", "1000"]);
    let out = c.cli(&["migrate", "files", "--post-copy"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("post_copy:") && err.contains("data directories"),
        "{err}"
    );
    assert_eq!(
        c.workload("files").unwrap().primary,
        "host-a",
        "nothing moved"
    );
}

#[test]
fn the_old_primary_lost_mid_copy_brings_the_workload_back_from_the_shadows_epoch_whole() {
    require_e2e!();
    require_criu!();
    let c = cluster();
    let original = first_crc(&c, "host-a");
    let recorded = c.wait_for_epochs("big", 2).last_epoch.unwrap().epoch;

    let migrate = moving_to_b(&c);
    // The copy on host-b runs (its memory still arriving): host-a is lost now.
    c.note(
        "coord",
        "killing host-a in the middle of the post-copy transfer",
    );
    c.kill_host("host-a");
    let out = migrate.wait_with_output().unwrap();
    eprintln!(
        "migrate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the move cannot have succeeded");

    // The half-copied tree is gone from host-b, and the workload fails over there from
    // the last epoch host-b committed as shadow.
    let w = copies::failed_over(&c, "big", "host-b", Duration::from_secs(90));
    let m = w.last_migration.clone().unwrap();
    eprintln!("failed over: {m:?}");
    assert!(
        m.recovery_epoch.is_some_and(|e| e >= recorded),
        "recovered from {:?}, recorded {recorded}",
        m.recovery_epoch
    );
    // Whole: the memory it checksums is the original's, and it counts on.
    let crcs_b = crcs(&c.output_log("host-b", "big"));
    eventually(
        "a checksum after the failover",
        Duration::from_secs(30),
        || {
            let now = crcs(&c.output_log("host-b", "big"));
            if now.len() > crcs_b.len() {
                Ok(())
            } else {
                Err(format!("{} checksums", now.len()))
            }
        },
    );
    let all = crcs(&c.output_log("host-b", "big"));
    assert!(
        all.iter().all(|&x| x == original),
        "a checksum on host-b differs from the original's {original}: {all:?}"
    );
    assert_eq!(copies::the_one_copy(&c, &["host-b"], "big"), "host-b");
    copies::advancing(&c, "host-b", "big");
}

#[test]
fn a_transfer_cut_between_the_hosts_rolls_back_to_the_original_which_goes_on_from_where_it_was() {
    require_e2e!();
    require_criu!();
    let c = cluster();
    let original = first_crc(&c, "host-a");
    let migrate = moving_to_b(&c);
    // The hosts lose each other (both still reach the coordinator) in the middle of the copy.
    let frozen_at = copies::last_count(&c, "host-a", "big");
    c.note(
        "coord",
        "cutting host-a from host-b in the middle of the post-copy transfer",
    );
    c.isolate(&["host-a", "host-b"], true);
    let out = migrate.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("migrate: {err}");
    assert_eq!(
        out.status.code(),
        Some(75),
        "the move should roll back: {err}"
    );
    assert!(err.contains("rolled back"), "{err}");
    c.isolate(&["host-a", "host-b"], false);

    // The original, held stopped during the copy, goes on from where it was frozen.
    let w = c.workload("big").unwrap();
    assert_eq!(w.primary, "host-a");
    assert_eq!(w.state, WorkloadState::Running);
    assert_eq!(
        copies::the_one_copy(&c, &["host-a", "host-b"], "big"),
        "host-a"
    );
    copies::advancing(&c, "host-a", "big");
    let a_counts = numbers(&c.output_log("host-a", "big"));
    assert!(
        a_counts.windows(2).all(|w| w[1] == w[0] + 1),
        "host-a's counts skip or repeat around the rolled-back move (frozen at {frozen_at})"
    );
    eventually(
        "a checksum after the rollback",
        Duration::from_secs(30),
        || {
            let all = crcs(&c.output_log("host-a", "big"));
            if all.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{} checksums", all.len()))
            }
        },
    );
    let all = crcs(&c.output_log("host-a", "big"));
    assert!(
        all.iter().all(|&x| x == original),
        "host-a's memory changed: {all:?}"
    );
}

#[test]
fn a_coordinator_restarted_in_the_middle_of_the_copy_sees_the_move_through() {
    require_e2e!();
    require_criu!();
    let c = cluster();
    let original = first_crc(&c, "host-a");
    let generation = c.workload("big").unwrap().generation;
    let mut checked_on_a = 0;
    for kill in [true, false] {
        let to = if kill { "host-b" } else { "host-a" };
        if !kill {
            // Back the other way once host-a, now the shadow, holds an epoch.
            eventually("an epoch on host-a", Duration::from_secs(60), || {
                let w = c.workload("big")?;
                match &w.last_epoch {
                    Some(e) if e.shadow == "host-a" => Ok(()),
                    _ => Err(format!("{:?}", w.last_epoch.map(|e| e.shadow))),
                }
            });
            checked_on_a = crcs(&c.output_log("host-a", "big")).len();
        }
        let marks = stamps(&c.output_log(to, "big")).len();
        let migrate = c
            .cli_command()
            .args(["migrate", "big", "--post-copy"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        eventually(
            &format!("{to}'s copy runs"),
            Duration::from_secs(60),
            || {
                if stamps(&c.output_log(to, "big")).len() > marks {
                    Ok(())
                } else {
                    Err(format!("nothing new printed on {to} yet"))
                }
            },
        );
        c.note(
            "coord",
            &format!("restarting the coordinator (kill: {kill}) mid-copy"),
        );
        if kill {
            c.kill("coord");
        } else {
            c.stop("coord");
        }
        c.start_coordinator();
        eventually(
            &format!("the move to {to} seen through"),
            Duration::from_secs(90),
            || {
                let w = c.workload("big")?;
                match (&w.state, &w.last_migration) {
                    (WorkloadState::Running, Some(m))
                        if w.primary == to && m.outcome == "succeeded" =>
                    {
                        Ok(())
                    }
                    other => Err(format!("on {}: {other:?}", w.primary)),
                }
            },
        );
        // The operator's migrate waited out the restart and says the move succeeded.
        let out = migrate.wait_with_output().unwrap();
        let said = understudy_tests::command::said(&out);
        assert!(out.status.success(), "kill {kill}: {said}");
        assert!(said.contains(&format!("to {to}")), "kill {kill}: {said}");
        assert_eq!(copies::the_one_copy(&c, &["host-a", "host-b"], "big"), to);
        copies::advancing(&c, to, "big");
    }
    assert_eq!(c.workload("big").unwrap().generation, generation + 2);
    eventually(
        "a checksum on host-a again",
        Duration::from_secs(30),
        || {
            let all = crcs(&c.output_log("host-a", "big"));
            if all.len() > checked_on_a {
                Ok(())
            } else {
                Err(format!("{} checksums", all.len()))
            }
        },
    );
    let all: Vec<u64> = ["host-a", "host-b"]
        .iter()
        .flat_map(|h| crcs(&c.output_log(h, "big")))
        .collect();
    assert!(
        all.iter().all(|&x| x == original),
        "the memory changed across the moves: {all:?}"
    );
}

/// After a post-copy move broken by `what` (started before `before` was read), waits for
/// the move to be over and the workload running again under a newer generation (on
/// `expected_on` if given), then checks that exactly one copy runs there, counts on, and
/// checksums memory that is the original's; and waits for a fresh epoch, so that it is
/// protected again. Returns where it runs.
fn one_whole_copy_after(
    c: &Cluster,
    (migrate, what): (std::process::Child, &str),
    before: &understudy_coordinator::workloads::WorkloadRecord,
    (original, expected_on): (u64, Option<&str>),
) -> String {
    let out = migrate.wait_with_output().unwrap();
    eprintln!(
        "migrate ({what}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the move cannot have succeeded");
    let w = eventually(
        &format!("the workload running again after {what}"),
        Duration::from_secs(120),
        || {
            let w = c.workload("big")?;
            match (&w.state, &w.last_migration) {
                (WorkloadState::Running, Some(m))
                    if w.generation > before.generation
                        && m.outcome != "succeeded"
                        && expected_on.is_none_or(|h| w.primary == h) =>
                {
                    Ok(w)
                }
                other => Err(format!("on {}: {other:?}", w.primary)),
            }
        },
    );
    eprintln!("after {what}: on {}: {:?}", w.primary, w.last_migration);
    let on = w.primary.clone();
    let checked = crcs(&c.output_log(&on, "big")).len();
    copies::advancing(c, &on, "big");
    assert_eq!(copies::the_one_copy(c, &["host-a", "host-b"], "big"), on);
    // Whole where it runs, and nothing the broken copy printed came from memory that had
    // not arrived.
    eventually(
        "a new checksum where it runs",
        Duration::from_secs(30),
        || {
            let n = crcs(&c.output_log(&on, "big")).len();
            if n > checked {
                Ok(())
            } else {
                Err(format!("{n} checksums"))
            }
        },
    );
    let all: Vec<u64> = ["host-a", "host-b"]
        .iter()
        .flat_map(|h| crcs(&c.output_log(h, "big")))
        .collect();
    assert!(
        all.iter().all(|&x| x == original),
        "a checksum differs from the original's {original}: {all:?}"
    );
    let epochs = c.workload("big").unwrap().epochs;
    c.wait_for_epochs("big", epochs + 1);
    on
}

#[test]
fn the_targets_agent_restarted_in_the_middle_of_the_copy_leaves_one_whole_copy() {
    require_e2e!();
    require_criu!();
    // The target's agent relays the pages to CRIU's lazy-pages daemon. Killed (or stopped)
    // mid-copy, it can no longer serve them: the half-copied tree must go before it can
    // touch memory that never arrived, and the original goes on where it was frozen.
    let c = cluster();
    let original = first_crc(&c, "host-a");
    for kill in [true, false] {
        let before = c.workload("big").unwrap();
        let migrate = moving_to_b(&c);
        let what = format!("host-b's agent restarted (kill: {kill}) mid-copy");
        c.note("coord", &what);
        c.restart_agent("host-b", kill);
        one_whole_copy_after(&c, (migrate, &what), &before, (original, Some("host-a")));
    }
}

#[test]
fn the_old_primarys_agent_restarted_in_the_middle_of_the_copy_leaves_one_whole_copy() {
    require_e2e!();
    require_criu!();
    // The old primary's agent relays its CRIU page server. Killed (or stopped) mid-copy,
    // the transfer breaks on both sides: the target's copy goes, and the original — held
    // by the fence while CRIU let it go — must run again, once, with its memory. Rolled
    // back to the original (its agent back in time), or failed over from the shadow's
    // epoch (not back in time): either way one copy runs, and runs on.
    let c = cluster();
    let original = first_crc(&c, "host-a");
    for kill in [true, false] {
        if c.workload("big").unwrap().primary != "host-a" {
            let out = c.cli(&["migrate", "big", "--to", "host-a"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let epochs = c.workload("big").unwrap().epochs;
            c.wait_for_epochs("big", epochs + 1);
        }
        let before = c.workload("big").unwrap();
        let migrate = moving_to_b(&c);
        let what = format!("host-a's agent restarted (kill: {kill}) mid-copy");
        c.note("coord", &what);
        if kill {
            c.kill("host-a");
        } else {
            c.stop("host-a");
        }
        c.start_agent_env("host-a", &[("UNDERSTUDY_FAULTS", SLOW)]);
        one_whole_copy_after(&c, (migrate, &what), &before, (original, None));
    }
}
