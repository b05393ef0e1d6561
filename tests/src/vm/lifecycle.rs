//! What an operator lives through with the packaged units in the test VMs: a bad key in a
//! config, a hung agent and systemd's watchdog, an upgrade of a package, removing and
//! purging. Each returns what it measured; the caller checks the workloads around it.

use std::time::{Duration, Instant};

use super::VmPair;
use crate::wait::eventually;

impl VmPair {
    /// `unit`'s property `prop` in VM `i`.
    pub fn unit_property(&self, i: usize, unit: &str, prop: &str) -> String {
        self.run(i, &format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// A bad key appended to `config`, then `unit` restarted: it fails once, says which
    /// key in the journal and is not restarted (`NRestarts=0`, still failed after several
    /// `RestartSec`); with the file fixed, starting it works.
    pub fn bad_key_fails_once(&self, i: usize, unit: &str, config: &str) {
        self.run(
            i,
            &format!("cp {config} /root/good.toml && printf '\\nbogus_key = 1\\n' >> {config}"),
        );
        let restarted = self.ssh(i, &format!("systemctl restart {unit}"));
        assert!(
            !restarted.status.success(),
            "{unit} started with an unknown key in {config}"
        );
        // RestartSec is 2 s: a restart loop would have gone round several times.
        std::thread::sleep(Duration::from_secs(8));
        assert_eq!(
            self.unit_property(i, unit, "ActiveState"),
            "failed",
            "{unit}"
        );
        assert_eq!(self.unit_property(i, unit, "NRestarts"), "0", "{unit}");
        assert_eq!(
            self.unit_property(i, unit, "ExecMainStatus"),
            "78",
            "{unit}"
        );
        let journal = self.run(i, &format!("journalctl -u {unit} --no-pager -o cat -n 30"));
        assert!(
            journal.contains("bogus_key"),
            "the journal names the bad key: {journal}"
        );
        self.run(
            i,
            &format!("mv /root/good.toml {config} && systemctl start {unit}"),
        );
        assert_eq!(self.unit_property(i, unit, "ActiveState"), "active");
    }

    /// Waits until `unit` in VM `i` runs again under a main pid other than `old`;
    /// returns how long that took.
    pub fn unit_back(&self, i: usize, unit: &str, old: &str) -> Duration {
        let t = Instant::now();
        eventually(&format!("{unit} back"), Duration::from_secs(180), || {
            let pid = self.unit_property(i, unit, "MainPID");
            let active = self
                .ssh(i, &format!("systemctl is-active -q {unit}"))
                .status
                .success();
            if active && pid != old && pid != "0" {
                Ok(())
            } else {
                Err(format!("MainPID {pid}"))
            }
        });
        t.elapsed()
    }

    /// The agent in VM `i` stopped with SIGSTOP, as a hung process: systemd's watchdog
    /// kills it and starts it again. Returns the time from the stop to the new agent.
    pub fn hung_agent_restarted_by_watchdog(&self, i: usize) -> Duration {
        let unit = "understudy-agent";
        let old = self.unit_property(i, unit, "MainPID");
        let before: u32 = self
            .unit_property(i, unit, "NRestarts")
            .parse()
            .unwrap_or(0);
        self.run(i, &format!("kill -STOP {old}"));
        let back = self.unit_back(i, unit, &old);
        let journal = self.run(i, &format!("journalctl -u {unit} --no-pager -o cat -n 60"));
        assert!(
            journal.contains("Watchdog timeout"),
            "systemd's watchdog, not something else, restarted it: {journal}"
        );
        let after: u32 = self
            .unit_property(i, unit, "NRestarts")
            .parse()
            .unwrap_or(0);
        assert_eq!(after, before + 1, "restarted once");
        assert!(
            !self.ssh(i, &format!("kill -0 {old}")).status.success(),
            "the hung agent is gone"
        );
        back
    }

    /// A newer build of the package at `share_name` (in the share): the same contents as
    /// version 99.0.0-1, made here (in the emulated VM repacking took minutes),
    /// uncompressed so that unpacking it there is quick too. Returns its name in the share.
    pub fn newer_package(&self, share_name: &str) -> String {
        let up = tempfile::tempdir().expect("tempdir");
        let share = self.share();
        let out = format!("upgrade-{share_name}");
        let made = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "dpkg-deb -R {deb} {dir}/up && sed -i 's/^Version: .*/Version: 99.0.0-1/' {dir}/up/DEBIAN/control \
                 && dpkg-deb -Znone -b {dir}/up {out} >/dev/null",
                deb = share.join(share_name).display(),
                dir = up.path().display(),
                out = share.join(&out).display(),
            ))
            .status()
            .expect("run dpkg-deb");
        assert!(made.success(), "repacking {share_name} failed");
        out
    }

    /// Installs `share_name` from the share over the installed package `package` (keeping
    /// edited configs) and checks the new version is installed.
    pub fn upgrade(&self, i: usize, package: &str, share_name: &str) {
        self.run(
            i,
            &format!("dpkg -i --force-confold /mnt/understudy-share/{share_name} >/dev/null"),
        );
        assert_eq!(
            self.run(i, &format!("dpkg-query -W -f '${{Version}}' {package}"))
                .trim(),
            "99.0.0-1"
        );
    }

    /// `apt-get remove` then `apt-get purge` of `package` in VM `i`; returns what remove
    /// printed.
    pub fn remove_then_purge(&self, i: usize, package: &str) -> String {
        let removed = self.run(
            i,
            &format!("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {package} 2>&1"),
        );
        self.run(
            i,
            &format!(
                "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {package} >/dev/null 2>&1"
            ),
        );
        let state = self.run(
            i,
            &format!("dpkg-query -W -f '${{db:Status-Abbrev}}' {package} 2>/dev/null || true"),
        );
        assert!(
            state.trim().is_empty() || state.starts_with("un") || state.starts_with("pn"),
            "{package} purged: {state}"
        );
        removed
    }

    /// The files under `dirs` in VM `i`, sorted (directories end in `/`).
    pub fn files_under(&self, i: usize, dirs: &[&str]) -> Vec<String> {
        let mut found: Vec<String> = self
            .run(
                i,
                &format!(
                    "for d in {}; do [ -e $d ] && find $d \\( -type d -printf '%p/\\n' \\) -o -print; done; true",
                    dirs.join(" ")
                ),
            )
            .lines()
            .map(str::to_owned)
            .collect();
        found.sort();
        found
    }
}
