//! Printing a command's output to stdout so that a reader who stops reading (`| head`)
//! ends the command quietly instead of with a panic: `outln!` and `out!` stand in for
//! `println!` and `print!` in every command-line path.

use std::io::Write;

/// Writes `args` to stdout. A closed pipe ends the process quietly with status 0, like
/// the tools a reader pipes into expect; any other write error ends it with 74 (EX_IOERR).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to stdout: {e}");
        std::process::exit(74);
    }
}

/// `println!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write_stdout(format_args!($($arg)*)) };
}
