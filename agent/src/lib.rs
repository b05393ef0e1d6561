//! The understudy agent: host telemetry, the control connection to the coordinator, the
//! workloads it runs as primary, and the epochs it sends to and keeps for shadows.

pub mod backoff;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod datadir;
pub mod dataplane;
pub mod exporter;
pub mod faults;
pub mod hostmetrics;
pub mod inventory;
pub mod join;
pub mod lease;
pub mod life;
pub mod node;
pub mod orders;
pub mod pagemap;
pub mod postcopy;
pub mod predict;
pub mod procs;
pub mod renew;
pub mod replication;
pub mod run;
pub mod scratch;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod tracked;
pub mod workload;
