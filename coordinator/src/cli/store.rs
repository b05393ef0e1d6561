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
    /// Put a backup's records into the store named in the config, which must hold no
    /// workload (a single coordinator, stopped; a group restores with `understudy
    /// restore`).
    Restore {
        /// Path to coordinator.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// The backup file (`understudy backup`).
        #[arg(long)]
        from: PathBuf,
    },
}

pub fn run(cmd: StoreCommand) -> i32 {
    let (config, from) = match &cmd {
        StoreCommand::Check { config } | StoreCommand::Salvage { config } => (config, None),
        StoreCommand::Restore { config, from } => (config, Some(from)),
    };
    let loaded = match super::load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = loaded.store.path;
    match (&cmd, from) {
        (_, Some(from)) if loaded.cluster.is_some() => {
            eprintln!(
                "{}: a group member's store is restored through the group: start the new group, then `understudy restore --from {}`",
                config.display(),
                from.display()
            );
            exit::USAGE
        }
        (_, Some(from)) => restore_store(&path, from),
        (StoreCommand::Salvage { .. }, None) => salvage_store(&path),
        _ => check_store(&path),
    }
}

fn restore_store(path: &Path, from: &Path) -> i32 {
    let (b, _) = match super::backup::read(from) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let done = (|| -> Result<Result<usize, String>, crate::store::StoreError> {
        let store = crate::store::Store::open(path)?;
        if let Some((kind, key, why)) = store.unusable(&b.records).first() {
            return Ok(Err(format!(
                "{}: the {kind} record {key:?} cannot be used: {why}",
                from.display()
            )));
        }
        let (workloads, moving) = store.workload_count()?;
        if workloads + moving > 0 {
            return Ok(Err(format!(
                "{} already holds {workloads} workload(s): restore into an empty store",
                path.display()
            )));
        }
        store.restore(&b.records)?;
        Ok(Ok(b.records.len()))
    })();
    match done {
        Ok(Ok(n)) => {
            outln!(
                "{}: {n} records restored from {}",
                path.display(),
                from.display()
            );
            0
        }
        Ok(Err(why)) => {
            eprintln!("{why}");
            exit::DATA_ERR
        }
        Err(e) => {
            eprintln!("{e}");
            exit::SOFTWARE
        }
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
