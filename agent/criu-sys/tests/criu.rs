//! End-to-end tests against the real CRIU: version, dump + restore of a live
//! process, error reasons, notify callbacks and pre-dump chains. They need
//! root and a CRIU binary (see `common::criu_or_skip`).

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{alive, criu_or_skip, unused_pid, Counter, Reaper};
use criu_sys::{CriuError, DumpOptions, RestoreOptions};

fn images_dir(parent: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let dir = parent.path().join(name);
    std::fs::create_dir(&dir).expect("create images dir");
    dir
}

#[test]
fn version_is_at_least_4_2() {
    let Some(criu) = criu_or_skip() else { return };
    let version = criu.version().expect("criu version");
    println!(
        "CRIU version {version} via {}",
        criu.service_binary().display()
    );
    assert!(version >= 40200, "CRIU {version} is older than 4.2");
}

#[test]
fn feature_mem_track_answers() {
    let Some(criu) = criu_or_skip() else { return };
    let mem_track = criu.feature_mem_track().expect("feature check");
    println!("mem_track: {mem_track}");
}

#[test]
fn dump_leave_running_then_restore_child_continues_counting() {
    let Some(criu) = criu_or_skip() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let images = images_dir(&tmp, "images");
    let mut counter = Counter::start(tmp.path());
    let pid = counter.pid();

    let before = counter.read();
    let opts = DumpOptions {
        pid,
        images_dir: images.clone(),
        leave_running: true,
        ..DumpOptions::default()
    };
    criu.dump(&opts).expect("dump");
    assert!(
        images.join("dump.log").is_file(),
        "no dump.log in images dir"
    );

    assert!(alive(pid), "process {pid} died after a leave_running dump");
    let after_dump = counter.read();
    counter.wait_for(
        |n| n > after_dump + 5,
        "the counter to keep growing after the dump",
    );

    counter.kill();
    assert!(!alive(pid), "pid {pid} still in use after kill + reap");
    counter.reset_file();

    let restored = criu
        .restore_child(&RestoreOptions {
            images_dir: images.clone(),
            ..RestoreOptions::default()
        })
        .expect("restore_child");
    let _reaper = Reaper(restored);
    assert_eq!(restored, pid, "CRIU restores the original pid");
    assert!(alive(restored));
    assert_eq!(parent_of(restored), std::process::id(), "not our child");

    let first = counter.wait_for(|n| n > 0, "the restored process to write");
    assert!(
        first >= before,
        "restored counter restarted: {first} < {before} (the value before the dump)"
    );
    counter.wait_for(|n| n > first + 5, "the restored counter to keep growing");
}

#[test]
fn dump_of_missing_pid_reports_criu_reason() {
    let Some(criu) = criu_or_skip() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let pid = unused_pid();
    let err = criu
        .dump(&DumpOptions {
            pid,
            images_dir: tmp.path().to_path_buf(),
            ..DumpOptions::default()
        })
        .expect_err("dumping a missing pid must fail");
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        matches!(err, CriuError::Failed { op: "dump", .. }),
        "{err:?}"
    );
    assert!(msg.starts_with("criu dump failed ("), "{msg}");
    assert!(msg.contains("Error ("), "no CRIU reason in: {msg}");
}

#[test]
fn missing_images_dir_is_named() {
    let Some(criu) = criu_or_skip() else { return };
    let err = criu
        .dump(&DumpOptions {
            pid: 1,
            images_dir: "/nonexistent/criu-sys-images".into(),
            ..DumpOptions::default()
        })
        .expect_err("missing images dir");
    assert!(
        err.to_string().contains("/nonexistent/criu-sys-images"),
        "{err}"
    );
}

#[test]
fn notify_callback_sees_actions_and_can_refuse() {
    let Some(criu) = criu_or_skip() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let counter = Counter::start(tmp.path());
    let pid = counter.pid();

    let mut actions = Vec::new();
    let opts = DumpOptions {
        pid,
        images_dir: images_dir(&tmp, "ok"),
        leave_running: true,
        ..DumpOptions::default()
    };
    criu.dump_with_notify(&opts, &mut |action| {
        actions.push(action.to_string());
        true
    })
    .expect("dump with notify");
    println!("notify actions: {actions:?}");
    assert!(actions.iter().any(|a| a == "post-dump"), "{actions:?}");

    let refusing = DumpOptions {
        images_dir: images_dir(&tmp, "refused"),
        ..opts
    };
    let err = criu
        .dump_with_notify(&refusing, &mut |action| action != "post-dump")
        .expect_err("a refused post-dump must fail the dump");
    println!("{err}");
    assert!(
        err.to_string()
            .contains("notify callback refused \"post-dump\""),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pid), "process must survive a failed dump");
}

#[test]
fn pre_dump_chain_then_restore() {
    let Some(criu) = criu_or_skip() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let pre = images_dir(&tmp, "pre");
    let last = images_dir(&tmp, "last");
    let mut counter = Counter::start(tmp.path());
    let pid = counter.pid();

    if !criu.feature_mem_track().expect("feature check") {
        // CRIU enforces memory tracking for pre-dumps, so it must say why it fails.
        let err = criu
            .pre_dump(&DumpOptions {
                pid,
                images_dir: pre,
                ..DumpOptions::default()
            })
            .expect_err("pre-dump without soft-dirty tracking");
        println!("{err}");
        assert!(err.to_string().contains("Error ("), "{err}");
        assert!(
            alive(pid),
            "a failed pre-dump must leave the process running"
        );
        println!("SKIPPED: pre-dump chain: no soft-dirty memory tracking on this kernel");
        return;
    }

    criu.pre_dump(&DumpOptions {
        pid,
        images_dir: pre,
        track_mem: true,
        ..DumpOptions::default()
    })
    .expect("pre-dump");
    assert!(alive(pid), "pre-dump must leave the process running");

    let before = counter.read();
    criu.dump(&DumpOptions {
        pid,
        images_dir: last.clone(),
        track_mem: true,
        parent_images: Some("../pre".into()),
        ..DumpOptions::default()
    })
    .expect("dump on top of the pre-dump");
    counter.kill();
    counter.reset_file();

    let restored = criu
        .restore_child(&RestoreOptions {
            images_dir: last,
            ..RestoreOptions::default()
        })
        .expect("restore from the chain");
    let _reaper = Reaper(restored);
    let first = counter.wait_for(|n| n > 0, "the restored process to write");
    assert!(first >= before, "{first} < {before}");
}

#[test]
fn restore_child_hands_over_inherited_pipe() {
    let Some(criu) = criu_or_skip() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let images = images_dir(&tmp, "images");
    let (old_read, _old_write) = std::io::pipe().expect("pipe");
    let mut counter = Counter::start_with_stdin(tmp.path(), old_read.into());
    let pid = counter.pid();
    let key = fd_target(pid, 0);
    assert!(key.starts_with("pipe:["), "{key}");

    criu.dump(&DumpOptions {
        pid,
        images_dir: images.clone(),
        leave_running: true,
        ..DumpOptions::default()
    })
    .expect("dump");
    counter.kill();

    // std creates pipes close-on-exec; the wrapper must let CRIU inherit it.
    let (new_read, _new_write) = std::io::pipe().expect("pipe");
    let fd = new_read.as_raw_fd();
    let restored = criu
        .restore_child(&RestoreOptions {
            images_dir: images,
            inherit_fds: vec![(fd, key)],
            ..RestoreOptions::default()
        })
        .expect("restore_child with an inherited pipe");
    let _reaper = Reaper(restored);
    assert_eq!(
        fd_target(restored, 0),
        fd_target(std::process::id().try_into().expect("pid"), fd),
        "restored stdin is not the pipe handed over"
    );
    // SAFETY: F_GETFD on an fd we own only reads its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert_eq!(
        flags & libc::FD_CLOEXEC,
        libc::FD_CLOEXEC,
        "FD_CLOEXEC not restored"
    );
}

fn fd_target(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .expect("read fd link")
        .display()
        .to_string()
}

fn parent_of(pid: i32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat format");
    rest.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid")
}
