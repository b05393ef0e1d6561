//! `understudy backup --out FILE` and `understudy restore --from FILE` (through the API),
//! and `understudy store restore` (offline, for a single coordinator): docs/ha.md.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use understudy_common::{exit, outln};

use super::api::{get_bytes, post_bytes};
use crate::backup::{self, Backup, MAX_BACKUP};
use crate::server::http_backup::Restored;
use crate::store::{kind_name, Op};

/// Records by kind, for people: "2 workload, 3 host, …".
fn counts(records: &[Op]) -> String {
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for op in records {
        *by.entry(kind_name(op.kind).unwrap_or("unknown"))
            .or_default() += 1;
    }
    let parts: Vec<String> = by.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if parts.is_empty() {
        "no records".into()
    } else {
        parts.join(", ")
    }
}

/// `understudy backup --out FILE`: every record of the coordinator (the group's leader),
/// checked, then written to `out` (a temporary file renamed into place once synced).
pub fn take(base: &str, out: &Path) -> i32 {
    let bytes = match get_bytes(base, "/v1/backup", MAX_BACKUP) {
        Ok(b) => b,
        Err(f) => return f.report(),
    };
    let b = match backup::decode(&bytes) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("the coordinator's backup does not read back: {e}");
            return exit::SOFTWARE;
        }
    };
    if let Err(e) = write_synced(out, &bytes) {
        eprintln!("cannot write {}: {e}", out.display());
        return exit::CANT_CREATE;
    }
    outln!(
        "{}: backup of {} records ({}), {} bytes",
        out.display(),
        b.records.len(),
        counts(&b.records),
        bytes.len()
    );
    0
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads and checks the backup at `from`; prints why not and returns the exit code.
pub fn read(from: &Path) -> Result<(Backup, Vec<u8>), i32> {
    let bytes = match fs::File::open(from).and_then(|f| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_BACKUP as u64 + 1), &mut out)?;
        Ok(out)
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {}: {e}", from.display());
            return Err(exit::NO_INPUT);
        }
    };
    match backup::decode(&bytes) {
        Ok(b) => Ok((b, bytes)),
        Err(e) => {
            eprintln!("{}: {e}", from.display());
            Err(exit::DATA_ERR)
        }
    }
}

/// `understudy restore --from FILE`: the backup's records into the (empty) group.
pub fn restore(base: &str, from: &Path) -> i32 {
    let (_, bytes) = match read(from) {
        Ok(b) => b,
        Err(code) => return code,
    };
    match post_bytes::<Restored>(base, "/v1/restore", bytes) {
        Ok(r) => {
            outln!(
                "restored {} records ({} workloads) from {}; the leader rebuilt its state and the agents reconnect",
                r.records,
                r.workloads,
                from.display()
            );
            0
        }
        Err(f) => f.report(),
    }
}
