//! The process trees this agent started or restored, persisted in `DATA_DIR/copies.bin`,
//! so that a restarted agent knows which trees an earlier run of it left running: it
//! reports them (unsupervised: no epochs, no output collected), and stops them when told
//! to delete or release the workload, instead of losing track of a running copy.
//!
//! A tree is recognised by its root's pid *and* that process's start time (field 22 of
//! `/proc/PID/stat`), so a pid the kernel has since given to another process never is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use understudy_common::codec;
use understudy_common::workload::{Peer, WorkloadSpec};
use understudy_common::workload_v5::SpecV5;
use understudy_common::workload_v6::SpecV6;

use super::{Format, StateFileError};
use crate::procs::{is_alive, start_ticks};

const FORMAT: Format = Format {
    magic: b"USCP",
    // 4: the spec's priority; 5: its secret_env (version 3 and 4 files are read with the
    // spec's old layouts); 6: several shadows (older files hold at most one).
    version: 6,
    oldest: 3,
    max_bytes: 16 << 20,
};

/// One tree this agent started or restored. (`S` is the spec's type and `P` the shadows':
/// others only to read files written in an older layout.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyRecord<S = WorkloadSpec, P = Vec<Peer>> {
    /// What it runs.
    pub spec: S,
    /// The generation it runs under.
    pub generation: u64,
    /// Where its epochs go.
    pub shadows: P,
    /// Host pid of the tree's root.
    pub pid: i32,
    /// The root's start time in clock ticks since boot.
    pub start_ticks: u64,
    /// The number its next epoch takes (epoch numbers only grow).
    pub next_epoch: u64,
}

impl<S> CopyRecord<S, Option<Peer>> {
    /// A record of a file written before several shadows, in today's layout.
    fn upgrade<T>(self, f: impl FnOnce(S) -> T) -> CopyRecord<T> {
        CopyRecord {
            spec: f(self.spec),
            generation: self.generation,
            shadows: self.shadows.into_iter().collect(),
            pid: self.pid,
            start_ticks: self.start_ticks,
            next_epoch: self.next_epoch,
        }
    }
}

impl CopyRecord {
    /// What a build before several shadows would have written for this record (its
    /// first shadow only, its spec by `f`): for tests that read old files.
    #[cfg(test)]
    fn written_by_old_build<T>(
        self,
        f: impl FnOnce(WorkloadSpec) -> T,
    ) -> CopyRecord<T, Option<Peer>> {
        CopyRecord {
            spec: f(self.spec),
            generation: self.generation,
            shadows: self.shadows.into_iter().next(),
            pid: self.pid,
            start_ticks: self.start_ticks,
            next_epoch: self.next_epoch,
        }
    }
}

/// The persisted set of trees.
#[derive(Debug)]
pub struct Copies {
    path: PathBuf,
    map: Mutex<BTreeMap<String, CopyRecord>>,
}

impl Copies {
    /// Loads `dir/copies.bin` (empty if absent).
    pub fn load(dir: &Path) -> Result<Self, StateFileError> {
        let path = dir.join("copies.bin");
        let map = FORMAT
            .read_with(&path, |version, body| match version {
                ..=3 => {
                    let old: BTreeMap<String, CopyRecord<SpecV5, Option<Peer>>> =
                        codec::decode(body, FORMAT.max_bytes)?;
                    Ok(old
                        .into_iter()
                        .map(|(k, r)| (k, r.upgrade(Into::into)))
                        .collect())
                }
                4 => {
                    let old: BTreeMap<String, CopyRecord<SpecV6, Option<Peer>>> =
                        codec::decode(body, FORMAT.max_bytes)?;
                    Ok(old
                        .into_iter()
                        .map(|(k, r)| (k, r.upgrade(Into::into)))
                        .collect())
                }
                5 => {
                    let old: BTreeMap<String, CopyRecord<WorkloadSpec, Option<Peer>>> =
                        codec::decode(body, FORMAT.max_bytes)?;
                    Ok(old
                        .into_iter()
                        .map(|(k, r)| (k, r.upgrade(|s| s)))
                        .collect())
                }
                _ => codec::decode(body, FORMAT.max_bytes),
            })?
            .unwrap_or_default();
        Ok(Copies {
            path,
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CopyRecord>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every recorded tree, by workload.
    pub fn all(&self) -> BTreeMap<String, CopyRecord> {
        self.lock().clone()
    }

    /// The recorded tree of `workload`.
    pub fn get(&self, workload: &str) -> Option<CopyRecord> {
        self.lock().get(workload).cloned()
    }

    /// Records (or replaces) `workload`'s tree.
    pub fn set(&self, record: CopyRecord) -> Result<(), StateFileError> {
        let mut map = self.lock();
        if map.get(&record.spec.name) == Some(&record) {
            return Ok(());
        }
        let mut next = map.clone();
        next.insert(record.spec.name.clone(), record);
        FORMAT.write(&self.path, &next)?;
        *map = next;
        Ok(())
    }

    /// Forgets `workload`'s tree.
    pub fn remove(&self, workload: &str) -> Result<(), StateFileError> {
        let mut map = self.lock();
        if !map.contains_key(workload) {
            return Ok(());
        }
        let mut next = map.clone();
        next.remove(workload);
        FORMAT.write(&self.path, &next)?;
        *map = next;
        Ok(())
    }
}

/// Whether `record`'s tree is still the live process it was.
pub fn still_running(record: &CopyRecord) -> bool {
    start_ticks(record.pid) == Some(record.start_ticks) && is_alive(record.pid)
}

/// Stops `record`'s tree: with `graceful`, its spec's stop signal first (its supervisor
/// passes it on) and up to its stop timeout to end; then SIGKILL (its root is its PID
/// namespace's init: killing it ends them all), waiting up to `limit` for it to be gone.
/// Returns whether it is gone.
pub fn stop_and_wait(record: &CopyRecord, graceful: bool, limit: Duration) -> bool {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let sig = understudy_common::workload::stop_signal_number(&record.spec.stop_signal)
        .and_then(|s| Signal::try_from(s).ok());
    if let (true, Some(sig)) = (graceful && still_running(record), sig) {
        let _ = kill(Pid::from_raw(record.pid), sig);
        let started = Instant::now();
        let grace = Duration::from_millis(record.spec.stop_timeout_ms);
        while still_running(record) && started.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if still_running(record) {
        let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
    }
    let started = Instant::now();
    while still_running(record) {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::workload::RestartPolicy;

    fn record(name: &str, pid: i32) -> CopyRecord {
        CopyRecord {
            spec: WorkloadSpec {
                name: name.into(),
                command: vec!["/bin/sleep".into(), "60".into()],
                env: Vec::new(),
                workdir: None,
                interval_ms: 1000,
                probe: None,
                data_dirs: Vec::new(),
                restart: RestartPolicy::default(),
                ..Default::default()
            },
            generation: 2,
            shadows: vec![
                Peer {
                    name: "b".into(),
                    addr: "10.0.0.2:7442".parse().unwrap(),
                },
                Peer {
                    name: "c".into(),
                    addr: "10.0.0.3:7442".parse().unwrap(),
                },
            ],
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            next_epoch: 12,
        }
    }

    /// `r` as a file written before several shadows reads back: with its first shadow.
    fn first_shadow_only(mut r: CopyRecord) -> CopyRecord {
        r.shadows.truncate(1);
        r
    }

    #[test]
    fn a_file_written_before_several_shadows_is_read_with_its_one_shadow() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("old", std::process::id() as i32);
        let old: BTreeMap<String, CopyRecord<WorkloadSpec, Option<Peer>>> =
            [("old".to_string(), r.clone().written_by_old_build(|s| s))].into();
        let v5 = Format {
            version: 5,
            ..FORMAT
        };
        v5.write(&dir.path().join("copies.bin"), &old).unwrap();
        let copies = Copies::load(dir.path()).unwrap();
        assert_eq!(copies.get("old"), Some(first_shadow_only(r)));
    }

    #[test]
    fn a_file_written_before_secret_env_is_read_with_none() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("old", std::process::id() as i32);
        let old: BTreeMap<String, CopyRecord<SpecV6, Option<Peer>>> = [(
            "old".to_string(),
            r.clone().written_by_old_build(SpecV6::written_by_old_build),
        )]
        .into();
        let v4 = Format {
            version: 4,
            ..FORMAT
        };
        v4.write(&dir.path().join("copies.bin"), &old).unwrap();
        let copies = Copies::load(dir.path()).unwrap();
        assert_eq!(copies.get("old"), Some(first_shadow_only(r)));
    }

    #[test]
    fn a_file_written_before_priority_is_read_with_normal_priority() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("old", std::process::id() as i32);
        let old: BTreeMap<String, CopyRecord<SpecV5, Option<Peer>>> = [(
            "old".to_string(),
            r.clone().written_by_old_build(SpecV5::written_by_old_build),
        )]
        .into();
        let v3 = Format {
            version: 3,
            ..FORMAT
        };
        v3.write(&dir.path().join("copies.bin"), &old).unwrap();
        let copies = Copies::load(dir.path()).unwrap();
        assert_eq!(copies.get("old"), Some(first_shadow_only(r)));
    }

    #[test]
    fn records_survive_a_reload_and_a_reused_pid_is_not_taken_for_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let c = Copies::load(dir.path()).unwrap();
        c.set(record("w", pid)).unwrap();
        c.set(record("x", pid)).unwrap();
        c.remove("x").unwrap();
        let c = Copies::load(dir.path()).unwrap();
        let got = c.get("w").unwrap();
        assert_eq!(got, record("w", pid));
        assert!(still_running(&got));
        let mut reused = got.clone();
        reused.start_ticks += 1;
        assert!(!still_running(&reused), "same pid, other start time");
        assert!(c.get("x").is_none());
        assert!(stop_and_wait(&got, false, Duration::from_secs(5)));
        let _ = child.wait();
        assert!(!still_running(&got));
    }
}
