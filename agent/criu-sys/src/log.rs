//! Turning a failed libcriu call into a reason: the last `Error` lines of
//! CRIU's log file, else what libcriu's return code means.

use std::path::Path;

/// How many `Error` lines of the log go into a reason.
const MAX_LINES: usize = 3;
/// Longest log line kept, in bytes (more is cut).
const MAX_LINE_LEN: usize = 400;

/// The last (up to 3) lines of `log` that contain `Error`, from the word
/// `Error` on, oldest first, joined with `"; "`.
pub(crate) fn error_lines(log: &str) -> Option<String> {
    let mut lines: Vec<&str> = log
        .lines()
        .rev()
        .filter_map(|line| line.find("Error").map(|at| line[at..].trim()))
        .take(MAX_LINES)
        .collect();
    if lines.is_empty() {
        return None;
    }
    lines.reverse();
    let cut: Vec<&str> = lines.into_iter().map(truncate).collect();
    Some(cut.join("; "))
}

fn truncate(line: &str) -> &str {
    if line.len() <= MAX_LINE_LEN {
        return line;
    }
    let mut end = MAX_LINE_LEN;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// The reason for a failure with return code `code`: the log's `Error` lines
/// if `log_path` has any, else a description of the code.
pub(crate) fn failure_reason(code: i32, log_path: Option<&Path>, service_binary: &Path) -> String {
    if let Some(path) = log_path {
        if let Ok(bytes) = std::fs::read(path) {
            if let Some(lines) = error_lines(&String::from_utf8_lossy(&bytes)) {
                return lines;
            }
        }
    }
    let what = match -code {
        libc::EBADE => "CRIU reported failure".to_string(),
        libc::ECONNREFUSED => format!(
            "could not start the CRIU service binary {}",
            service_binary.display()
        ),
        libc::ECOMM => format!(
            "lost the connection to {} swrk (did it fail to start or crash?)",
            service_binary.display()
        ),
        libc::EINVAL => "CRIU does not support this request".to_string(),
        libc::EBADMSG => "unexpected response from CRIU".to_string(),
        _ => "libcriu call failed".to_string(),
    };
    match log_path {
        Some(path) => format!("{what} (no Error lines in {})", path.display()),
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_three_error_lines_in_order() {
        let log = "(00.001) Info\n\
                   (00.002) Error (a.c:1): one\n\
                   (00.003) Error (b.c:2): two\n\
                   (00.004) Warn\n\
                   (00.005)      1: Error (c.c:3): three  \n\
                   (00.006) Error (d.c:4): four\n\
                   (00.007) done\n";
        assert_eq!(
            error_lines(log).as_deref(),
            Some("Error (b.c:2): two; Error (c.c:3): three; Error (d.c:4): four")
        );
    }

    #[test]
    fn no_error_lines() {
        assert_eq!(error_lines("all good\n"), None);
        let reason = failure_reason(-libc::EBADE, None, Path::new("/bin/criu"));
        assert_eq!(reason, "CRIU reported failure");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let log = format!("Error {}", "é".repeat(400));
        let out = error_lines(&log).unwrap_or_default();
        assert!(out.len() <= MAX_LINE_LEN && out.starts_with("Error "));
    }
}
