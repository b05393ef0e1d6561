//! The understudy coordinator: host registry, control-plane server, HTTP API, and the
//! operator CLI that talks to it.

pub mod admin;
pub mod backup;
pub mod cli;
pub mod config;
pub mod decide;
pub mod events;
pub mod faults;
pub mod fleet_metrics;
pub mod metrics;
pub mod raft;
pub mod registry;
pub mod revocation;
pub mod server;
pub mod store;
pub mod tokens;
pub mod workloads;
