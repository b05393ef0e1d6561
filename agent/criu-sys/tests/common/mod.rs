//! Shared helpers for the CRIU integration tests: the root/CRIU skip check,
//! a counting test process, and kill-and-reap guards.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_sys::Criu;

/// The CRIU to test with, or `None` after printing `SKIPPED: <reason>`
/// (a panic instead when `UNDERSTUDY_REQUIRE_CRIU=1`).
pub fn criu_or_skip() -> Option<Criu> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let reason = if euid != 0 {
        "not running as root (CRIU needs CAP_SYS_ADMIN and friends)".to_string()
    } else {
        match Criu::from_env() {
            Ok(criu) => return Some(criu),
            Err(e) => e.to_string(),
        }
    };
    if std::env::var("UNDERSTUDY_REQUIRE_CRIU").as_deref() == Ok("1") {
        panic!("UNDERSTUDY_REQUIRE_CRIU=1 but CRIU tests cannot run: {reason}");
    }
    println!("SKIPPED: {reason}");
    None
}

/// A python3 process (its own session, stdio on /dev/null) that counts up
/// every 10 ms and writes the count, fixed-width, to `counter` in place.
pub struct Counter {
    pub child: Child,
    pub file: PathBuf,
}

/// Fixed width keeps the file size constant: CRIU checks the size of open
/// regular files on restore.
const WIDTH: usize = 12;

impl Counter {
    pub fn start(dir: &Path) -> Counter {
        Self::start_with_stdin(dir, Stdio::null())
    }

    pub fn start_with_stdin(dir: &Path, stdin: Stdio) -> Counter {
        let file = dir.join("counter");
        let script = format!(
            "import os, time\n\
             fd = os.open({path:?}, os.O_RDWR | os.O_CREAT, 0o644)\n\
             n = 0\n\
             while True:\n\
             \x20   n += 1\n\
             \x20   os.pwrite(fd, b'%0{WIDTH}d\\n' % n, 0)\n\
             \x20   time.sleep(0.01)\n",
            path = file.to_str().expect("utf-8 temp path"),
        );
        let child = Command::new("setsid")
            .args(["/usr/bin/python3", "-c", &script])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn setsid python3");
        let counter = Counter { child, file };
        counter.wait_for(|n| n >= 30, "the counter to reach 30");
        counter
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// The current count (0 if the file is missing or being rewritten).
    pub fn read(&self) -> u64 {
        read_counter(&self.file)
    }

    /// Waits up to 10 s for `pred(count)`.
    pub fn wait_for(&self, pred: impl Fn(u64) -> bool, what: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.read();
            if pred(n) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (at {n})"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Overwrites the count with zeros, keeping the file's size.
    pub fn reset_file(&self) {
        std::fs::write(&self.file, format!("{:0WIDTH$}\n", 0)).expect("reset counter file");
    }

    /// SIGKILLs and reaps the original process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_counter(path: &Path) -> u64 {
    // Two equal reads in a row, so a read racing a write is not believed.
    let once = || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    for _ in 0..100 {
        let a = once();
        if a.is_some() && a == once() {
            return a.unwrap_or(0);
        }
    }
    0
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILLs and reaps a child pid that is not a `std::process::Child`
/// (e.g. a tree restored with `restore_child`) when dropped.
pub struct Reaper(pub i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: plain syscalls on a pid that is our child; the status
        // pointer may be NULL.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
        // SAFETY: as above; waitpid with a NULL status pointer is allowed.
        unsafe {
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A pid that no process has right now.
pub fn unused_pid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (1000..max)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}
