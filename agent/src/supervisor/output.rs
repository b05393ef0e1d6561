//! The workload's output log as its supervisor writes it: everything the command prints is
//! appended as it comes; when the log cannot be written (a full disk) the output is
//! dropped — never left to fill the pipe and block the command — and counted, and the next
//! write that succeeds first says how much was lost and why.

use std::io::Write;

/// Counts of output lost since the last write that succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Bytes lost.
    pub bytes: u64,
    /// Lines lost (newlines among those bytes).
    pub lines: u64,
}

/// The log, and what could not be written to it.
#[derive(Debug)]
pub struct OutputLog<W: Write> {
    sink: W,
    pending: Dropped,
    pending_reason: String,
    /// Whether the last byte written ended a line (a note starts on a line of its own).
    at_line_start: bool,
    /// Everything dropped since the supervisor started.
    pub total: Dropped,
}

impl<W: Write> OutputLog<W> {
    /// A log writing to `sink`.
    pub fn new(sink: W) -> Self {
        OutputLog {
            sink,
            pending: Dropped::default(),
            pending_reason: String::new(),
            at_line_start: true,
            total: Dropped::default(),
        }
    }

    /// Appends `chunk`, or counts it as dropped.
    pub fn write(&mut self, chunk: &[u8]) {
        if self.pending.bytes > 0 {
            let note = format!(
                "{}[understudy] {} lines ({} bytes) of output were dropped: {}\n",
                if self.at_line_start { "" } else { "\n" },
                self.pending.lines,
                self.pending.bytes,
                self.pending_reason
            );
            if self.sink.write_all(note.as_bytes()).is_err() {
                self.drop_bytes(chunk, None);
                return;
            }
            self.pending = Dropped::default();
            self.at_line_start = true;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            match self.sink.write(rest) {
                Ok(0) => {
                    self.drop_bytes(rest, Some("the log accepts no more".into()));
                    return;
                }
                Ok(n) => {
                    self.at_line_start = rest[n - 1] == b'\n';
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_bytes(rest, Some(e.to_string()));
                    return;
                }
            }
        }
    }

    fn drop_bytes(&mut self, bytes: &[u8], reason: Option<String>) {
        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        let n = bytes.len() as u64;
        for d in [&mut self.pending, &mut self.total] {
            d.bytes += n;
            d.lines += lines;
        }
        if let Some(r) = reason {
            self.pending_reason = r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that fails with ENOSPC while `full` is set.
    struct Disk {
        data: Vec<u8>,
        full: bool,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_lost_to_a_full_disk_is_counted_and_said_once_space_returns() {
        let mut log = OutputLog::new(Disk {
            data: Vec::new(),
            full: false,
        });
        log.write(b"1\n2\n");
        log.sink.full = true;
        log.write(b"3\n4\n5\n");
        log.write(b"6\n");
        assert_eq!(log.total, Dropped { bytes: 8, lines: 4 });
        log.sink.full = false;
        log.write(b"7\n");
        let text = String::from_utf8(log.sink.data.clone()).unwrap();
        assert!(
            text.starts_with("1\n2\n[understudy] 4 lines (8 bytes) of output were dropped: No space left on device"),
            "{text}"
        );
        assert!(text.ends_with("\n7\n"), "{text}");
        log.write(b"8\n");
        assert!(
            String::from_utf8(log.sink.data.clone())
                .unwrap()
                .ends_with("7\n8\n"),
            "said once"
        );
    }
}
