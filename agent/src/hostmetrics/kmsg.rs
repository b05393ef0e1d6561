//! Kernel error signals from the kernel log (`/dev/kmsg`): machine checks, EDAC memory
//! errors and block-device I/O errors, counted since boot (the log's buffer is read from its
//! start when the agent starts) and kept with their times for the health score's "recent
//! error history". Reading needs root (or CAP_SYSLOG); otherwise the metrics say why.
//!
//! The kernel log is one per machine, so the end-to-end tests give each namespace host its
//! own: in test builds (the `fault-hooks` feature) `UNDERSTUDY_TEST_KMSG=PATH` makes the
//! agent read records, one per line in `/dev/kmsg`'s format, from the file at PATH.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;

/// A kind of kernel error the agent counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelError {
    /// A machine check (CPU, cache, bus or memory hardware error).
    MachineCheck,
    /// An EDAC memory-controller error report.
    Memory,
    /// A block-device I/O error.
    Io,
}

impl KernelError {
    /// Every kind, in the order of [`KernelLog::totals`].
    pub const ALL: [KernelError; 3] = [Self::MachineCheck, Self::Memory, Self::Io];

    /// Its position in [`KernelError::ALL`].
    fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::MachineCheck => "mce",
            Self::Memory => "edac",
            Self::Io => "io",
        }
    }
}

/// Classifies one `/dev/kmsg` record (`prio,seq,usec,flags;message`): its time (µs since
/// boot) and the error it reports, if any.
pub fn classify(record: &str) -> Option<(u64, KernelError)> {
    let (head, message) = record.split_once(';')?;
    let usec: u64 = head.split(',').nth(2)?.parse().ok()?;
    let m = message.lines().next().unwrap_or("");
    let kind =
        if m.contains("Machine check") || m.starts_with("mce:") || m.contains("[Hardware Error]") {
            KernelError::MachineCheck
        } else if m.starts_with("EDAC")
            && (m.contains("error") || m.contains(" CE ") || m.contains(" UE "))
        {
            KernelError::Memory
        } else if m.contains("I/O error") || m.contains("critical medium error") {
            KernelError::Io
        } else {
            return None;
        };
    Some((usec, kind))
}

/// How long errors count as recent, in microseconds (one hour).
pub const RECENT_USEC: u64 = 3_600_000_000;

/// The kernel log reader: totals since boot and recent errors with their times.
#[derive(Debug)]
pub struct KernelLog {
    file: Result<File, String>,
    /// Records come one per line (a test's file), not one per read.
    lines: bool,
    /// A test file's last, unfinished line.
    partial: String,
    totals: [u64; 3],
    recent: VecDeque<(u64, KernelError)>,
    pending: Vec<u8>,
}

impl KernelLog {
    /// Opens `/dev/kmsg` for non-blocking reads from the start of the log's buffer.
    pub fn open() -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let test_source = test_source();
        let path = test_source.as_deref().unwrap_or("/dev/kmsg");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("cannot read {path}: {e}"));
        KernelLog {
            file,
            lines: test_source.is_some(),
            partial: String::new(),
            totals: [0; 3],
            recent: VecDeque::new(),
            pending: vec![0; 8192],
        }
    }

    /// Reads every record logged since the last call. Returns why not when the log is
    /// unreadable.
    pub fn poll(&mut self) -> Result<(), String> {
        let mut found = Vec::new();
        let file = self.file.as_mut().map_err(|e| e.clone())?;
        let result = loop {
            // One read returns one record.
            match file.read(&mut self.pending) {
                Ok(0) => break Ok(()),
                Ok(n) if self.lines => {
                    self.partial
                        .push_str(&String::from_utf8_lossy(&self.pending[..n]));
                    while let Some(end) = self.partial.find('\n') {
                        let line: String = self.partial.drain(..=end).collect();
                        found.extend(classify(line.trim_end()));
                    }
                }
                Ok(n) => found.extend(classify(&String::from_utf8_lossy(&self.pending[..n]))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                // EPIPE: records were overwritten before we read them; go on with the next.
                Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(format!("cannot read /dev/kmsg: {e}")),
            }
        };
        for (usec, kind) in found {
            self.record(usec, kind);
        }
        if let Err(why) = &result {
            self.file = Err(why.clone());
        }
        result
    }

    fn record(&mut self, usec: u64, kind: KernelError) {
        let i = KernelError::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.totals[i] += 1;
        self.recent.push_back((usec, kind));
        while self.recent.len() > 10_000 {
            self.recent.pop_front();
        }
    }

    /// Errors of each kind since boot, in [`KernelError::ALL`] order.
    pub fn totals(&self) -> Result<[u64; 3], String> {
        match &self.file {
            Ok(_) => Ok(self.totals),
            Err(e) => Err(e.clone()),
        }
    }

    /// Errors of each kind within the last [`RECENT_USEC`] before `now_usec` (µs since boot).
    pub fn recent(&mut self, now_usec: u64) -> [u32; 3] {
        let since = now_usec.saturating_sub(RECENT_USEC);
        while self.recent.front().is_some_and(|(t, _)| *t < since) {
            self.recent.pop_front();
        }
        let mut out = [0u32; 3];
        for (_, kind) in &self.recent {
            out[kind.index()] += 1;
        }
        out
    }
}

/// The file a test build reads kernel records from instead of `/dev/kmsg`, if set.
fn test_source() -> Option<String> {
    #[cfg(feature = "fault-hooks")]
    {
        std::env::var("UNDERSTUDY_TEST_KMSG")
            .ok()
            .filter(|p| !p.is_empty())
    }
    #[cfg(not(feature = "fault-hooks"))]
    {
        None
    }
}

/// Microseconds since boot on the clock the kernel log stamps records with.
pub fn now_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_classified_by_what_they_report() {
        let cases = [
            (
                "3,1201,5123456,-;blk_update_request: I/O error, dev sda, sector 2048 op 0x0:(READ)",
                Some((5_123_456, KernelError::Io)),
            ),
            (
                "3,9,77,-;Buffer I/O error on dev sdb1, logical block 0, async page read",
                Some((77, KernelError::Io)),
            ),
            (
                "2,10,88,-;mce: [Hardware Error]: Machine check events logged",
                Some((88, KernelError::MachineCheck)),
            ),
            (
                "3,11,99,-;EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0",
                Some((99, KernelError::Memory)),
            ),
            ("6,12,100,-;eth0: link up, 1000Mbps", None),
            ("garbage without a header", None),
            ("6,x,y,-;I/O error", None),
        ];
        for (record, want) in cases {
            assert_eq!(classify(record), want, "{record}");
        }
    }

    #[test]
    fn a_tests_file_is_read_a_line_at_a_time_across_reads() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        let mut w = std::fs::File::create(&path).unwrap();
        let mut log = KernelLog {
            file: File::open(&path).map_err(|e| e.to_string()),
            lines: true,
            partial: String::new(),
            totals: [0; 3],
            recent: VecDeque::new(),
            pending: vec![0; 16],
        };
        write!(
            w,
            "3,1,10,-;EDAC MC0: 1 CE memory read error\n3,2,20,-;EDAC MC0: 1 CE"
        )
        .unwrap();
        log.poll().unwrap();
        assert_eq!(
            log.totals().unwrap(),
            [0, 1, 0],
            "the unfinished line waits"
        );
        writeln!(w, " memory read error\n6,3,30,-;eth0: link up").unwrap();
        log.poll().unwrap();
        assert_eq!(log.totals().unwrap(), [0, 2, 0]);
    }

    #[test]
    fn recent_errors_age_out_after_an_hour() {
        let mut log = KernelLog {
            file: Err("test".into()),
            lines: false,
            partial: String::new(),
            totals: [0; 3],
            recent: VecDeque::new(),
            pending: Vec::new(),
        };
        log.record(1_000_000, KernelError::Io);
        log.record(RECENT_USEC + 2_000_000, KernelError::MachineCheck);
        assert_eq!(log.recent(RECENT_USEC + 1_500_000), [1, 0, 0]);
        assert_eq!(log.recent(RECENT_USEC + 3_000_000), [1, 0, 0]);
        assert_eq!(log.totals, [1, 0, 1]);
        assert!(log.totals().unwrap_err().contains("test"));
    }
}
