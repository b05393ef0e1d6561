//! A coordinator group on namespace hosts: coordinators on `coord` (member 1) and
//! `coord2` (member 2), a witness on `witness` (member 3), formed with `understudy cluster
//! init` as an operator would.

use std::fs;
use std::time::Duration;

use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::Role;
use understudy_coordinator::server::group::ClusterStatus;

use super::{Cluster, HTTP_PORT, QUIC_PORT};

/// UDP port of every member's peer (Raft) endpoint.
pub const RAFT_PORT: u16 = 7442;

/// The members' hosts and ids (`coord3` exists only in a group made with a spare, and is
/// not started with the others).
pub const MEMBERS: [(&str, u64); 4] = [("coord", 1), ("coord2", 2), ("witness", 3), ("coord3", 4)];

impl Cluster {
    /// The hosts of a group and of `agents`, with every certificate and config written;
    /// starts nothing. Agents are given both coordinators' addresses.
    pub fn new_group(agents: &[&str]) -> Self {
        Self::build(agents, true, false)
    }

    /// A started group as [`Cluster::started_group`] makes it, plus a fourth host `coord3`
    /// with a coordinator's files (member 4), not started and not a member: for membership
    /// changes. Agents and the CLI are given its address too.
    pub fn started_group_with_spare(agents: &[&str]) -> Self {
        Self::build(agents, true, true).start_group(agents)
    }

    /// Starts the three members, forms the group and starts every agent.
    fn start_group(self, agents: &[&str]) -> Self {
        for m in ["coord", "coord2", "witness"] {
            self.start_member(m);
        }
        self.init_group();
        for a in agents {
            self.start_agent(a);
        }
        self.wait_connected(agents.len());
        self
    }

    /// A group with every member started and initialised, and every agent connected.
    pub fn started_group(agents: &[&str]) -> Self {
        Self::new_group(agents).start_group(agents)
    }

    pub(super) fn write_group_files(&self) {
        let template = fs::read_to_string(self.host_dir("coord").join("coordinator.toml"))
            .expect("coordinator.toml");
        for (name, id) in [("coord", 1), ("coord2", 2), ("coord3", 4)] {
            if !self.member_addrs.contains_key(name) {
                continue;
            }
            if name != "coord" {
                let leaf = issue(
                    self.ca(),
                    name,
                    Role::Coordinator,
                    Validity::days_from_now(30),
                )
                .unwrap();
                self.install_tls(name, &leaf, &self.ca().cert_pem);
            }
            let d = self.host_dir(name);
            fs::create_dir_all(d.join("data")).unwrap();
            let addr = self.host(name).addr;
            let cfg = template
                .replace(
                    &self.host_dir("coord").display().to_string(),
                    &d.display().to_string(),
                )
                .replace(
                    &format!("0.0.0.0:{QUIC_PORT}"),
                    &format!("{addr}:{QUIC_PORT}"),
                )
                .replace(
                    &format!("0.0.0.0:{HTTP_PORT}"),
                    &format!("{addr}:{HTTP_PORT}"),
                );
            let cfg = format!(
                "{cfg}[cluster]\nid = {id}\nlisten = \"{}:{RAFT_PORT}\"\nlog = \"{}/data/raft.redb\"\n",
                self.member_addrs[name],
                d.display()
            );
            fs::write(d.join("coordinator.toml"), cfg).unwrap();
        }
        let leaf = issue(
            self.ca(),
            "witness",
            Role::Coordinator,
            Validity::days_from_now(30),
        )
        .unwrap();
        self.install_tls("witness", &leaf, &self.ca().cert_pem);
        let d = self.host_dir("witness");
        fs::create_dir_all(d.join("data")).unwrap();
        let cfg = format!(
            r#"[tls]
ca = "{d}/ca.crt"
cert = "{d}/host.crt"
key = "{d}/host.key"
[witness]
id = 3
listen = "{addr}:{RAFT_PORT}"
log = "{d}/data/raft.redb"
store = "{d}/data/records.redb"
"#,
            addr = self.member_addrs["witness"],
            d = d.display()
        );
        fs::write(d.join("witness.toml"), cfg).unwrap();
    }

    /// Starts member `name` with extra environment variables (e.g. fault hooks).
    pub fn start_member_env(&self, name: &str, env: &[(&str, &str)]) {
        let cfg = self.host_dir(name).join("coordinator.toml");
        self.spawn_env(
            name,
            "understudy",
            &["serve", "--config", cfg.to_str().unwrap()],
            env,
        );
    }

    /// The peer (Raft) address of member `name`.
    pub fn raft_addr(&self, name: &str) -> String {
        format!("{}:{RAFT_PORT}", self.member_addrs[name])
    }

    /// Starts member `name` (`coord`, `coord2`, `coord3` or `witness`).
    pub fn start_member(&self, name: &str) {
        if name == "witness" {
            let cfg = self.host_dir(name).join("witness.toml");
            self.spawn(
                name,
                "understudy",
                &["witness", "--config", cfg.to_str().unwrap()],
            );
        } else {
            let cfg = self.host_dir(name).join("coordinator.toml");
            self.spawn(
                name,
                "understudy",
                &["serve", "--config", cfg.to_str().unwrap()],
            );
        }
    }

    /// `understudy cluster init` on `coord` with the other two members' peer addresses,
    /// then waits for a leader.
    pub fn init_group(&self) {
        let coord = format!("https://{}:{HTTP_PORT}", self.host("coord").addr);
        let peer = |h: &str| format!("{}:{RAFT_PORT}", self.member_addrs[h]);
        crate::wait::eventually("group initialised", Duration::from_secs(20), || {
            let mut cmd = std::process::Command::new(super::bin("understudy"));
            self.as_admin(&mut cmd);
            let out = cmd
                .args([
                    "cluster",
                    "init",
                    "--peer",
                    &peer("coord2"),
                    "--peer",
                    &peer("witness"),
                ])
                .env("UNDERSTUDY_COORDINATOR", &coord)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        self.wait_leader(&[], Duration::from_secs(20));
    }

    /// Cuts (`up = false`) or restores member `name`'s link to the other members, leaving
    /// its link to agents and operators as it is.
    pub fn set_member_link(&self, name: &str, up: bool) {
        let i = MEMBERS
            .iter()
            .position(|(m, _)| *m == name)
            .expect("a member");
        self.net.set_member_link(i, up).unwrap();
    }

    /// `understudy cluster status --output json` from member `name` only.
    pub fn cluster_status_of(&self, name: &str) -> Result<ClusterStatus, String> {
        let mut cmd = std::process::Command::new(super::bin("understudy"));
        self.as_admin(&mut cmd);
        let out = cmd
            .args(["cluster", "status", "--output", "json"])
            .env(
                "UNDERSTUDY_COORDINATOR",
                format!("https://{}:{HTTP_PORT}", self.host(name).addr),
            )
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// `understudy cluster status --output json`, as the CLI shows it.
    pub fn cluster_status(&self) -> Result<ClusterStatus, String> {
        let out = self.cli(&["cluster", "status", "--output", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// The host of the current leader, as the group reports it.
    pub fn leader(&self) -> Option<&'static str> {
        let s = self.cluster_status().ok()?;
        let id = s.leader?;
        MEMBERS.iter().find(|(_, i)| *i == id).map(|(h, _)| *h)
    }

    /// Waits until a coordinator other than those in `not` leads and accepts the API's
    /// calls (the witness leads only for a moment, to hand a coordinator its log); returns
    /// its host.
    pub fn wait_leader(&self, not: &[&str], limit: Duration) -> &'static str {
        crate::wait::eventually("a leader", limit, || match self.leader() {
            Some(l) if !not.contains(&l) && l != "witness" => self.hosts().map(|_| l),
            other => Err(format!("leader {other:?}")),
        })
    }
}
