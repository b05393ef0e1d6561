//! Installing understudy in the test VMs the way docs/install.md tells an operator to: both
//! packages on vm-a (coordinator, operator machine and a host), the agent's on vm-b, CRIU
//! chosen by the packaged provisioning script, a CA and certificates made with the packaged
//! CLI and copied where the sample configs expect them (vm-a's agent), or a join token
//! (vm-b's agent, whose key is made there), the configs validated before the first start,
//! the units enabled and started. Then the operator's CLI on vm-a.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::VmPair;
use crate::wait::eventually;

/// The VM holding the coordinator and the operator's CA.
pub const A: usize = 0;

/// The VM whose agent enrolls with a join token instead of a copied certificate.
const JOINS: usize = 1;

/// The operator's CA directory and their own (admin) certificate, on vm-a.
const CA_DIR: &str = "/root/understudy-ca";
const ADMIN_DIR: &str = "/root/admin";

/// The package files scripts/package.sh built: `(agent, coordinator)`.
pub fn package_files() -> (PathBuf, PathBuf) {
    let dir = std::env::var("UNDERSTUDY_PACKAGES").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/packages"),
        PathBuf::from,
    );
    let find = |prefix: &str| {
        std::fs::read_dir(&dir)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                n.starts_with(prefix) && n.ends_with(".deb")
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {prefix}*.deb in {}: the VM tests install the packages; build them with scripts/package.sh --profile dev",
                    dir.display()
                )
            })
    };
    (find("understudy-agent_"), find("understudy_"))
}

/// What the operator wrote into each config (besides the samples' certificate paths).
#[derive(Debug)]
pub struct Settings {
    /// coordinator.toml.
    pub coordinator: String,
    /// agent.toml for a host, by its name.
    pub agent: fn(&str, std::net::Ipv4Addr) -> String,
}

/// How long installing took, from the first `apt install` until both agents were connected
/// and healthy in `understudy hosts`.
#[derive(Debug)]
pub struct Installed {
    /// Install to healthy.
    pub to_healthy: Duration,
    /// What provision-criu.sh said it chose, per VM.
    pub criu: Vec<String>,
}

impl VmPair {
    /// The operator CLI, run in vm-a with the operator's certificate; must succeed.
    pub fn cli(&self, args: &str) -> String {
        self.run(A, &self.cli_command(args))
    }

    /// The shell command running the operator CLI with `args` in vm-a.
    pub fn cli_command(&self, args: &str) -> String {
        format!(
            "UNDERSTUDY_COORDINATOR=https://{}:7441 UNDERSTUDY_CA={CA_DIR}/ca.crt \
             UNDERSTUDY_CERT={ADMIN_DIR}/admin.crt UNDERSTUDY_KEY={ADMIN_DIR}/admin.key \
             understudy {args}",
            self.vms[A].lan_ip
        )
    }

    /// Installs and starts everything as docs/install.md says (see the module doc), with
    /// `settings` as the operator's edits of the configs; `unit_env` is put in a drop-in of
    /// the agent's unit (log levels the test reads).
    pub fn install_as_documented(&self, settings: &Settings, unit_env: &str) -> Installed {
        let share = self.share();
        let (agent_deb, coord_deb) = package_files();
        let name = |p: &Path| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        for deb in [&agent_deb, &coord_deb] {
            std::fs::copy(deb, share.join(name(deb))).expect("copy a package into the share");
        }
        let started = Instant::now();
        // 1. The packages: nothing starts on install.
        for i in 0..self.vms.len() {
            let debs = if i == A {
                format!("./{} ./{}", name(&coord_deb), name(&agent_deb))
            } else {
                format!("./{}", name(&agent_deb))
            };
            self.run(
                i,
                &format!(
                    "cd /mnt/understudy-share && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {debs} >/dev/null"
                ),
            );
            for unit in ["understudy-agent", "understudy-coordinator"] {
                let active = self.ssh(i, &format!("systemctl is-active -q {unit}"));
                assert!(!active.status.success(), "{unit} started on install");
            }
        }
        // 2. CRIU: the packaged script picks the distribution's where it works here.
        let criu: Vec<String> = (0..self.vms.len())
            .map(|i| {
                self.run(i, "/usr/share/understudy/provision-criu.sh 2>&1")
                    .trim()
                    .to_owned()
            })
            .collect();
        // 3. Certificates, made on the operator's machine with the packaged CLI and
        // copied to /etc/understudy/tls/ under the names the samples expect.
        let mut make = format!("set -e\nunderstudy ca init --dir {CA_DIR} >/dev/null\n");
        make.push_str(&format!(
            "understudy ca issue --dir {CA_DIR} --name coord-1 --role coordinator --out /tmp/coord-1 >/dev/null\n\
             understudy ca issue --dir {CA_DIR} --name admin --role admin --out {ADMIN_DIR} >/dev/null\n\
             cp {CA_DIR}/ca.crt {ADMIN_DIR}/\n"
        ));
        for (i, vm) in self.vms.iter().enumerate() {
            let n = &vm.name;
            if i != JOINS {
                make.push_str(&format!(
                    "understudy ca issue --dir {CA_DIR} --name {n} --role agent --out /tmp/{n} >/dev/null\n"
                ));
            }
            make.push_str(&format!(
                "mkdir -p /tmp/{n} && cp {CA_DIR}/ca.crt /tmp/{n}/ && rm -rf /mnt/understudy-share/{n} && cp -r /tmp/{n} /mnt/understudy-share/\n"
            ));
        }
        // The coordinator signs joins with the CA's key ([enrollment] ca_key).
        make.push_str(&format!(
            "install -m 0644 {CA_DIR}/ca.crt /etc/understudy/tls/ca.crt\n\
             install -m 0644 /tmp/coord-1/coord-1.crt /etc/understudy/tls/coordinator.crt\n\
             install -m 0640 -o root -g understudy /tmp/coord-1/coord-1.key /etc/understudy/tls/coordinator.key\n\
             install -m 0640 -o root -g understudy {CA_DIR}/ca.key /etc/understudy/tls/ca.key\n"
        ));
        self.run(A, &make);
        for (i, vm) in self.vms.iter().enumerate() {
            let n = &vm.name;
            // A joining host gets only the CA's certificate.
            let copy_key = if i == JOINS {
                String::new()
            } else {
                format!(
                    "install -m 0644 $s/{n}.crt /etc/understudy/tls/agent.crt
                     install -m 0600 $s/{n}.key /etc/understudy/tls/agent.key"
                )
            };
            self.run(
                i,
                &format!(
                    "set -e; s=/mnt/understudy-share/{n}
                     install -m 0644 $s/ca.crt /etc/understudy/tls/ca.crt
                     {copy_key}
                     rm -rf $s"
                ),
            );
        }
        // 4. The configs, edited, then checked before the first start: the coordinator's
        // state directory does not exist yet, which is a note, not an error.
        let coordinator = format!(
            "{}\n[enrollment]\nca_key = \"/etc/understudy/tls/ca.key\"\n",
            settings.coordinator
        );
        std::fs::write(share.join("coordinator.toml"), coordinator)
            .expect("write coordinator.toml");
        self.run(
            A,
            "install -m 0644 /mnt/understudy-share/coordinator.toml /etc/understudy/coordinator.toml",
        );
        let checked = self.run(A, "understudy validate /etc/understudy/coordinator.toml");
        assert!(
            checked.contains("note: store.path:") && checked.contains(": ok"),
            "a fresh install validates, noting the state directory systemd makes: {checked}"
        );
        for (i, vm) in self.vms.iter().enumerate() {
            let n = &vm.name;
            std::fs::write(
                share.join(format!("{n}.toml")),
                (settings.agent)(n, self.vms[A].lan_ip),
            )
            .expect("write agent.toml");
            let install = format!(
                "install -m 0644 /mnt/understudy-share/{n}.toml /etc/understudy/agent.toml"
            );
            if i == JOINS {
                // Checked once it has joined: its certificate does not exist yet.
                self.run(i, &install);
                continue;
            }
            let out = self.run(
                i,
                &format!("{install} && understudy-agent validate /etc/understudy/agent.toml"),
            );
            assert!(out.contains(": ok"), "{out}");
        }
        // 5. Start.
        self.run(A, "systemctl enable --now understudy-coordinator 2>&1");
        // The joining host: a token made by the admin, used on the host; its key is made
        // there.
        let made = eventually("a join token", Duration::from_secs(60), || {
            let o = self.ssh(A, &self.cli_command("token create --ttl 1h"));
            if o.status.success() {
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
        let token = made.lines().next().unwrap_or_default().trim();
        let joined = self.run(
            JOINS,
            &format!(
                "understudy-agent join --coordinator {}:7441 --token {token} --name {} 2>&1 \
                 && stat -c '%a %U' /etc/understudy/tls/agent.key \
                 && understudy-agent validate /etc/understudy/agent.toml",
                self.vms[A].lan_ip, self.vms[JOINS].name
            ),
        );
        assert!(
            joined.contains(&format!("joined as {}", self.vms[JOINS].name))
                && joined.contains("600 root")
                && joined.contains(": ok"),
            "{} joins with a token, its key made there (0600): {joined}",
            self.vms[JOINS].name
        );
        for i in 0..self.vms.len() {
            self.run(
                i,
                &format!(
                    "mkdir -p /etc/systemd/system/understudy-agent.service.d \
                     && printf '[Service]\\nEnvironment={unit_env}\\n' \
                        > /etc/systemd/system/understudy-agent.service.d/test.conf \
                     && systemctl daemon-reload && systemctl enable --now understudy-agent 2>&1"
                ),
            );
        }
        eventually(
            "both agents connected and healthy",
            Duration::from_secs(240),
            || {
                let hosts = self.cli("hosts");
                let rows = hosts
                    .lines()
                    .filter(|l| l.contains(" connected ") && l.contains("healthy"))
                    .count();
                if rows == self.vms.len() {
                    Ok(())
                } else {
                    Err(hosts)
                }
            },
        );
        let to_healthy = started.elapsed();
        // The agent's metrics, where the sample config serves them.
        let metrics = self.run(
            1,
            "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:7443/metrics\", timeout=10).read().decode())'",
        );
        assert!(
            metrics.contains("understudy_host_"),
            "/metrics answers with the host's metrics: {}",
            &metrics[..metrics.len().min(500)]
        );
        Installed { to_healthy, criu }
    }
}
