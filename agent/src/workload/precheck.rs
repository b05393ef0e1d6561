//! Refusing a spec this host cannot start, before anything runs: its user and groups must
//! exist here, its working directory must exist, and its command must be an executable
//! file that user may run (looked up on `PATH` when it has no `/`, as the exec will). A
//! refusal names the cause and becomes `workload create`'s error (exit 65), instead of a
//! workload shown running that exited at once.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use understudy_common::workload::WorkloadSpec;

use crate::datadir::DataRoots;
use crate::supervisor::account;

/// `PATH` when neither the spec nor the agent has one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where this host keeps logical path `p`: inside a data directory, its host copy.
fn on_host(p: &Path, spec: &WorkloadSpec, roots: &DataRoots) -> PathBuf {
    match spec.data_dirs.iter().find(|d| p.starts_with(d)) {
        Some(d) => roots
            .host_path(d)
            .join(p.strip_prefix(d).unwrap_or(Path::new(""))),
        None => p.to_path_buf(),
    }
}

/// Checks that `spec` can be started on this host.
pub fn check(spec: &WorkloadSpec, roots: &DataRoots) -> Result<(), String> {
    let who = account::of_spec(spec)?;
    if let Some(dir) = &spec.workdir {
        let host = on_host(dir, spec, roots);
        let in_data_dir = spec.data_dirs.iter().any(|d| dir.starts_with(d));
        if !in_data_dir && !host.is_dir() {
            return Err(format!(
                "workdir {} is not a directory on this host",
                dir.display()
            ));
        }
    }
    let program = &spec.command[0];
    let path = if program.contains('/') {
        let p = Path::new(program);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            spec.workdir.as_deref().unwrap_or(Path::new("/")).join(p)
        };
        on_host(&p, spec, roots)
    } else {
        let search = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        search
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!("command {program:?} is not found on this host's PATH ({search})")
            })?
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("command {program:?} ({}): {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "command {program:?} ({}) is not a file",
            path.display()
        ));
    }
    if !who.may_execute(meta.mode(), meta.uid(), meta.gid()) {
        return Err(format!(
            "command {program:?} ({}, mode {:o}) is not executable by user {}",
            path.display(),
            meta.mode() & 0o7777,
            who.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkloadDataSection;

    fn roots() -> DataRoots {
        DataRoots::new(&WorkloadDataSection {
            allowed_roots: vec!["/srv".into()],
            host_root: "/".into(),
        })
    }

    fn spec(command: &[&str]) -> WorkloadSpec {
        WorkloadSpec {
            name: "w".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..WorkloadSpec::default()
        }
    }

    #[test]
    fn a_command_that_cannot_run_here_is_refused_naming_why() {
        assert!(check(&spec(&["/bin/sh", "-c", "true"]), &roots()).is_ok());
        assert!(
            check(&spec(&["sleep", "1"]), &roots()).is_ok(),
            "found on PATH"
        );
        let e = check(&spec(&["/nonexistent/server"]), &roots()).unwrap_err();
        assert!(
            e.contains("/nonexistent/server") && e.contains("No such file"),
            "{e}"
        );
        let e = check(&spec(&["no-such-program-here"]), &roots()).unwrap_err();
        assert!(e.contains("not found on this host's PATH"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let e = check(&spec(&[plain.to_str().unwrap()]), &roots()).unwrap_err();
        assert!(e.contains("not executable"), "{e}");
        let e = check(&spec(&["/etc"]), &roots()).unwrap_err();
        assert!(e.contains("not a file"), "{e}");
        let mut s = spec(&["/bin/true"]);
        s.user = Some("no-such-user-here".into());
        let e = check(&s, &roots()).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let mut s = spec(&["/bin/true"]);
        s.workdir = Some("/nonexistent-dir".into());
        assert!(check(&s, &roots()).unwrap_err().contains("workdir"));
    }

    #[test]
    fn execute_permission_is_judged_for_the_specs_user() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("owner-only");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let path = script.to_str().unwrap();
        assert!(check(&spec(&[path]), &roots()).is_ok(), "root may");
        let mut s = spec(&[path]);
        s.user = Some("nobody".into());
        let e = check(&s, &roots()).unwrap_err();
        assert!(e.contains("not executable by user nobody"), "{e}");
    }
}
