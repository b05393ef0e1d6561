//! End to end with real CRIU: workloads with data directories move with their files, cut
//! at the same instant as their memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use understudy_tests::cluster::Cluster;
use understudy_tests::wait::eventually;
use understudy_tests::{numbers, require_criu, require_e2e};

fn started_cluster() -> Cluster {
    Cluster::started(&["host-a", "host-b"])
}

/// Creates the data directory `name` on `host`; returns its logical path.
fn data_dir(c: &Cluster, host: &str, name: &str) -> PathBuf {
    let logical = c.logical_dir(name);
    std::fs::create_dir_all(c.data_path(host, &logical)).unwrap();
    logical
}

fn migrate(c: &Cluster, name: &str) -> String {
    let out = c.cli(&["migrate", name]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate failed: {stdout}{}\n-- output on host-a:\n{}\n-- output on host-b:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&c.output_log("host-a", name)),
        tail(&c.output_log("host-b", name)),
    );
    stdout
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Appends a sequence number every 5 ms to a file it keeps open.
const APPENDER: &str =
    r#"exec 3>>"$1/seq"; i=0; while :; do i=$((i+1)); echo $i >&3; sleep 0.005; done"#;

#[test]
fn an_append_only_file_has_no_gap_or_duplicate_after_migration_and_keeps_growing() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    let logical = data_dir(&c, "host-a", "log");
    let l = logical.to_str().unwrap();
    c.create_with_data_dir(
        "appender",
        "500ms",
        &logical,
        &["/bin/sh", "-c", APPENDER, "sh", l],
    );
    let before = c.wait_for_epochs("appender", 2);
    let e = before.last_epoch.unwrap();
    assert!(
        e.data_bytes > 0,
        "the data directory is part of the epoch: {e:?}"
    );
    let show =
        String::from_utf8_lossy(&c.cli(&["workload", "show", "appender"]).stdout).into_owned();
    assert!(
        show.contains("data dirs:") && show.contains(" ms disk)"),
        "{show}"
    );

    migrate(&c, "appender");
    assert_eq!(c.workload("appender").unwrap().primary, "host-b");
    let on_b = c.data_path("host-b", &logical).join("seq");
    let seq = |p: &Path| numbers(&std::fs::read_to_string(p).unwrap_or_default());
    let first = eventually("host-b appends", Duration::from_secs(10), || {
        let n = seq(&on_b);
        if n.len() > 10 {
            Ok(n)
        } else {
            Err(format!("{} lines", n.len()))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let later = seq(&on_b);
    assert!(
        later.len() > first.len(),
        "the restored writer keeps appending"
    );
    for (i, n) in later.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64 + 1,
            "line {} of the file on host-b: gap or duplicate",
            i + 1
        );
    }
    // The restored tree, in the mount namespace CRIU rebuilt, is checkpointed again: it is
    // protected on its new host, not only moved.
    let moved = c.workload("appender").unwrap().epochs;
    let again = c.wait_for_epochs("appender", moved + 2);
    assert_eq!(again.primary, "host-b");
    assert!(again.unprotected.is_none(), "{:?}", again.unprotected);
    // The old host's copy is stale once the workload runs elsewhere, and is removed.
    let on_a = c.data_path("host-a", &logical);
    eventually(
        "host-a's stale copy removed",
        Duration::from_secs(10),
        || {
            if on_a.exists() {
                Err("still there".into())
            } else {
                Ok(())
            }
        },
    );

    // And back, from epochs of the restored tree: the file still has no gap or duplicate.
    migrate(&c, "appender");
    assert_eq!(c.workload("appender").unwrap().primary, "host-a");
    let back = c.data_path("host-a", &logical).join("seq");
    let before = seq(&on_b).len();
    let n = eventually("host-a appends again", Duration::from_secs(10), || {
        let n = seq(&back);
        if n.len() > before + 10 {
            Ok(n)
        } else {
            Err(format!("{} lines", n.len()))
        }
    });
    for (i, v) in n.iter().enumerate() {
        assert_eq!(*v, i as u64 + 1, "line {} back on host-a", i + 1);
    }
}

/// Commits one row per transaction and prints each id once SQLite has acknowledged it.
/// WAL mode: in rollback-journal mode SQLite refuses to write once the database file's
/// inode number differs from the one it opened (SQLITE_READONLY_DBMOVED), which any copy
/// on another host has; see docs/data-directories.md.
const SQLITE_WRITER: &str = r#"
import os, sqlite3, sys, time
db = sqlite3.connect(os.path.join(sys.argv[1], "app.db"), isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
i = db.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]
while True:
    i += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, randomblob(300))", (i,))
    db.execute("COMMIT")
    print(i, flush=True)
    time.sleep(0.003)
"#;

fn sqlite_ids(db: &Path) -> (String, Vec<u64>) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys\n\
             d=sqlite3.connect(sys.argv[1])\n\
             print(d.execute('PRAGMA integrity_check').fetchone()[0])\n\
             for (i,) in d.execute('SELECT id FROM t ORDER BY id'): print(i)\n",
        )
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (check, rest) = text.split_once('\n').unwrap_or((&text, ""));
    (check.to_owned(), numbers(rest))
}

#[test]
fn a_sqlite_database_keeps_every_acknowledged_transaction_across_migration() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    let logical = data_dir(&c, "host-a", "db");
    let l = logical.to_str().unwrap();
    c.create_with_data_dir(
        "db",
        "500ms",
        &logical,
        &["/usr/bin/python3", "-c", SQLITE_WRITER, l],
    );
    c.wait_for_epochs("db", 2);
    migrate(&c, "db");
    let acked_on_a = numbers(&c.output_log("host-a", "db"));
    assert!(
        acked_on_a.len() > 20,
        "host-a acknowledged {} ids",
        acked_on_a.len()
    );
    eventually("host-b commits more", Duration::from_secs(10), || {
        let n = numbers(&c.output_log("host-b", "db"));
        if n.len() > 20 {
            Ok(())
        } else {
            Err(format!("{} ids", n.len()))
        }
    });
    // Stop it (its data stays) and open the database the way an operator would.
    let out = c.cli(&["workload", "delete", "db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (check, ids) = sqlite_ids(&c.data_path("host-b", &logical).join("app.db"));
    assert_eq!(check, "ok", "integrity check of the migrated database");
    let missing: Vec<u64> = acked_on_a
        .iter()
        .filter(|i| ids.binary_search(i).is_err())
        .copied()
        .collect();
    let listing: Vec<String> = std::fs::read_dir(c.data_path("host-b", &logical))
        .unwrap()
        .flatten()
        .map(|e| format!("{:?} {}", e.file_name(), e.metadata().unwrap().len()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged on host-a before the freeze but not in the database on host-b: {} ids from {:?} (database has {} ids, {:?}..{:?}; files {listing:?}; host-b acknowledged {:?}..{:?})",
        missing.len(),
        missing.first(),
        ids.len(),
        ids.first(),
        ids.last(),
        numbers(&c.output_log("host-b", "db")).first(),
        numbers(&c.output_log("host-b", "db")).last(),
    );
    let acked_on_b = numbers(&c.output_log("host-b", "db"));
    assert_eq!(
        acked_on_b[0],
        acked_on_a.last().unwrap() + 1,
        "host-b continued the sequence"
    );
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids are consecutive"
    );
}

#[test]
fn deletes_renames_modes_owners_symlinks_and_empty_dirs_arrive_as_such() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    let logical = data_dir(&c, "host-a", "files");
    let a = c.data_path("host-a", &logical);
    std::fs::write(a.join("doomed"), b"delete me").unwrap();
    std::fs::write(a.join("old-name"), vec![7u8; 200_000]).unwrap();
    std::fs::write(a.join("private"), b"secret").unwrap();
    c.create_with_data_dir(
        "files",
        "500ms",
        &logical,
        &["/bin/sh", "-c", "while :; do sleep 1; done"],
    );
    let first = c.wait_for_epochs("files", 2).epochs;

    std::fs::remove_file(a.join("doomed")).unwrap();
    std::fs::rename(a.join("old-name"), a.join("new-name")).unwrap();
    std::fs::set_permissions(a.join("private"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(a.join("private"), Some(1234), Some(4321)).unwrap();
    xattr::set(a.join("private"), "user.label", b"blue").unwrap();
    std::os::unix::fs::symlink("new-name", a.join("link")).unwrap();
    std::fs::create_dir_all(a.join("empty/nested")).unwrap();
    let after = c.wait_for_epochs("files", first + 2);
    let e = after.last_epoch.unwrap();
    assert!(
        e.data_changed < 100_000,
        "the renamed file's content was not sent again: {} bytes changed",
        e.data_changed
    );

    migrate(&c, "files");
    let b = c.data_path("host-b", &logical);
    assert!(!b.join("doomed").exists(), "deleted file came back");
    assert!(
        !b.join("old-name").exists(),
        "renamed file still under its old name"
    );
    assert_eq!(
        std::fs::read(b.join("new-name")).unwrap(),
        vec![7u8; 200_000]
    );
    let md = std::fs::metadata(b.join("private")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (1234, 4321));
    assert_eq!(
        xattr::get(b.join("private"), "user.label")
            .unwrap()
            .as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(
        std::fs::read_link(b.join("link")).unwrap(),
        Path::new("new-name")
    );
    assert!(b.join("empty/nested").is_dir());
    assert_eq!(std::fs::read(b.join("private")).unwrap(), b"secret");
}

#[test]
fn a_data_directory_that_is_missing_a_file_or_not_allowed_is_refused_at_create() {
    require_e2e!();
    let c = started_cluster();
    let missing = c.logical_dir("missing");
    let file = c.logical_dir("plain-file");
    std::fs::create_dir_all(c.data_path("host-a", &c.logical_root())).unwrap();
    std::fs::write(c.data_path("host-a", &file), b"x").unwrap();
    for (dir, words) in [
        (missing.clone(), "does not exist"),
        (file.clone(), "is not a directory"),
        (PathBuf::from("/etc"), "outside this agent's allowed roots"),
    ] {
        let out = c.cli(&[
            "workload",
            "create",
            "w",
            "--host",
            "host-a",
            "--shadow",
            "host-b",
            "--data-dir",
            dir.to_str().unwrap(),
            "--",
            "/bin/sleep",
            "1000",
        ]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(65), "{dir:?}: {err}");
        assert!(
            err.contains(dir.to_str().unwrap()) && err.contains(words),
            "{err}"
        );
        assert!(
            c.workload("w").is_err(),
            "nothing was recorded for a refused create"
        );
    }
}

/// Writes a file in its data directory, deletes it while holding it open, and keeps
/// printing what the open file holds.
const DELETED_BUT_OPEN: &str = r#"
import os, sys, time
path = os.path.join(sys.argv[1], "scratch")
f = open(path, "w+")
f.write("kept after unlink")
f.flush()
os.unlink(path)
while True:
    f.seek(0)
    print(f.read(), flush=True)
    time.sleep(0.05)
"#;

#[test]
fn a_deleted_but_open_file_comes_back_open_with_its_content() {
    require_e2e!();
    require_criu!();
    let c = started_cluster();
    let logical = data_dir(&c, "host-a", "ghost");
    let l = logical.to_str().unwrap();
    c.create_with_data_dir(
        "ghost",
        "500ms",
        &logical,
        &["/usr/bin/python3", "-c", DELETED_BUT_OPEN, l],
    );
    c.wait_for_epochs("ghost", 2);
    migrate(&c, "ghost");
    let on_b = eventually("host-b prints", Duration::from_secs(10), || {
        let out = c.output_log("host-b", "ghost");
        if out.lines().count() >= 5 {
            Ok(out)
        } else {
            Err(format!("{out:?}"))
        }
    });
    assert!(
        on_b.lines().all(|l| l == "kept after unlink"),
        "the restored process reads its unlinked file: {on_b}"
    );
    assert!(
        !c.data_path("host-b", &logical).join("scratch").exists(),
        "and the file is not linked into the directory"
    );
}

/// `workload create` with data directory `dir`, expected to be refused; returns why.
fn refused(c: &Cluster, name: &str, dir: &str) -> String {
    let out = c.cli(&[
        "workload",
        "create",
        name,
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--data-dir",
        dir,
        "--",
        "/bin/sleep",
        "60",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(65),
        "{name} with {dir} was not refused: {err}"
    );
    assert!(c.workload(name).is_err(), "{name} was created");
    err
}

#[test]
fn data_directories_are_never_shared_and_never_leave_the_allowed_roots() {
    require_e2e!();
    let c = started_cluster();
    // The allowed root itself.
    let root = c.logical_root();
    let err = refused(&c, "rooted", root.to_str().unwrap());
    assert!(err.contains("allowed root itself"), "{err}");
    let db = data_dir(&c, "host-a", "shared/db");
    c.create_workload(&[
        "owner",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "1h",
        "--data-dir",
        db.to_str().unwrap(),
        "--",
        "/bin/sleep",
        "600",
    ]);
    let parent = c.logical_dir("shared");
    let child = db.join("sub");
    for (name, dir) in [
        ("same", db.clone()),
        ("parent", parent.clone()),
        ("child", child.clone()),
    ] {
        std::fs::create_dir_all(c.data_path("host-a", &dir)).unwrap();
        let err = refused(&c, name, dir.to_str().unwrap());
        assert!(
            err.contains("overlaps") && err.contains("\"owner\""),
            "{name}: {err}"
        );
    }
    // A parent that is a symlink out of the allowed root, to /etc.
    let link = c.logical_dir("escape");
    std::os::unix::fs::symlink("/etc", c.data_path("host-a", &link)).unwrap();
    let sneaky = link.join("understudy-test");
    let err = refused(&c, "sneaky", sneaky.to_str().unwrap());
    assert!(
        err.contains("/etc/understudy-test") && err.contains("outside"),
        "{err}"
    );
    assert!(!Path::new("/etc/understudy-test").exists());
    // '.' hidden in the middle of a path.
    let dotted = format!("{}/./db", parent.display());
    let err = refused(&c, "dotted", &dotted);
    assert!(err.contains("normalised"), "{err}");
    // The owner was never disturbed.
    assert_eq!(c.workload("owner").unwrap().state.name(), "running");
}
