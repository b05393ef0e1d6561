//! Pieces shared by every understudy binary: the wire protocol and its framing, the codec,
//! host identities and mutual-TLS setup, and config-file plumbing.
//!
//! This crate owns formats and their validation; it makes no policy decisions and opens no
//! sockets of its own (framing works over any async stream it is handed).

pub mod codec;
pub mod config;
pub mod data_entry;
pub mod delta_apply;
pub mod epoch;
pub mod exit;
pub mod frame;
pub mod inventory;
pub mod io;
pub mod out;
pub mod prom;
pub mod protocol;
pub mod seal;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
pub mod telemetry_v9;
pub mod tls;
pub mod transfer;
pub mod workload;
pub mod workload_v5;
pub mod workload_v6;
pub mod workload_v7;
