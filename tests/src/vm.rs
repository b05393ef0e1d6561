//! Test VMs: QEMU machines with a stock Debian 12 kernel (6.1, soft-dirty tracking) and
//! systemd as process 1, for what this machine's kernel or sandbox cannot do (non-root
//! workloads under CRIU, which needs CAP_SYS_RESOURCE; memory tracking; real units).
//!
//! The image is built once and cached by `scripts/vm/build-image.sh`; each VM boots a
//! copy-on-write overlay of it (QEMU's own TCG emulation unless `UNDERSTUDY_VM_ACCEL` says
//! otherwise: `/dev/kvm` here cannot boot a kernel). Each VM has two NICs: a control NIC on
//! QEMU's user network, restricted (no traffic leaves the machine; the harness reaches the
//! VM's ssh through a forwarded port on 127.0.0.1), and a LAN NIC joining the two VMs over
//! QEMU's socket backend on 127.0.0.1, on which they get 10.233.0.2 and .3. The workspace's
//! build directory and a per-test share directory are mounted in each VM over 9p.
//! Dropping the set kills the VMs and removes their overlays.

pub mod install;
pub mod lifecycle;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why VM tests cannot run here, or `None`. Under `UNDERSTUDY_REQUIRE_VM=1` (as in the
/// test command) a missing prerequisite fails them instead.
pub fn vm_unavailable() -> Option<String> {
    let reason = if crate::e2e_unavailable().is_some() {
        Some("needs root".to_string())
    } else if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("needs qemu-system-x86_64 (Debian's qemu-system-x86)".to_string())
    } else if Command::new("qemu-img").arg("--version").output().is_err() {
        Some("needs qemu-img (qemu-utils)".to_string())
    } else {
        None
    };
    if let Some(r) = &reason {
        if std::env::var("UNDERSTUDY_REQUIRE_VM").as_deref() == Ok("1") {
            panic!("VM test prerequisites missing: {r}");
        }
    }
    reason
}

/// Returns early from a test, saying why, when VM tests cannot run here.
#[macro_export]
macro_rules! require_vm {
    () => {
        if let Some(reason) = $crate::vm::vm_unavailable() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}

/// One running VM.
#[derive(Debug)]
pub struct Vm {
    /// Its name (also its hostname and certificate name).
    pub name: String,
    /// Its address on the test LAN.
    pub lan_ip: Ipv4Addr,
    ssh_port: u16,
    qemu: Child,
}

/// Two VMs on one LAN.
#[derive(Debug)]
pub struct VmPair {
    /// The VMs, by boot order.
    pub vms: Vec<Vm>,
    dir: tempfile::TempDir,
    image: PathBuf,
    /// How long each VM took from start to answering on ssh.
    pub boot_times: Vec<Duration>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the image if it is not cached; returns the cache directory.
fn image() -> PathBuf {
    let script = repo_root().join("scripts/vm/build-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("run build-image.sh");
    assert!(
        out.status.success(),
        "building the VM image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = Command::new("bash")
        .arg(&script)
        .arg("--print-dir")
        .output()
        .expect("run build-image.sh --print-dir");
    PathBuf::from(String::from_utf8_lossy(&dir.stdout).trim())
}

impl VmPair {
    /// Boots VMs `names` (two), waits until both answer on ssh, and sets them up: LAN
    /// addresses, the share mounted at `/mnt/understudy-share`, the workspace's build
    /// directory at `/mnt/understudy-bin` (understudy itself is installed from its
    /// packages: [`install`]).
    pub fn boot(names: [&str; 2]) -> Self {
        let image = image();
        let dir = tempfile::Builder::new()
            .prefix("understudy-vm-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("share")).expect("share dir");
        let bin_dir = crate::cluster::bin("understudy-agent")
            .parent()
            .expect("binary dir")
            .to_path_buf();
        let lan_port = free_port();
        let accel = std::env::var("UNDERSTUDY_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut vms = Vec::new();
        let started = Instant::now();
        for (i, name) in names.iter().enumerate() {
            let overlay = dir.path().join(format!("{name}.qcow2"));
            let ok = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(image.join("rootfs.img"))
                .arg(&overlay)
                .status()
                .expect("qemu-img")
                .success();
            assert!(ok, "qemu-img create {}", overlay.display());
            let ssh_port = free_port();
            let lan = if i == 0 {
                format!("socket,id=lan,listen=127.0.0.1:{lan_port}")
            } else {
                format!("socket,id=lan,connect=127.0.0.1:{lan_port}")
            };
            let console = std::fs::File::create(dir.path().join(format!("{name}.console")))
                .expect("console log");
            let qemu = Command::new("qemu-system-x86_64")
                .args(["-machine", &format!("q35,accel={accel}")])
                .args(["-cpu", "max", "-smp", "1", "-m", "1536"])
                .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
                .arg("-kernel")
                .arg(image.join("vmlinuz"))
                .arg("-initrd")
                .arg(image.join("initrd.img"))
                .args([
                    "-append",
                    &format!("root=/dev/vda rw console=ttyS0 systemd.hostname={name}"),
                ])
                .arg("-drive")
                .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
                .args([
                    "-netdev",
                    &format!("user,id=ctl,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
                    "-device",
                    &format!("virtio-net-pci,netdev=ctl,mac=52:54:00:12:00:0{}", i + 1),
                    "-netdev",
                    &lan,
                    "-device",
                    &format!("virtio-net-pci,netdev=lan,mac=52:54:00:34:00:0{}", i + 1),
                ])
                .arg("-virtfs")
                .arg(format!(
                    "local,path={},mount_tag=understudy-bin,security_model=none,readonly=on",
                    bin_dir.display()
                ))
                .arg("-virtfs")
                .arg(format!(
                    "local,path={},mount_tag=understudy-share,security_model=none",
                    dir.path().join("share").display()
                ))
                .stdin(Stdio::null())
                .stdout(console.try_clone().expect("console"))
                .stderr(console)
                .spawn()
                .expect("start qemu-system-x86_64");
            vms.push(Vm {
                name: (*name).to_owned(),
                lan_ip: Ipv4Addr::new(10, 233, 0, 2 + i as u8),
                ssh_port,
                qemu,
            });
            // The listening end of the LAN must be up before the other connects.
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut pair = VmPair {
            vms,
            dir,
            image,
            boot_times: Vec::new(),
        };
        for i in 0..pair.vms.len() {
            let deadline = Instant::now() + Duration::from_secs(400);
            loop {
                if pair.try_ssh(i, "true").is_some_and(|o| o.status.success()) {
                    pair.boot_times.push(started.elapsed());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not answer on ssh within 400 s; console:\n{}",
                    pair.vms[i].name,
                    pair.console(i)
                );
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        for i in 0..pair.vms.len() {
            let ip = pair.vms[i].lan_ip;
            pair.run(
                i,
                &format!(
                    "set -e
                     lan=$(ip -o link | awk -F': ' '/52:54:00:34/ {{print $2}}')
                     ip addr add {ip}/24 dev $lan && ip link set $lan up
                     mount -t 9p -o trans=virtio,version=9p2000.L,ro understudy-bin /mnt/understudy-bin
                     mount -t 9p -o trans=virtio,version=9p2000.L understudy-share /mnt/understudy-share"
                ),
            );
        }
        pair
    }

    /// The directory shared with every VM as `/mnt/understudy-share`.
    pub fn share(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    /// The image cache directory.
    pub fn image_dir(&self) -> &Path {
        &self.image
    }

    /// The index of VM `name`.
    pub fn index(&self, name: &str) -> usize {
        self.vms
            .iter()
            .position(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VM {name}"))
    }

    fn try_ssh(&self, i: usize, script: &str) -> Option<Output> {
        let key = self.image.join("id_ed25519");
        Command::new("ssh")
            .args(["-q", "-i"])
            .arg(key)
            .args(["-p", &self.vms[i].ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "root@127.0.0.1",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .ok()
    }

    /// Runs `script` (sh) as root in VM `i`; returns its output, whatever its status.
    pub fn ssh(&self, i: usize, script: &str) -> Output {
        self.try_ssh(i, script)
            .unwrap_or_else(|| panic!("ssh to {} failed to run", self.vms[i].name))
    }

    /// Runs `script` in VM `i`; it must succeed. Returns its stdout.
    pub fn run(&self, i: usize, script: &str) -> String {
        let out = self.ssh(i, script);
        assert!(
            out.status.success(),
            "in {}: `{script}` failed ({:?}):\n{}{}",
            self.vms[i].name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// VM `i`'s serial console so far.
    pub fn console(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.console", self.vms[i].name)),
        )
        .unwrap_or_default()
    }
}

impl Drop for VmPair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.vms.len() {
                for unit in ["understudy-coordinator", "understudy-agent"] {
                    if let Some(o) =
                        self.try_ssh(i, &format!("journalctl -u {unit} --no-pager | tail -n 40"))
                    {
                        eprintln!(
                            "==== {} {unit} ====\n{}",
                            self.vms[i].name,
                            String::from_utf8_lossy(&o.stdout)
                        );
                    }
                }
            }
        }
        for vm in &mut self.vms {
            let _ = vm.qemu.kill();
            let _ = vm.qemu.wait();
        }
    }
}
