//! A cluster of real understudy processes on namespace hosts: one coordinator host and any
//! number of agent hosts, each with its own directory, certificate, config and log.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use understudy_common::tls::ca::{create_ca, issue, PemPair, Validity};
use understudy_common::tls::Role;
use understudy_coordinator::registry::HostRecord;
use understudy_coordinator::server::http::HostList;
use understudy_coordinator::workloads::WorkloadRecord;

use crate::netns::{Host, Net};

pub mod group;

/// QUIC port of the coordinator on its host.
pub const QUIC_PORT: u16 = 7440;
/// HTTP API port of the coordinator on its host.
pub const HTTP_PORT: u16 = 7441;
/// The coordinators' plain-HTTP port (only `/metrics` and `/v1/health`).
pub const PLAIN_PORT: u16 = 7449;
/// Heartbeat timeout configured for test coordinators.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// The lease of test coordinators: a primary cut off this long freezes its workloads.
pub const FENCE_AFTER: Duration = Duration::from_secs(5);
/// How long a test coordinator waits before failing a silent host's workloads over
/// (more than the lease, the heartbeat timeout and the 1 s margin).
pub const FAILOVER_AFTER: Duration = Duration::from_secs(10);

/// The `Environment=` settings of the agent's systemd unit, so that tested agents run as
/// shipped ones do.
pub fn unit_environment() -> Vec<(String, String)> {
    include_str!("../../systemd/understudy-agent.service")
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Path of one of the workspace's binaries (built next to the test executables).
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("UNDERSTUDY_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // Tests live in target/<profile>/deps/, programs in target/<profile>/.
    let mut profile_dir = exe.parent().expect("executable has a directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("deps has a parent");
    }
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// The cluster. Dropping it kills every process and removes every namespace.
#[derive(Debug)]
pub struct Cluster {
    net: Net,
    dir: tempfile::TempDir,
    ca: PemPair,
    hosts: HashMap<String, Host>,
    procs: Mutex<HashMap<String, Child>>,
    /// Group members' addresses on the members' own network.
    member_addrs: HashMap<String, std::net::Ipv4Addr>,
}

impl Cluster {
    /// Creates the network, a coordinator host named `coord` and one host per agent name,
    /// a cluster CA and a certificate and config for every host. Starts nothing.
    pub fn new(agents: &[&str]) -> Self {
        Self::build(agents, false, false)
    }

    fn build(agents: &[&str], group: bool, spare: bool) -> Self {
        let mut net = Net::new().expect("test network");
        let dir = tempfile::Builder::new()
            .prefix("understudy-e2e-")
            .tempdir()
            .expect("tempdir");
        let ca = create_ca(Validity::days_from_now(30)).expect("CA");
        let mut hosts = HashMap::new();
        let members: &[&str] = match (group, spare) {
            (true, true) => &["coord", "coord2", "witness", "coord3"],
            (true, false) => &["coord", "coord2", "witness"],
            _ => &["coord"],
        };
        let mut member_addrs = HashMap::new();
        for name in members.iter().copied().chain(agents.iter().copied()) {
            let host = net.add_host(name).expect("test host");
            if group && members.contains(&name) {
                let a = net.add_member_link(&host).expect("member link");
                member_addrs.insert(name.to_owned(), a);
            }
            hosts.insert(name.to_owned(), host);
        }
        let cluster = Cluster {
            net,
            dir,
            ca,
            hosts,
            procs: Mutex::new(HashMap::new()),
            member_addrs,
        };
        cluster.write_coordinator_files();
        cluster.write_admin_files();
        if group {
            cluster.write_group_files();
        }
        for name in agents {
            cluster.write_agent_files(name);
        }
        cluster
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// A host's own directory.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("hosts").join(name)
    }

    /// Where the cluster's agents keep their supervisors' working directories
    /// (`[agent] trees_dir`): one per workload, the same path on every host.
    pub fn trees_dir(&self) -> PathBuf {
        self.dir.path().join("trees")
    }

    /// Host `name`'s memory-backed scratch space for dumps: on `/dev/shm`, one per cluster
    /// (tests run in parallel, each with its own `host-a`), removed with the cluster.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        self.scratch_root().join(name)
    }

    fn scratch_root(&self) -> PathBuf {
        let unique = self.dir.path().file_name().unwrap_or_default();
        Path::new("/dev/shm").join(unique)
    }

    /// Under which the tests' workloads declare data directories (the agents' allowed root).
    pub fn logical_root(&self) -> PathBuf {
        self.dir.path().join("logical")
    }

    /// A data directory's logical path, as a workload declares it.
    pub fn logical_dir(&self, name: &str) -> PathBuf {
        self.logical_root().join(name)
    }

    /// Where `host` keeps the data directory declared as `logical`.
    pub fn data_path(&self, host: &str, logical: &Path) -> PathBuf {
        let rel = logical.strip_prefix("/").unwrap_or(logical);
        self.host_dir(host).join("root").join(rel)
    }

    /// The cluster CA.
    pub fn ca(&self) -> &PemPair {
        &self.ca
    }

    /// The coordinator's HTTP API base URL, reachable from the test process (for a group,
    /// both coordinators', comma-separated, as an operator would give them).
    pub fn api(&self) -> String {
        self.coordinators()
            .iter()
            .map(|c| format!("https://{}:{HTTP_PORT}", self.host(c).addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The hosts running a coordinator: `coord`, and `coord2` in a group.
    pub fn coordinators(&self) -> Vec<&'static str> {
        ["coord", "coord2", "coord3"]
            .into_iter()
            .filter(|c| self.hosts.contains_key(*c))
            .collect()
    }

    /// The coordinator's QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host("coord").addr, QUIC_PORT))
    }

    /// Puts `cert` (and the CA it should trust) in place as `name`'s TLS files.
    pub fn install_tls(&self, name: &str, cert: &PemPair, ca_pem: &str) {
        let d = self.host_dir(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("ca.crt"), ca_pem).unwrap();
        fs::write(d.join("host.crt"), &cert.cert_pem).unwrap();
        fs::write(d.join("host.key"), &cert.key_pem).unwrap();
    }

    fn write_coordinator_files(&self) {
        let leaf = issue(
            &self.ca,
            "coord",
            Role::Coordinator,
            Validity::days_from_now(30),
        )
        .unwrap();
        self.install_tls("coord", &leaf, &self.ca.cert_pem);
        let d = self.host_dir("coord");
        fs::create_dir_all(d.join("data")).unwrap();
        let cfg = format!(
            r#"[quic]
listen = "0.0.0.0:{QUIC_PORT}"
[http]
listen = "0.0.0.0:{HTTP_PORT}"
plain_listen = "0.0.0.0:{PLAIN_PORT}"
[tls]
ca = "{d}/ca.crt"
cert = "{d}/host.crt"
key = "{d}/host.key"
[store]
path = "{d}/data/coordinator.redb"
[heartbeat]
interval = "500ms"
timeout = "{}ms"
[failover]
fence_after = "{}ms"
failover_after = "{}ms"
[decisions]
# Workloads move by themselves only in the tests of the decision engine.
mode = "off"
"#,
            HEARTBEAT_TIMEOUT.as_millis(),
            FENCE_AFTER.as_millis(),
            FAILOVER_AFTER.as_millis(),
            d = d.display()
        );
        fs::write(d.join("coordinator.toml"), cfg).unwrap();
    }

    /// Replaces the coordinator's `[decisions]` section with `body` (its lines, without the
    /// header); call before starting the coordinator.
    pub fn set_decisions(&self, body: &str) {
        let path = self.host_dir("coord").join("coordinator.toml");
        let text = fs::read_to_string(&path).unwrap();
        let mut kept: Vec<String> = text
            .split("\n[")
            .filter(|section| !section.starts_with("decisions]"))
            .map(str::to_owned)
            .collect();
        kept.push(format!("decisions]\n{body}\n"));
        fs::write(&path, kept.join("\n[")).unwrap();
    }

    /// Adds `line` (`key = value`) to the coordinator's `[failover]` section; call before
    /// starting the coordinator.
    pub fn add_failover_setting(&self, line: &str) {
        let path = self.host_dir("coord").join("coordinator.toml");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n[failover]\n"), "{text}");
        fs::write(
            &path,
            text.replace("\n[failover]\n", &format!("\n[failover]\n{line}\n")),
        )
        .unwrap();
    }

    /// Rewrites the coordinator's config without the tests' heartbeat and failover timing,
    /// so that the defaults apply (for benchmarks of what an operator gets).
    pub fn use_default_timing(&self) {
        let path = self.host_dir("coord").join("coordinator.toml");
        let text = fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .split("\n[")
            .filter(|section| {
                !section.starts_with("heartbeat]") && !section.starts_with("failover]")
            })
            .collect();
        fs::write(&path, kept.join("\n[")).unwrap();
    }

    /// Gives the coordinator the CA's key to sign joining and renewing hosts'
    /// certificates with (`[enrollment]`), valid for `cert_lifetime` (e.g. "2m").
    pub fn enable_enrollment(&self, cert_lifetime: &str) {
        let d = self.host_dir("coord");
        fs::write(d.join("ca.key"), &self.ca.key_pem).unwrap();
        let cfg = d.join("coordinator.toml");
        let mut toml = fs::read_to_string(&cfg).unwrap();
        toml.push_str(&format!(
            "[enrollment]\nca_key = \"{}\"\ncert_lifetime = \"{cert_lifetime}\"\n",
            d.join("ca.key").display()
        ));
        fs::write(&cfg, toml).unwrap();
    }

    /// Gives host `name`'s agent a new certificate of the cluster CA (as if re-enrolled).
    pub fn reissue_agent_certificate(&self, name: &str) {
        let leaf = issue(&self.ca, name, Role::Agent, Validity::days_from_now(30)).unwrap();
        self.install_tls(name, &leaf, &self.ca.cert_pem);
    }

    fn write_agent_files(&self, name: &str) {
        let leaf = issue(&self.ca, name, Role::Agent, Validity::days_from_now(30)).unwrap();
        self.install_tls(name, &leaf, &self.ca.cert_pem);
        let d = self.host_dir(name);
        let scratch = self.scratch_dir(name);
        let cfg = format!(
            r#"[agent]
data_dir = "{d}/data"
scratch_dir = "{scratch}"
# One for the cluster, the same path on each of its hosts (as on real hosts), so that
# clusters running side by side do not share the supervisors' working directories.
trees_dir = "{trees}"
[coordinator]
addresses = [{}]
[tls]
ca = "{d}/ca.crt"
cert = "{d}/host.crt"
key = "{d}/host.key"
[reconnect]
initial = "100ms"
max = "1s"
[workload_data]
allowed_roots = ["{logical}"]
host_root = "{d}/root"
[models]
warmup_samples = 3
[probes]
interval = "200ms"
[metrics]
# The tests scrape every agent from outside its namespace.
listen = "0.0.0.0:7443"
enabled = true
[epochs]
# Most tests take epochs at their spec's pace, which is faster than a 5 % freeze budget
# allows on this machine; cadence.rs tests the default budget.
freeze_budget_percent = 50
"#,
            self.coordinators()
                .iter()
                .map(|c| format!("\"{}:{QUIC_PORT}\"", self.host(c).addr))
                .collect::<Vec<_>>()
                .join(", "),
            d = d.display(),
            logical = self.logical_root().display(),
            scratch = scratch.display(),
            trees = self.trees_dir().display(),
        );
        fs::write(d.join("agent.toml"), cfg).unwrap();
    }

    fn spawn(&self, name: &str, program: &str, args: &[&str]) {
        self.spawn_env(name, program, args, &[]);
    }

    fn spawn_env(&self, name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) {
        let log_path = self.host_dir(name).join("log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = self
            .net
            .command(self.host(name), &bin(program))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("UNDERSTUDY_TEST_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} on {name}: {e}"));
        let old = self.procs.lock().unwrap().insert(name.to_owned(), child);
        assert!(old.is_none(), "{name} already has a running process");
    }

    /// Runs `program` (one of ours) with `args` on host `name` (in its network namespace)
    /// to completion.
    pub fn run_on(&self, name: &str, program: &str, args: &[&str]) -> Output {
        self.net
            .command(self.host(name), &bin(program))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program} on {name}: {e}"))
    }

    /// Host pid of `name`'s running process (the agent or coordinator), if any.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.lock().unwrap().get(name).map(Child::id)
    }

    /// Starts the coordinator on its host.
    pub fn start_coordinator(&self) {
        let cfg = self.host_dir("coord").join("coordinator.toml");
        self.spawn(
            "coord",
            "understudy",
            &["serve", "--config", cfg.to_str().unwrap()],
        );
    }

    /// Starts the coordinator with extra environment variables (e.g. fault hooks).
    pub fn start_coordinator_env(&self, env: &[(&str, &str)]) {
        let cfg = self.host_dir("coord").join("coordinator.toml");
        self.spawn_env(
            "coord",
            "understudy",
            &["serve", "--config", cfg.to_str().unwrap()],
            env,
        );
    }

    /// Kills `name`'s process (the agent or coordinator) with SIGKILL, leaving everything
    /// else on the host running, and waits for it to be gone.
    pub fn kill(&self, name: &str) {
        if let Some(mut child) = self.procs.lock().unwrap().remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts agent `name` (SIGKILL if `kill`, else SIGTERM), waiting until the
    /// coordinator has seen the old connection go and the new one register.
    pub fn restart_agent(&self, name: &str, kill: bool) {
        if kill {
            self.kill(name);
        } else {
            self.stop(name);
        }
        crate::wait::eventually(
            &format!("{name} shown disconnected"),
            Duration::from_secs(15),
            || match self.hosts()?.iter().find(|h| h.name == name) {
                Some(h) if !h.connected => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        self.start_agent(name);
        crate::wait::eventually(
            &format!("{name} connected again"),
            Duration::from_secs(15),
            || match self.hosts()?.iter().find(|h| h.name == name) {
                Some(h) if h.connected => Ok(()),
                _ => Err("not yet".into()),
            },
        );
    }

    /// Waits for `name`'s process to end on its own (after a fault hook aborted it).
    pub fn wait_exit(&self, name: &str, limit: Duration) -> Option<i32> {
        let mut child = self.procs.lock().unwrap().remove(name)?;
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Live processes on `host` whose command line contains `marker`.
    pub fn processes(&self, host: &str, marker: &str) -> Vec<u32> {
        self.net
            .pids(self.host(host))
            .into_iter()
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit_once(')')
                            .and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned))
                    })
                    .is_some_and(|st| st != "Z" && st != "X");
                alive
                    && String::from_utf8_lossy(&cmdline)
                        .replace('\0', " ")
                        .contains(marker)
            })
            .collect()
    }

    /// Each of `pids` with its state and tracer, as /proc/PID/status says (for a message).
    pub fn process_states(&self, pids: &[u32]) -> Vec<String> {
        pids.iter()
            .map(|p| {
                let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
                let field = |k: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(k))
                        .unwrap_or("?")
                        .trim()
                        .to_owned()
                };
                format!("{p}: {} tracer {}", field("State:"), field("TracerPid:"))
            })
            .collect()
    }

    /// Kills (SIGKILL) every process on `host` whose command line contains `marker`.
    pub fn kill_processes(&self, host: &str, marker: &str) {
        for pid in self.processes(host, marker) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// The hosts among `hosts` where a workload process whose command line contains
    /// `marker` runs: not its supervisor or `unshare` (whose command lines hold the
    /// workload's), and not stopped (a copy frozen by its lease does not run). A copy that
    /// CRIU is checkpointing at that instant is judged by the state it returns to.
    pub fn running_on(&self, hosts: &[&str], marker: &str) -> Vec<String> {
        hosts
            .iter()
            .filter(|h| {
                self.processes(h, marker).iter().any(|p| {
                    let argv0 = fs::read(format!("/proc/{p}/cmdline"))
                        .unwrap_or_default()
                        .split(|b| *b == 0)
                        .next()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .unwrap_or_default();
                    // Supervisors run from a copy named understudy-agent-<hash>.
                    let exe = argv0.rsplit('/').next().unwrap_or_default();
                    let ours = exe.starts_with("understudy-agent") || exe == "unshare";
                    !ours && settled_state(*p).is_some_and(|st| st != "T")
                })
            })
            .map(|h| (*h).to_owned())
            .collect()
    }

    /// Adds `line` (e.g. `zone = "z1"`) to the `[agent]` section of host `name`'s config.
    pub fn agent_setting(&self, name: &str, line: &str) {
        let cfg = self.host_dir(name).join("agent.toml");
        let text = fs::read_to_string(&cfg).unwrap();
        fs::write(
            &cfg,
            text.replacen("[agent]\n", &format!("[agent]\n{line}\n"), 1),
        )
        .unwrap();
    }

    /// Gives host `name`'s agent the default `[epochs]` budgets; call before starting it.
    pub fn use_default_epoch_budgets(&self, name: &str) {
        let cfg = self.host_dir(name).join("agent.toml");
        let text = fs::read_to_string(&cfg).unwrap();
        let kept = text.replacen("freeze_budget_percent = 50\n", "", 1);
        assert_ne!(kept, text, "no [epochs] budget in {}", cfg.display());
        fs::write(&cfg, kept).unwrap();
    }

    /// Host `name`'s own kernel log (created empty): the file its agent reads in place of
    /// `/dev/kmsg`, for [`crate::pressure::edac_errors`] and the like to write to.
    pub fn kernel_log(&self, name: &str) -> PathBuf {
        let path = self.host_dir(name).join("kmsg");
        if !path.exists() {
            fs::write(&path, "").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        path
    }

    /// Starts the agent on host `name`.
    pub fn start_agent(&self, name: &str) {
        self.start_agent_env(name, &[]);
    }

    /// Starts the agent on host `name` with extra environment variables, besides the
    /// environment its systemd unit gives it.
    ///
    /// Each host has its own kernel log, as a real machine has: the test build's agent reads
    /// `kmsg` in its host's directory in place of `/dev/kmsg` (`UNDERSTUDY_TEST_KMSG`), so what
    /// the machine running the tests logs (or what another test made it log) never counts as
    /// this host's kernel errors. `UNDERSTUDY_TEST_KMSG=""` in `env` reads the real one.
    pub fn start_agent_env(&self, name: &str, env: &[(&str, &str)]) {
        let cfg = self.host_dir(name).join("agent.toml");
        let kmsg = self.kernel_log(name);
        let mut all = unit_environment();
        all.push((
            "UNDERSTUDY_TEST_KMSG".to_owned(),
            kmsg.to_string_lossy().into_owned(),
        ));
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.spawn_env(
            name,
            "understudy-agent",
            &["--config", cfg.to_str().unwrap()],
            &all,
        );
    }

    /// Stops `name`'s process with SIGTERM and returns its exit status code.
    pub fn stop(&self, name: &str) -> Option<i32> {
        let mut child = self.procs.lock().unwrap().remove(name)?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{name} did not stop within 10 s of SIGTERM");
    }

    /// Kills a host: its link cut and SIGKILL to everything running on it (agent and
    /// workloads), with no chance to say goodbye.
    pub fn kill_host(&self, name: &str) {
        self.net.set_link(self.host(name), false).unwrap();
        if let Some(mut child) = self.procs.lock().unwrap().remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.net.kill_all(self.host(name));
    }

    /// Whether `name`'s process is still running.
    pub fn is_running(&self, name: &str) -> bool {
        let mut procs = self.procs.lock().unwrap();
        procs
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Partitions `hosts` from each other (and only from each other), or heals them.
    pub fn isolate(&self, hosts: &[&str], on: bool) {
        for h in hosts {
            self.net.isolate(self.host(h), on).unwrap();
        }
    }

    /// Limits every host's link to `rate` (tc syntax, e.g. `1gbit`).
    pub fn limit_links(&self, rate: &str) {
        for h in self.hosts.values() {
            self.net.limit_rate(h, rate).unwrap();
        }
    }

    /// Cuts or restores `name`'s link.
    pub fn set_link(&self, name: &str, up: bool) {
        self.net.set_link(self.host(name), up).unwrap();
    }

    /// Runs the operator CLI from the test machine against this cluster's coordinator.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command()
            .args(args)
            .output()
            .expect("run understudy CLI")
    }

    /// The operator CLI, pointed at this cluster's coordinators with the admin's
    /// certificate (`understudy ca issue --role admin`).
    pub fn cli_command(&self) -> Command {
        let mut cmd = Command::new(bin("understudy"));
        self.as_admin(&mut cmd);
        cmd.env("UNDERSTUDY_COORDINATOR", self.api());
        cmd
    }

    /// The directory of the operator API's client files (`ca.crt`, and per role
    /// `ROLE.crt`, `ROLE.key`).
    pub fn client_dir(&self) -> PathBuf {
        self.dir.path().join("clients")
    }

    fn write_admin_files(&self) {
        let d = self.client_dir();
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("ca.crt"), &self.ca.cert_pem).unwrap();
        for role in Role::API {
            let leaf = issue(
                &self.ca,
                &format!("test-{role}"),
                role,
                Validity::days_from_now(30),
            )
            .unwrap();
            fs::write(d.join(format!("{role}.key")), &leaf.key_pem).unwrap();
            fs::write(d.join(format!("{role}.crt")), &leaf.cert_pem).unwrap();
        }
    }

    /// A raw HTTPS client of the API with `role`'s certificate (none for `None`).
    pub fn api_client(&self, role: Option<Role>) -> crate::api::ApiClient {
        crate::api::ApiClient::new(&self.client_dir(), role)
    }

    /// GET `path` from coordinator `member`'s API as the admin; the body of a 200 answer.
    pub fn api_get(&self, member: &str, path: &str) -> Result<String, String> {
        let addr = SocketAddr::from((self.host(member).addr, HTTP_PORT));
        self.api_client(Some(Role::Admin)).get(addr, path)
    }

    /// Gives `cmd` the admin's client certificate and the cluster CA.
    pub fn as_admin(&self, cmd: &mut Command) {
        self.as_role(cmd, Role::Admin);
    }

    /// Gives `cmd` a client certificate of `role` and the cluster CA.
    pub fn as_role(&self, cmd: &mut Command, role: Role) {
        let d = self.client_dir();
        cmd.env("UNDERSTUDY_CA", d.join("ca.crt"))
            .env("UNDERSTUDY_CERT", d.join(format!("{role}.crt")))
            .env("UNDERSTUDY_KEY", d.join(format!("{role}.key")));
    }

    /// `understudy hosts --output json`, parsed.
    pub fn hosts(&self) -> Result<Vec<HostRecord>, String> {
        let out = self.cli(&["hosts", "--output", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let list: HostList = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(list.hosts)
    }

    /// `understudy workload show NAME --output json`, parsed.
    pub fn workload(&self, name: &str) -> Result<WorkloadRecord, String> {
        let out = self.cli(&["workload", "show", name, "--output", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// `understudy workload create ARGS…`, which must succeed.
    pub fn create_workload(&self, args: &[&str]) {
        let mut all = vec!["workload", "create"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "workload create {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates workload `name` on host-a, shadowed on host-b with an epoch every
    /// `interval`, with data directory `logical`, running `argv`; it must succeed.
    pub fn create_with_data_dir(&self, name: &str, interval: &str, logical: &Path, argv: &[&str]) {
        let dir = logical.to_str().expect("UTF-8 path");
        let mut args = vec![
            name,
            "--host",
            "host-a",
            "--shadow",
            "host-b",
            "--interval",
            interval,
            "--data-dir",
            dir,
            "--",
        ];
        args.extend_from_slice(argv);
        self.create_workload(&args);
    }

    /// A cluster with its coordinator and every agent started and connected.
    pub fn started(agents: &[&str]) -> Self {
        let c = Self::new(agents);
        c.start_coordinator();
        for a in agents {
            c.start_agent(a);
        }
        c.wait_connected(agents.len());
        c
    }

    /// Waits until `n` hosts are connected.
    pub fn wait_connected(&self, n: usize) {
        crate::wait::eventually("agents connected", Duration::from_secs(15), || {
            let got = self.hosts()?.iter().filter(|h| h.connected).count();
            if got == n {
                Ok(())
            } else {
                Err(format!("{got} of {n} connected"))
            }
        });
    }

    /// Waits until at least `at_least` epochs of `name` are committed on its shadow.
    pub fn wait_for_epochs(&self, name: &str, at_least: u64) -> WorkloadRecord {
        crate::wait::eventually(
            "epochs committed on the shadow",
            Duration::from_secs(60),
            || {
                let w = self.workload(name)?;
                if w.epochs >= at_least {
                    Ok(w)
                } else {
                    Err(format!(
                        "{} epochs; unprotected: {:?}; state {:?}",
                        w.epochs, w.unprotected, w.state
                    ))
                }
            },
        )
    }

    /// What workload `name` has printed on `host` (its output log there).
    pub fn output_log(&self, host: &str, name: &str) -> String {
        fs::read_to_string(
            self.host_dir(host)
                .join("data/workloads")
                .join(name)
                .join("output.log"),
        )
        .unwrap_or_default()
    }

    /// The coordinator's `/metrics` text.
    pub fn metrics(&self) -> Result<String, String> {
        http_get(
            SocketAddr::from((self.host("coord").addr, PLAIN_PORT)),
            "/metrics",
        )
    }

    /// The value of one metric sample (`name{labels}` exactly as exposed) on the
    /// coordinator's `/metrics`.
    pub fn metric(&self, sample: &str) -> Result<f64, String> {
        sample_value(&self.metrics()?, sample)
            .ok_or_else(|| format!("no sample {sample} in /metrics"))
    }

    /// The value of one metric sample on agent `host`'s `/metrics`.
    pub fn agent_metric(&self, host: &str, sample: &str) -> Result<f64, String> {
        let text = http_get(SocketAddr::from((self.host(host).addr, 7443)), "/metrics")?;
        sample_value(&text, sample)
            .ok_or_else(|| format!("no sample {sample} in {host}'s /metrics"))
    }

    /// A host's log so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.host_dir(name).join("log")).unwrap_or_default()
    }

    /// Copies every host's log (and workload output logs) to `dest`, for a failed run.
    pub fn save_logs(&self, dest: &Path) {
        let _ = fs::create_dir_all(dest);
        for name in self.hosts.keys() {
            let _ = fs::copy(
                self.host_dir(name).join("log"),
                dest.join(format!("{name}.log")),
            );
            let workloads = self.host_dir(name).join("data/workloads");
            for w in fs::read_dir(&workloads).into_iter().flatten().flatten() {
                let _ = fs::copy(
                    w.path().join("output.log"),
                    dest.join(format!(
                        "{name}.{}.output.log",
                        w.file_name().to_string_lossy()
                    )),
                );
            }
        }
    }

    /// Adds a client-side mark to a host's log (helps reading logs of failed tests).
    pub fn note(&self, name: &str, text: &str) {
        if let Ok(mut f) = fs::OpenOptions::new()
            .append(true)
            .open(self.host_dir(name).join("log"))
        {
            let _ = writeln!(f, "---- test: {text}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut c) in procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(self.scratch_root());
        if std::thread::panicking() {
            // UNDERSTUDY_TEST_LOG_LINES shows more of each log (default 30 lines).
            let lines = std::env::var("UNDERSTUDY_TEST_LOG_LINES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(30);
            for name in self.hosts.keys() {
                let log = self.log(name);
                let tail: Vec<&str> = log.lines().rev().take(lines).collect();
                eprintln!("==== last lines of {name}'s log ====");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// The state of `pid` once no tracer holds it: CRIU seizes a tree for each checkpoint
/// (state `t`, for a few hundred milliseconds on a loaded machine), after which it runs
/// again, or stays stopped (`T`) if its lease had frozen it. Still traced after 5 s: `t`,
/// counted as running (a live copy).
pub fn settled_state(pid: u32) -> Option<String> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = proc_state(pid)?;
        if st != "t" || std::time::Instant::now() >= until {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of process `pid` (`R`, `S`, `T` for stopped, …).
pub fn proc_state(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

/// The value of sample `sample` (`name{labels}` exactly as exposed) in a Prometheus text.
fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A plain HTTP/1.1 GET over TCP; returns the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.to_owned())
}
