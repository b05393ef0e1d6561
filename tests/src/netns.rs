//! A test network: a bridge in the root namespace and one network namespace per host,
//! joined to it by veth pairs, each host with its own address.
//!
//! Parallel tests (threads or processes) each hold the lock of a numbered slot under
//! `/run/understudy-tests`, which fixes their bridge, namespace and subnet names; leftovers
//! of a killed run in a slot are removed when the slot is next taken. The bridge gets an
//! address in the subnet, so test traffic never leaves the machine by the default route.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const SLOT_DIR: &str = "/run/understudy-tests";
const MAX_SLOTS: u32 = 200;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One test host: a network namespace with one address on the test bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's name in the test (also its certificate name).
    pub name: String,
    /// Name of its network namespace.
    pub netns: String,
    /// Its address on the test network.
    pub addr: Ipv4Addr,
    /// The root-namespace end of its veth pair (down = link cut).
    pub veth: String,
}

/// A test network with its hosts.
#[derive(Debug)]
pub struct Net {
    slot: u32,
    hosts: Vec<Host>,
    /// Hosts with a link on the members' network, with that link's root end.
    members: Vec<String>,
    _lock: fs::File,
}

impl Net {
    /// Claims a slot and creates the bridge.
    pub fn new() -> Result<Self, String> {
        fs::create_dir_all(SLOT_DIR).map_err(|e| format!("{SLOT_DIR}: {e}"))?;
        for slot in 1..=MAX_SLOTS {
            if let Some(lock) = claim(slot)? {
                let net = Net {
                    slot,
                    hosts: Vec::new(),
                    members: Vec::new(),
                    _lock: lock,
                };
                net.cleanup_leftovers();
                let br = net.bridge();
                ip(&["link", "add", &br, "type", "bridge"])?;
                ip(&["addr", "add", &format!("{}/24", net.gateway()), "dev", &br])?;
                ip(&["link", "set", &br, "up"])?;
                return Ok(net);
            }
        }
        Err(format!("no free test network slot in {SLOT_DIR}"))
    }

    fn bridge(&self) -> String {
        format!("usbr{}", self.slot)
    }

    /// The bridge's own address: where the root namespace (test code, CLI) sits.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.slot as u8, 254)
    }

    fn ns_prefix(&self) -> String {
        format!("us{}-", self.slot)
    }

    /// Adds a host named `name`.
    pub fn add_host(&mut self, name: &str) -> Result<Host, String> {
        let i = self.hosts.len();
        let netns = format!("{}{name}", self.ns_prefix());
        let veth = format!("us{}v{i}", self.slot);
        let peer = format!("us{}p{i}", self.slot);
        let addr = Ipv4Addr::new(10, 231, self.slot as u8, (i + 1) as u8);
        ip(&["netns", "add", &netns])?;
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &netns])?;
        ip(&["link", "set", &veth, "master", &self.bridge(), "up"])?;
        ip(&["-n", &netns, "link", "set", &peer, "name", "eth0"])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        let host = Host {
            name: name.to_owned(),
            netns,
            addr,
            veth,
        };
        self.hosts.push(host.clone());
        Ok(host)
    }

    fn member_bridge(&self) -> String {
        format!("usbm{}", self.slot)
    }

    /// Gives `host` a second link, on a second bridge reserved for coordinator-group
    /// members' peer traffic, and returns its address there. Cutting that link
    /// ([`Net::set_member_link`]) partitions a member from the others while agents and
    /// operators still reach it.
    pub fn add_member_link(&mut self, host: &Host) -> Result<Ipv4Addr, String> {
        let i = self.members.len();
        if i == 0 {
            ip(&["link", "add", &self.member_bridge(), "type", "bridge"])?;
            ip(&["link", "set", &self.member_bridge(), "up"])?;
        }
        let veth = format!("us{}m{i}", self.slot);
        let peer = format!("us{}q{i}", self.slot);
        let addr = Ipv4Addr::new(10, 232, self.slot as u8, (i + 1) as u8);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &host.netns])?;
        ip(&["link", "set", &veth, "master", &self.member_bridge(), "up"])?;
        ip(&["-n", &host.netns, "link", "set", &peer, "name", "eth1"])?;
        ip(&[
            "-n",
            &host.netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth1",
        ])?;
        ip(&["-n", &host.netns, "link", "set", "eth1", "up"])?;
        self.members.push(veth);
        Ok(addr)
    }

    /// Cuts (`up = false`) or restores the `i`-th member link ([`Net::add_member_link`]).
    pub fn set_member_link(&self, i: usize, up: bool) -> Result<(), String> {
        let veth = self.members.get(i).ok_or("no such member link")?;
        ip(&["link", "set", veth, if up { "up" } else { "down" }])
    }

    /// Cuts (`up = false`) or restores a host's link.
    pub fn set_link(&self, host: &Host, up: bool) -> Result<(), String> {
        ip(&["link", "set", &host.veth, if up { "up" } else { "down" }])
    }

    /// Isolates (`on`) or joins again a host's bridge port: isolated ports cannot reach
    /// each other, but still reach every other host and the test process (a partition of
    /// chosen hosts that leaves the rest of the network as it is).
    pub fn isolate(&self, host: &Host, on: bool) -> Result<(), String> {
        let out = Command::new("bridge")
            .args([
                "link",
                "set",
                "dev",
                &host.veth,
                "isolated",
                if on { "on" } else { "off" },
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Limits `host`'s link to `rate` (tc syntax, e.g. `1gbit`) in both directions.
    pub fn limit_rate(&self, host: &Host, rate: &str) -> Result<(), String> {
        let tbf = [
            "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms",
        ];
        let out = Command::new("tc")
            .args(["qdisc", "replace", "dev", &host.veth])
            .args(tbf)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let out = Command::new("tc")
            .args(["-n", &host.netns, "qdisc", "replace", "dev", "eth0"])
            .args(tbf)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(())
    }

    /// A command that runs `program` inside `host`'s network namespace (only the network
    /// namespace: CRIU refuses trees in a private mount namespace made by `ip netns exec`).
    pub fn command(&self, host: &Host, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", host.netns))
            .arg("--")
            .arg(program);
        cmd
    }

    /// SIGKILLs every process in `host`'s network namespace (its agent and workloads
    /// alike, as when a machine dies).
    pub fn kill_all(&self, host: &Host) {
        let pids: Vec<String> = self.pids(host).iter().map(u32::to_string).collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-9").args(&pids).status();
        }
    }

    /// Every process in `host`'s network namespace.
    pub fn pids(&self, host: &Host) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(format!("/run/netns/{}", host.netns)) else {
            return Vec::new();
        };
        let want = format!("net:[{}]", meta.ino());
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let ns = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
                (ns.to_string_lossy() == want).then_some(pid)
            })
            .collect()
    }

    fn cleanup_leftovers(&self) {
        let prefix = self.ns_prefix();
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split_whitespace().next() {
                    if name.starts_with(&prefix) {
                        let _ = ip(&["netns", "del", name]);
                    }
                }
            }
        }
        for i in 0..16 {
            let _ = ip(&["link", "del", &format!("us{}v{i}", self.slot)]);
            let _ = ip(&["link", "del", &format!("us{}m{i}", self.slot)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
        let _ = ip(&["link", "del", &self.member_bridge()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            self.kill_all(h);
        }
        for h in &self.hosts {
            // Deleting the root end removes the pair now; a namespace may outlive its
            // name while its last processes exit.
            let _ = ip(&["link", "del", &h.veth]);
            let _ = ip(&["netns", "del", &h.netns]);
        }
        self.cleanup_leftovers();
    }
}

fn slot_path(slot: u32) -> PathBuf {
    PathBuf::from(SLOT_DIR).join(format!("slot-{slot}.lock"))
}

/// Tries to take `slot`'s lock file. The lock lives as long as the returned file is open,
/// and the kernel releases it when a killed test process dies, so slots never go stale.
fn claim(slot: u32) -> Result<Option<fs::File>, String> {
    let path = slot_path(slot);
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}
