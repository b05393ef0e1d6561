//! Inputs that used to crash or mislead, refused with a clear error instead: config values
//! out of range, files that are not files, certificates that do not match their key,
//! certificate lifetimes out of range, workload specs no process could run, names that are
//! not names, and a reader that closes the pipe.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use understudy_tests::cluster::{bin, Cluster};
use understudy_tests::require_e2e;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(bin(program))
        .args(args)
        .env("UNDERSTUDY_COORDINATOR", "http://127.0.0.1:9")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CA and a coordinator certificate in `dir`, made by the CLI.
fn certificates(dir: &std::path::Path) {
    let d = dir.to_str().unwrap();
    assert!(run("understudy", &["ca", "init", "--dir", d])
        .status
        .success());
    for (name, role) in [("coord", "coordinator"), ("other", "coordinator")] {
        let out = run(
            "understudy",
            &["ca", "issue", "--dir", d, "--name", name, "--role", role],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn coordinator_config(dir: &std::path::Path, key: &str, timeout: &str) -> std::path::PathBuf {
    let d = dir.display();
    let cfg = dir.join("coordinator.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tls]\nca = \"{d}/ca.crt\"\ncert = \"{d}/coord.crt\"\nkey = \"{d}/{key}\"\n[store]\npath = \"{d}/c.redb\"\n[heartbeat]\ninterval = \"1s\"\ntimeout = \"{timeout}\"\n[failover]\nfence_after = \"2s\"\nfailover_after = \"10s\"\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_duration_out_of_range_exits_78_naming_the_key_and_serve_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let cfg = coordinator_config(dir.path(), "coord.key", "300000000000y");
    for cmd in [vec!["validate"], vec!["serve", "--config"]] {
        let mut args = cmd.clone();
        args.push(cfg.to_str().unwrap());
        let out = run("understudy", &args);
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("heartbeat.timeout"),
            "{}",
            stderr(&out)
        );
    }
    let ok = coordinator_config(dir.path(), "coord.key", "5s");
    let out = run("understudy", &["validate", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_certificate_and_key_that_do_not_match_fail_validate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let cfg = coordinator_config(dir.path(), "other.key", "5s");
    let out = run("understudy", &["validate", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("tls.key") && err.contains("other.key") && err.contains("coord.crt"),
        "{err}"
    );
}

#[test]
fn a_config_that_is_a_device_or_a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("agent.toml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (program, path) in [
        ("understudy", "/dev/zero"),
        ("understudy-agent", "/dev/zero"),
        ("understudy", fifo.to_str().unwrap()),
        ("understudy-agent", fifo.to_str().unwrap()),
    ] {
        let mut child = Command::new(bin(program))
            .args(["validate", path])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("{program} validate {path} still running after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(78), "{program} {path}: {err}");
        assert!(
            err.contains("character device") || err.contains("FIFO"),
            "{program} {path}: {err}"
        );
    }
}

#[test]
fn certificate_lifetimes_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(run("understudy", &["ca", "init", "--dir", d])
        .status
        .success());
    for days in ["99999999", "0"] {
        let out = run(
            "understudy",
            &[
                "ca", "issue", "--dir", d, "--name", "h", "--role", "agent", "--days", days,
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(64),
            "--days {days}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("--days"), "{}", stderr(&out));
        assert!(!dir.path().join("h.crt").exists(), "nothing written");
    }
    let out = run(
        "understudy",
        &[
            "ca",
            "init",
            "--dir",
            &format!("{d}/x"),
            "--days",
            "99999999",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn a_name_that_is_not_a_workload_name_is_refused_before_asking_the_coordinator() {
    for args in [
        vec!["workload", "show", "../etc"],
        vec!["workload", "delete", "a/b"],
        vec!["migrate", "UPPER"],
    ] {
        let out = run("understudy", &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("workload name") && !err.contains("HTTP"),
            "{err}"
        );
    }
}

/// `POST /v1/workloads` with `body`; returns the status line and body.
fn post(c: &Cluster, body: &str) -> (u16, String) {
    let addr =
        std::net::SocketAddr::from((c.host("coord").addr, understudy_tests::cluster::HTTP_PORT));
    let resp = c
        .api_client(Some(understudy_common::tls::Role::Admin))
        .exchange(
            addr,
            format!(
                "POST /v1/workloads HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let code = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn workloads_no_process_could_run_are_refused_at_creation_naming_the_field() {
    require_e2e!();
    let c = Cluster::started(&["host-a"]);
    let spec = |command: &str, env: &str| {
        format!(
            r#"{{"spec": {{"name": "bad", "command": {command}, "env": {env}}}, "host": "host-a"}}"#
        )
    };
    let (code, body) = post(&c, &spec(r#"["/bin/true"]"#, r#"[["KEY", "a\u0000b"]]"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("env.KEY") && body.contains("NUL"), "{body}");
    let huge: Vec<String> = std::iter::once("\"/bin/true\"".to_string())
        // 150 kB: over the command's limit, under the API's 1 MiB body limit.
        .chain((0..10).map(|_| format!("\"{}\"", "x".repeat(15_000))))
        .collect();
    let (code, body) = post(&c, &spec(&format!("[{}]", huge.join(",")), "[]"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("command") && body.contains("65536"), "{body}");
    assert!(c.workload("bad").is_err(), "nothing was created");
    assert!(c.output_log("host-a", "bad").is_empty(), "nothing ran");
}

#[test]
fn a_reader_that_closes_the_pipe_ends_the_command_quietly() {
    require_e2e!();
    let c = Cluster::started(&["host-a", "host-b"]);
    c.create_workload(&[
        "sleeper",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        "1h",
        "--",
        "/bin/sleep",
        "600",
    ]);
    // `true` has exited (closing the pipe) long before the answer comes back.
    for args in ["workload list", "hosts", "workload show sleeper", "status"] {
        let mut sh = Command::new("/bin/sh");
        c.as_admin(&mut sh);
        let out = sh
            .arg("-c")
            .arg(format!("{} {args} | true", bin("understudy").display()))
            .env("UNDERSTUDY_COORDINATOR", c.api())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args}: {err}"
        );
        assert!(err.is_empty(), "{args}: nothing to say about it: {err}");
    }
}
