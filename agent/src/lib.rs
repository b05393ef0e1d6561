//! The understudy agent: host telemetry and the control connection to the coordinator.
//! Later capabilities (workload supervision, checkpoints, replication) hang off [`run`].

pub mod backoff;
pub mod cli;
pub mod config;
pub mod control;
pub mod run;
pub mod telemetry;
