//! The command lines as an operator meets them: config mistakes exit 78 naming the file
//! and key, usage mistakes exit 64, and nothing is overwritten or half-written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Output};

use understudy_tests::cluster::bin;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(bin(program))
        .args(args)
        .env_remove("UNDERSTUDY_COORDINATOR")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_errors_exit_78_and_name_file_key_and_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("coordinator.toml");
    std::fs::write(
        &cfg,
        "[quic]\nlisten = \"0.0.0.0:7440\"\nlisten_port = 1\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[store]\npath=\"/x.redb\"\n",
    )
    .unwrap();
    let out = run("understudy", &["validate", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("coordinator.toml") && err.contains("quic.listen_port"),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");

    // Parsable but wrong in several places: every problem is listed with its key.
    std::fs::write(
        &cfg,
        "[tls]\nca=\"/nope/ca.crt\"\ncert=\"/nope/c.crt\"\nkey=\"/nope/c.key\"\n[store]\npath=\"/nope/dir/c.redb\"\n[heartbeat]\ninterval=\"1s\"\ntimeout=\"1s\"\n",
    )
    .unwrap();
    let out = run("understudy", &["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    for key in ["heartbeat.timeout", "tls.ca"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }

    let out = run("understudy-agent", &["validate", "/nonexistent/agent.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("/nonexistent/agent.toml"));
}

#[test]
fn usage_errors_exit_64() {
    assert_eq!(run("understudy", &["frobnicate"]).status.code(), Some(64));
    assert_eq!(
        run("understudy", &["hosts", "--output", "yaml"])
            .status
            .code(),
        Some(64)
    );
    assert_eq!(run("understudy-agent", &[]).status.code(), Some(64));
    assert_eq!(
        run(
            "understudy",
            &["ca", "issue", "--dir", "/tmp", "--name", "a", "--role", "king"]
        )
        .status
        .code(),
        Some(64)
    );
    assert_eq!(run("understudy", &["--help"]).status.code(), Some(0));
    let nab = run(
        "understudy-agent",
        &[
            "replay", "--format", "nab", "--train", "a.txt", "--out", "o.csv",
        ],
    );
    assert_eq!(nab.status.code(), Some(64));
    assert!(stderr(&nab).contains("--input"), "{}", stderr(&nab));
    let rate = run(
        "understudy-agent",
        &[
            "replay",
            "--format",
            "smd",
            "--train",
            "a.txt",
            "--test",
            "b.txt",
            "--out",
            "o.csv",
            "--false-alarms-per-day",
            "0",
        ],
    );
    assert_eq!(rate.status.code(), Some(64));
    assert!(
        stderr(&rate).contains("--false-alarms-per-day 0"),
        "{}",
        stderr(&rate)
    );
    let streaming = run(
        "understudy-agent",
        &[
            "replay",
            "--format",
            "asd",
            "--train",
            "a.txt",
            "--test",
            "b.txt",
            "--out",
            "o.csv",
            "--streaming",
        ],
    );
    assert_eq!(streaming.status.code(), Some(64));
    assert!(
        stderr(&streaming).contains("are for --format nab only"),
        "{}",
        stderr(&streaming)
    );
}

#[test]
fn replay_without_its_models_is_a_config_error_naming_the_file() {
    let out = run(
        "understudy-agent",
        &[
            "replay",
            "--format",
            "nab",
            "--input",
            "in.csv",
            "--out",
            "o.csv",
            "--models",
            "/nonexistent/models",
        ],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("/nonexistent/models/univariate.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ca_init_never_replaces_an_existing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(run("understudy", &["ca", "init", "--dir", d])
        .status
        .success());
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let again = run("understudy", &["ca", "init", "--dir", d]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "CA key readable by others");

    let issue = run(
        "understudy",
        &[
            "ca", "issue", "--dir", d, "--name", "Bad Name", "--role", "agent",
        ],
    );
    assert!(!issue.status.success());
    assert!(stderr(&issue).contains("Bad Name"));
    assert!(!dir.path().join("Bad Name.crt").exists());
}

#[test]
fn unreachable_coordinator_is_reported_not_hung() {
    let out = Command::new(bin("understudy"))
        .args(["hosts"])
        .env("UNDERSTUDY_COORDINATOR", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(stderr(&out).contains("cannot reach the coordinator at http://127.0.0.1:9"));
}
