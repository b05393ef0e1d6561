//! The life of each workload this host runs as primary. One task per workload
//! ([`task`]) owns its state machine ([`machine`], free of I/O) and carries out what the
//! machine decides with mechanisms that know nothing of the agent around them: an epoch's
//! dump and transfer ([`epoch`]), a restore ([`restore`], opening a sealed epoch with
//! [`unseal`]), a stop ([`stop`]); the pace of periodic epochs comes from [`cadence`],
//! free of I/O too. Orders, exits and lease renewals reach the task as messages through
//! its [`task::Handle`].

pub mod cadence;
pub mod epoch;
pub mod machine;
pub mod restore;
pub mod stop;
pub mod task;
pub mod unseal;

#[cfg(test)]
mod machine_tests;

pub use machine::{Event, Machine};
pub use task::{spawn, Handle, Mailbox, Snapshot};
