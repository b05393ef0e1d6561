//! `understudy ca init` and `understudy ca issue`: the cluster CA on disk.
//!
//! Files are written to a temporary name and renamed into place, keys with mode 0600, and
//! existing files are never overwritten unless `--force` is given.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use understudy_common::outln;

use clap::Subcommand;
use understudy_common::exit;
use understudy_common::tls::ca::{create_ca, issue, PemPair, Validity};
use understudy_common::tls::Role;

/// Longest validity `ca init` and `ca issue` accept, in days (a hundred years): beyond it
/// the dates overflow, and an expired (0-day) certificate is never useful.
const MAX_DAYS: i64 = 36_500;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new cluster CA (ca.crt, ca.key) in DIR.
    Init {
        /// Directory for the CA files; created if missing.
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA stays valid (1 to 36500).
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=MAX_DAYS))]
        days: u32,
    },
    /// Issue a certificate (NAME.crt, NAME.key) signed by the CA in DIR: for a host (agent,
    /// coordinator) or for a person or tool on the operator API (viewer, operator, admin).
    Issue {
        /// Directory holding ca.crt and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// Host or user name to put in the certificate.
        #[arg(long)]
        name: String,
        /// Role the certificate grants: agent, coordinator, viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Days the certificate stays valid (1 to 36500).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=MAX_DAYS))]
        days: u32,
        /// Where to write the files (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing files for this name.
        #[arg(long)]
        force: bool,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub fn run(cmd: CaCommand) -> i32 {
    match cmd {
        CaCommand::Init { dir, days } => init(&dir, days),
        CaCommand::Issue {
            dir,
            name,
            role,
            days,
            out,
            force,
        } => issue_cmd(
            &dir,
            &name,
            role,
            days,
            out.as_deref().unwrap_or(&dir),
            force,
        ),
    }
}

fn init(dir: &Path, days: u32) -> i32 {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    for p in [&crt, &key] {
        if p.exists() {
            eprintln!(
                "{} already exists; refusing to replace a cluster CA (every host certificate depends on it)",
                p.display()
            );
            return exit::CANT_CREATE;
        }
    }
    let pair = match create_ca(Validity::days_from_now(days)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ca init: {e}");
            return exit::SOFTWARE;
        }
    };
    match write_pair(dir, &crt, &key, &pair) {
        Ok(()) => {
            outln!("created cluster CA {} (valid {days} days)", crt.display());
            0
        }
        Err(code) => code,
    }
}

fn issue_cmd(dir: &Path, name: &str, role: Role, days: u32, out: &Path, force: bool) -> i32 {
    let read = |p: PathBuf| {
        fs::read_to_string(&p).map_err(|e| {
            eprintln!(
                "cannot read {}: {e} (run `understudy ca init --dir {}` first?)",
                p.display(),
                dir.display()
            );
            exit::DATA_ERR
        })
    };
    let ca = match (read(dir.join("ca.crt")), read(dir.join("ca.key"))) {
        (Ok(cert_pem), Ok(key_pem)) => PemPair { cert_pem, key_pem },
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let (crt, key) = (
        out.join(format!("{name}.crt")),
        out.join(format!("{name}.key")),
    );
    if !force {
        if let Some(p) = [&crt, &key].into_iter().find(|p| p.exists()) {
            eprintln!("{} already exists; pass --force to replace it", p.display());
            return exit::CANT_CREATE;
        }
    }
    let pair = match issue(&ca, name, role, Validity::days_from_now(days)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ca issue: {e}");
            return exit::DATA_ERR;
        }
    };
    match write_pair(out, &crt, &key, &pair) {
        Ok(()) => {
            outln!("issued {role} certificate for {name}: {}", crt.display());
            0
        }
        Err(code) => code,
    }
}

fn write_pair(dir: &Path, crt: &Path, key: &Path, pair: &PemPair) -> Result<(), i32> {
    let fail = |p: &Path, e: std::io::Error| {
        eprintln!("cannot write {}: {e}", p.display());
        exit::CANT_CREATE
    };
    fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    write_atomic(key, pair.key_pem.as_bytes(), 0o600).map_err(|e| fail(key, e))?;
    write_atomic(crt, pair.cert_pem.as_bytes(), 0o644).map_err(|e| fail(crt, e))?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
