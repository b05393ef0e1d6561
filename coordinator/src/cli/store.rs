//! `understudy store check|salvage`: reading the coordinator's database offline, and
//! recovering from one the coordinator cannot read (docs/operations.md).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use understudy_common::{exit, outln};

use crate::server::wall_ms;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Read every record of the store named in the config and report any that cannot be
    /// read, by kind and key (the coordinator must be stopped).
    Check {
        /// Path to coordinator.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Move the store aside and copy every readable record into a fresh one (the
    /// coordinator must be stopped). Workloads whose records were lost are rebuilt from
    /// the agents' reports when they reconnect.
    Salvage {
        /// Path to coordinator.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn run(cmd: StoreCommand) -> i32 {
    let (config, salvage) = match &cmd {
        StoreCommand::Check { config } => (config, false),
        StoreCommand::Salvage { config } => (config, true),
    };
    let path = match super::load_config(config) {
        Ok(c) => c.store.path,
        Err(code) => return code,
    };
    if salvage {
        salvage_store(&path)
    } else {
        check_store(&path)
    }
}

fn check_store(path: &Path) -> i32 {
    let records = match crate::store::check(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return exit::SOFTWARE;
        }
    };
    let bad: Vec<_> = records.iter().filter(|r| r.problem.is_some()).collect();
    for kind in ["host", "workload", "migration", "tombstone"] {
        let n = records.iter().filter(|r| r.kind == kind).count();
        outln!("{kind} records: {n}");
    }
    for r in &bad {
        eprintln!(
            "{}: {} record {:?} cannot be read: {}",
            path.display(),
            r.kind,
            r.key,
            r.problem.as_deref().unwrap_or_default()
        );
    }
    if bad.is_empty() {
        outln!("{}: every record reads", path.display());
        0
    } else {
        eprintln!("`understudy store salvage` keeps the others (docs/operations.md)");
        exit::DATA_ERR
    }
}

fn salvage_store(path: &Path) -> i32 {
    match crate::store::salvage(path, wall_ms()) {
        Ok(s) => {
            outln!(
                "{}: moved to {}; {} records kept, {} dropped",
                path.display(),
                s.moved_to.display(),
                s.kept.len(),
                s.dropped.len()
            );
            for (kind, key, why) in &s.dropped {
                outln!("dropped {kind} record {key:?}: {why}");
            }
            if s.dropped.iter().any(|d| d.0 == "workload") {
                outln!("workloads whose records were dropped are rebuilt from their primaries' reports when the agents reconnect");
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            exit::SOFTWARE
        }
    }
}
