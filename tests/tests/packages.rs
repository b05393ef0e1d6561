//! The deb and rpm packages (scripts/package.sh): what an operator gets from installing
//! them — binaries that run, the models the agent loads from the installed path, units that
//! point at the installed binaries and are not started behind the operator's back, sample
//! configs kept across upgrades that validate once the certificates exist.
//!
//! Runs on the packages in `UNDERSTUDY_PACKAGES` (scripts/test.sh builds them there); where
//! that is unset the test says so and skips, unless `UNDERSTUDY_REQUIRE_PACKAGES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use understudy_tests::command::run;

fn packages() -> Option<PathBuf> {
    match std::env::var("UNDERSTUDY_PACKAGES") {
        Ok(dir) => Some(PathBuf::from(dir)),
        Err(_) if std::env::var("UNDERSTUDY_REQUIRE_PACKAGES").as_deref() == Ok("1") => {
            panic!("UNDERSTUDY_PACKAGES is not set: build the packages with scripts/package.sh")
        }
        Err(_) => None,
    }
}

macro_rules! require_packages {
    () => {
        match packages() {
            Some(dir) => dir,
            None => {
                eprintln!(
                    "SKIPPED {}: UNDERSTUDY_PACKAGES is not set (scripts/package.sh builds them)",
                    module_path!()
                );
                return;
            }
        }
    };
}

/// The one file in `dir` whose name starts with `prefix` and ends with `suffix`.
fn find(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{suffix} in {}: {found:?}",
        dir.display()
    );
    found[0].clone()
}

fn ok(cmd: &mut Command) -> String {
    let (code, text) = run(cmd, "");
    assert_eq!(code, 0, "{cmd:?}: {text}");
    text
}

fn control(deb: &Path, member: &str) -> String {
    ok(Command::new("dpkg-deb").arg("-I").arg(deb).arg(member))
}

/// Both debs unpacked into one root, as installing both would lay them out.
fn unpack(dir: &Path, root: &Path) -> (PathBuf, PathBuf) {
    let agent = find(dir, "understudy-agent_", ".deb");
    let coord = find(dir, "understudy_", ".deb");
    for deb in [&agent, &coord] {
        ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root));
    }
    (agent, coord)
}

#[test]
fn the_debs_install_runnable_binaries_the_models_units_and_configs() {
    let dir = require_packages!();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (agent, coord) = unpack(&dir, r);

    // The binaries run and are the packaged version.
    let version = ok(Command::new(r.join("usr/bin/understudy")).arg("--version"));
    let pkg_version = ok(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&coord)
        .arg("Version"));
    assert!(
        pkg_version.starts_with(version.split_whitespace().nth(1).unwrap()),
        "package {pkg_version} vs binary {version}"
    );
    ok(Command::new(r.join("usr/bin/understudy-agent")).arg("--version"));

    // The models the agent loads from /usr/share/understudy/models are there and load
    // (SHA-256 and shapes checked): a NAB replay through the packaged univariate model.
    let models = r.join("usr/share/understudy/models");
    for f in [
        "schema.toml",
        "anomaly.toml",
        "anomaly.onnx",
        "forecast.onnx",
        "univariate.onnx",
    ] {
        assert!(
            models.join(f).is_file(),
            "{f} missing from the agent package"
        );
    }
    let mut series = String::from("timestamp,value\n");
    for i in 0..400 {
        let v = if i == 350 {
            90.0
        } else {
            10.0 + (i % 7) as f64
        };
        series.push_str(&format!("2024-01-01 {:02}:{:02}:00,{v}\n", i / 60, i % 60));
    }
    std::fs::write(r.join("series.csv"), series).unwrap();
    ok(Command::new(r.join("usr/bin/understudy-agent"))
        .args(["replay", "--format", "nab", "--input"])
        .arg(r.join("series.csv"))
        .arg("--out")
        .arg(r.join("scores.csv"))
        .arg("--models")
        .arg(&models));
    let scores = std::fs::read_to_string(r.join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 401);
    let spike: f64 = scores
        .lines()
        .nth(351)
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(spike > 0.5, "the packaged model scores the spike: {spike}");

    // Units point at the packaged binaries and configs; the coordinator's user is created.
    let agent_unit =
        std::fs::read_to_string(r.join("usr/lib/systemd/system/understudy-agent.service")).unwrap();
    assert!(agent_unit
        .contains("ExecStart=/usr/bin/understudy-agent --config /etc/understudy/agent.toml"));
    assert!(
        agent_unit.contains("KillMode=process"),
        "workloads outlive an agent upgrade"
    );
    // systemd knows when each service is ready and restarts a hung one; a config error
    // exits 78 from the service itself, so the unit fails once instead of restarting.
    for unit in [
        "understudy-agent",
        "understudy-coordinator",
        "understudy-witness",
    ] {
        let text =
            std::fs::read_to_string(r.join(format!("usr/lib/systemd/system/{unit}.service")))
                .unwrap();
        for line in ["Type=notify", "WatchdogSec=", "RestartPreventExitStatus=78"] {
            assert!(text.contains(line), "{unit}: {line} missing");
        }
        assert!(
            !text.contains("ExecStartPre"),
            "{unit}: RestartPreventExitStatus does not apply to ExecStartPre"
        );
    }
    let coord_unit =
        std::fs::read_to_string(r.join("usr/lib/systemd/system/understudy-coordinator.service"))
            .unwrap();
    assert!(coord_unit
        .contains("ExecStart=/usr/bin/understudy serve --config /etc/understudy/coordinator.toml"));
    assert!(coord_unit.contains("User=understudy"));
    let witness_unit =
        std::fs::read_to_string(r.join("usr/lib/systemd/system/understudy-witness.service"))
            .unwrap();
    assert!(witness_unit
        .contains("ExecStart=/usr/bin/understudy witness --config /etc/understudy/witness.toml"));
    let witness_conf = r.join("etc/understudy/witness.toml");
    let out = Command::new(r.join("usr/bin/understudy"))
        .args(["witness", "--config"])
        .arg(&witness_conf)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "the sample witness config names certificates that do not exist yet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let coord_postinst = control(&coord, "postinst");
    assert!(
        coord_postinst.contains("adduser --system --group"),
        "{coord_postinst}"
    );
    // Installed, not started: the operator starts them once configured.
    for deb in [&agent, &coord] {
        let postinst = control(deb, "postinst");
        assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    }

    // Configs are conffiles (an upgrade keeps the operator's edits).
    assert_eq!(
        control(&agent, "conffiles").trim(),
        "/etc/understudy/agent.toml"
    );
    assert_eq!(
        control(&coord, "conffiles").trim(),
        "/etc/understudy/coordinator.toml\n/etc/understudy/witness.toml"
    );
    // The alert rules ship with the coordinator package, as in the source tree (where
    // tests/tests/alerting.rs checks them with promtool).
    let rules =
        std::fs::read_to_string(r.join("usr/share/understudy/prometheus/understudy.rules.yml"))
            .unwrap();
    assert_eq!(
        rules,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../packaging/prometheus/understudy.rules.yml")
        )
        .unwrap()
    );
    // Removing the agent names the workloads still running; purging deletes what the
    // packages made and keeps the operator's keys.
    assert!(control(&agent, "prerm").contains("agent-removal-warning.sh"));
    assert!(r
        .join("usr/share/understudy/agent-removal-warning.sh")
        .is_file());
    let purge = control(&agent, "postrm");
    assert!(
        purge.contains("rm -rf /var/lib/understudy-agent"),
        "{purge}"
    );
    assert!(!purge.contains("rm -rf /etc"), "{purge}");
    let purge = control(&coord, "postrm");
    assert!(purge.contains("rm -rf /var/lib/understudy\n"), "{purge}");
    let recommends = ok(Command::new("dpkg-deb")
        .arg("-f")
        .arg(&agent)
        .arg("Recommends"));
    assert!(recommends.contains("criu"), "{recommends}");
}

/// The newest glibc symbol version `binary` needs, as (major, minor).
fn newest_glibc(binary: &Path) -> (u32, u32) {
    let symbols = ok(Command::new("objdump").arg("-T").arg(binary));
    symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(str::parse::<u32>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .max()
        .unwrap_or_else(|| panic!("no glibc symbols in {}", binary.display()))
}

#[test]
fn the_binaries_run_on_the_oldest_glibc_the_docs_claim() {
    let dir = require_packages!();
    let root = tempfile::tempdir().unwrap();
    unpack(&dir, root.path());
    // docs/install.md: glibc 2.34 or newer (RHEL 9, the oldest named there). The rpms hold
    // the same binaries.
    for bin in ["usr/bin/understudy", "usr/bin/understudy-agent"] {
        let needs = newest_glibc(&root.path().join(bin));
        assert!(
            needs <= (2, 34),
            "{bin} needs GLIBC_{}.{}",
            needs.0,
            needs.1
        );
    }
}

#[test]
fn the_packaged_sample_configs_validate_once_the_certificates_exist() {
    let dir = require_packages!();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    unpack(&dir, r);
    let cli = r.join("usr/bin/understudy");
    let agent = r.join("usr/bin/understudy-agent");
    let etc = r.join("etc/understudy");

    // As shipped, only what the operator must supply is missing (no unknown or bad key).
    let (code, text) = run(
        Command::new(&agent)
            .arg("validate")
            .arg(etc.join("agent.toml")),
        "",
    );
    assert_eq!(code, 78, "{text}");
    assert!(text.lines().all(|l| l.contains("tls.")), "{text}");

    // With a CA and certificates made by the packaged CLI, where the sample expects them.
    let tls = r.join("tls");
    ok(Command::new(&cli).args(["ca", "init", "--dir"]).arg(&tls));
    for (name, role) in [("coordinator", "coordinator"), ("agent", "agent")] {
        ok(Command::new(&cli)
            .args(["ca", "issue", "--dir"])
            .arg(&tls)
            .args(["--name", name, "--role", role]));
    }
    // The state directories do not exist yet (the services, or systemd for them, make
    // them on the first start): a note, not an error.
    for (file, bin) in [("agent.toml", &agent), ("coordinator.toml", &cli)] {
        let text = std::fs::read_to_string(etc.join(file))
            .unwrap()
            .replace("/etc/understudy/tls/", &format!("{}/", tls.display()))
            .replace(
                "/var/lib/understudy/",
                &format!("{}/", r.join("state").display()),
            );
        let path = r.join(file);
        std::fs::write(&path, text).unwrap();
        let out = ok(Command::new(bin).arg("validate").arg(&path));
        assert!(out.contains(": ok"), "{out}");
        if file == "coordinator.toml" {
            assert!(
                out.contains("note: store.path:")
                    && out.contains("created when the service starts"),
                "{out}"
            );
        }
    }
    assert!(!r.join("state").exists(), "validate creates nothing");
}

#[test]
fn the_rpms_hold_the_same_files_and_keep_edited_configs() {
    let dir = require_packages!();
    let rpm = |pkg: &Path, args: &[&str]| ok(Command::new("rpm").args(args).arg(pkg));
    let agent = find(&dir, "understudy-agent-", ".rpm");
    let coord = find(&dir, "understudy-0", ".rpm");
    let files = rpm(&agent, &["-qlp"]);
    for f in [
        "/usr/bin/understudy-agent",
        "/usr/lib/systemd/system/understudy-agent.service",
        "/etc/understudy/agent.toml",
        "/usr/share/understudy/models/univariate.onnx",
        "/usr/share/understudy/models/schema.toml",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} missing from {}: {files}",
            agent.display()
        );
    }
    assert_eq!(rpm(&agent, &["-qcp"]).trim(), "/etc/understudy/agent.toml");
    let files = rpm(&coord, &["-qlp"]);
    for f in [
        "/usr/bin/understudy",
        "/usr/lib/systemd/system/understudy-coordinator.service",
        "/etc/understudy/coordinator.toml",
        "/etc/understudy/witness.toml",
        "/usr/lib/systemd/system/understudy-witness.service",
        "/usr/share/understudy/prometheus/understudy.rules.yml",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} missing from {}: {files}",
            coord.display()
        );
    }
    assert_eq!(
        rpm(&coord, &["-qcp"]).trim(),
        "/etc/understudy/coordinator.toml\n/etc/understudy/witness.toml"
    );
    let scripts = rpm(&coord, &["-qp", "--scripts"]);
    assert!(scripts.contains("useradd -r -g understudy"), "{scripts}");
}
