//! Running a helper program (dpkg-deb, rpm, promtool) from a test and reading what it said.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `cmd` with `stdin` as its input; returns its exit code (-1 when killed by a
/// signal) and its stdout followed by its stderr. Panics naming the command if it cannot
/// be started.
pub fn run(cmd: &mut Command, stdin: &str) -> (i32, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(mut input) = child.stdin.take() {
        // A program that exits without reading its input is not an error here.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// What a finished program said: its stdout followed by its stderr.
pub fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
