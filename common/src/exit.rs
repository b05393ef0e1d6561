//! Process exit codes, which are API for scripts and systemd (from BSD `sysexits.h`).

/// The command line was used incorrectly.
pub const USAGE: i32 = 64;
/// Input data (a file the operator named) was malformed.
pub const DATA_ERR: i32 = 65;
/// An input file the operator named does not exist or cannot be read.
pub const NO_INPUT: i32 = 66;
/// A service the command needs (the coordinator's API) could not be reached.
pub const UNAVAILABLE: i32 = 69;
/// Something went wrong that is not the operator's input.
pub const SOFTWARE: i32 = 70;
/// A temporary failure: the operation was undone and may be retried.
pub const TEMP_FAIL: i32 = 75;
/// A file could not be created or written.
pub const CANT_CREATE: i32 = 73;
/// A configuration file is missing, unreadable or invalid.
pub const CONFIG: i32 = 78;
/// Refused: not permitted (EX_NOPERM), e.g. a join token that was spent already.
pub const NO_PERM: i32 = 77;

/// An error a long-running command stops with, and the exit code that says what kind it
/// is: [`CONFIG`] for what the operator must fix in a file (systemd's
/// `RestartPreventExitStatus=78` then leaves the unit failed instead of restarting it),
/// [`SOFTWARE`] otherwise.
pub trait Coded: std::fmt::Display {
    /// The exit code.
    fn exit_code(&self) -> i32;
}
