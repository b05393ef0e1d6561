//! Faults made on one namespace host through the real signal paths its agent reads: memory
//! growing in the host's memory cgroup (`[agent] memory_cgroup`), and kernel error lines in
//! the file the test build's agent reads in place of `/dev/kmsg` (`UNDERSTUDY_TEST_KMSG`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Microseconds since boot, the kernel log's clock.
pub fn uptime_usec() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    (secs * 1e6) as u64
}

/// Appends `n` corrected-memory-error lines (EDAC), numbered from `seq`, to the kernel log
/// file `kmsg`, stamped now.
pub fn edac_errors(kmsg: &Path, seq: u64, n: u64) {
    let now = uptime_usec();
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "3,{},{},-;EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0\n",
                seq + i,
                now + i
            )
        })
        .collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(kmsg)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", kmsg.display()));
}

/// A memory cgroup made for one test or run, removed (with whatever still runs in it killed) when
/// dropped: cgroup v2 where the unified hierarchy has the memory controller, else v1.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: std::path::PathBuf,
}

impl MemoryCgroup {
    /// Its directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A cgroup limited to `limit` bytes, or why this machine cannot make one.
    pub fn new(limit: u64) -> Result<Self, String> {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("understudy-e2e-{}-{n}", std::process::id());
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (dir, limit_file) = if v2 {
            (format!("/sys/fs/cgroup/{name}"), "memory.max")
        } else if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            (
                format!("/sys/fs/cgroup/memory/{name}"),
                "memory.limit_in_bytes",
            )
        } else {
            return Err("no memory cgroup controller mounted (v1 or v2)".into());
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = MemoryCgroup { dir };
        std::fs::write(cg.dir.join(limit_file), limit.to_string())
            .map_err(|e| format!("{limit_file}: {e}"))?;
        Ok(cg)
    }

    /// Moves process `pid` into it.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .status();
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Grows by `per_s` bytes a second, writing every page, until killed.
pub const GROWER: &str = r#"
import sys, time
per_s, chunks, t0 = int(sys.argv[1]), [], time.time()
while True:
    want = int((time.time() - t0) * per_s)
    have = sum(len(c) for c in chunks)
    if want > have:
        chunks.append(bytearray(b"x") * (want - have))
    time.sleep(0.1)
"#;
