//! Workload specifications and the orders and reports that move workloads between hosts.
//!
//! Every order and report carries the workload's *generation*: agents refuse anything older
//! than the newest generation they have seen, so a delayed or replayed order can never
//! act on a workload that has since moved.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest workload name.
pub const MAX_NAME_LEN: usize = 63;

/// What to run and how to protect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Unique name in the cluster.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (default `/`); must exist on every host it may run on.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Time between checkpoint epochs, milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How to check that a restored workload serves.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// Data directories (absolute logical paths) captured with every epoch and
    /// materialised at the same paths on the host it moves to.
    #[serde(default)]
    pub data_dirs: Vec<PathBuf>,
    /// What the agent does when the process tree exits on its own (default: nothing).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The user the command runs as, a name or a numeric uid (default: root). The
    /// workload's supervisor stays root and drops to it just before starting the command.
    #[serde(default)]
    pub user: Option<String>,
    /// The command's group, a name or a numeric gid (default: the user's own group).
    #[serde(default)]
    pub group: Option<String>,
    /// Its supplementary groups (default: the user's, from the host's group database).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// The signal that asks the command to stop (default `SIGTERM`).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// How long a stop waits after the stop signal before it kills the whole tree,
    /// milliseconds (default 30 s).
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// Whether the coordinator restores it on its shadow by itself when its host is lost.
    #[serde(default)]
    pub failover: FailoverMode,
    /// How much it matters when the coordinator weighs moving it (default `normal`).
    #[serde(default)]
    pub priority: Priority,
    /// Names of `env` variables whose values are secret: the API shows them to nobody
    /// (`"(secret)"`), and they are never logged. The workload still gets them.
    #[serde(default)]
    pub secret_env: Vec<String>,
}

/// How much a workload matters when the coordinator weighs a move: the benefit of moving
/// it off a host in trouble is the trouble's probability times this weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Weight 0.5.
    Low,
    /// Weight 1.
    #[default]
    Normal,
    /// Weight 2.
    High,
    /// Weight 4.
    Critical,
}

impl Priority {
    /// Its name, as specs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Its weight.
    pub fn weight(self) -> f64 {
        match self {
            Priority::Low => 0.5,
            Priority::Normal => 1.0,
            Priority::High => 2.0,
            Priority::Critical => 4.0,
        }
    }
}

/// Who restores a workload whose primary host is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverMode {
    /// The coordinator, once the host has been unreachable for `failover_after`; the
    /// workload runs under a lease and freezes without one.
    #[default]
    Auto,
    /// Nobody: it waits for its host to come back, and runs without a lease.
    Manual,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            name: String::new(),
            command: Vec::new(),
            env: Vec::new(),
            workdir: None,
            interval_ms: default_interval_ms(),
            probe: None,
            data_dirs: Vec::new(),
            restart: RestartPolicy::default(),
            user: None,
            group: None,
            groups: None,
            stop_signal: default_stop_signal(),
            stop_timeout_ms: default_stop_timeout_ms(),
            failover: FailoverMode::Auto,
            priority: Priority::Normal,
            secret_env: Vec::new(),
        }
    }
}

fn default_stop_signal() -> String {
    "SIGTERM".into()
}

fn default_stop_timeout_ms() -> u64 {
    30_000
}

/// The signals a workload may be stopped with: those its supervisor passes on to the
/// command, and SIGKILL (which ends the whole tree at once). By number, without `SIG`.
pub const STOP_SIGNALS: [(&str, i32); 7] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
];

/// The number of a stop signal named `SIGTERM`, `TERM` or `15`.
pub fn stop_signal_number(name: &str) -> Option<i32> {
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    STOP_SIGNALS
        .iter()
        .find(|(n, num)| *n == bare || num.to_string() == bare)
        .map(|(_, num)| *num)
}

/// Checks a user or group name (or numeric id) as `useradd` would accept it.
fn check_account_name(field: &str, name: &str, out: &mut Vec<(String, String)>) {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-$".contains(&b))
        && !name.starts_with('-');
    if !ok {
        out.push((
            field.into(),
            format!(
                "{:?} is not a user or group name (1-32 of a-z, A-Z, 0-9, '_', '.', '-', '$', or a number)",
                name
            ),
        ));
    }
}

/// Restarting a workload whose process tree exited on its own, on the host it runs on: up
/// to `attempts` restarts within any `window_ms`, each after `delay_ms`; past that the
/// workload is left exited. A restart runs the command afresh (memory since the last epoch
/// is lost, data directories are kept as they are), like Nomad's `restart` block or
/// systemd's `Restart=on-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed within the window; 0 never restarts.
    pub attempts: u32,
    /// Pause before each restart, milliseconds.
    pub delay_ms: u64,
    /// Restarts older than this no longer count against `attempts`, milliseconds.
    pub window_ms: u64,
}

/// Most restarts a policy may allow per window.
pub const MAX_RESTART_ATTEMPTS: u32 = 100;

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            attempts: 0,
            delay_ms: 5_000,
            window_ms: 30 * 60_000,
        }
    }
}

impl RestartPolicy {
    /// Whether the tree should be restarted after an exit at `now_ms`, given when the
    /// earlier restarts were (oldest first): `Some(delay_ms)` or `None` (give up).
    pub fn decide(&self, restarts_ms: &[u64], now_ms: u64) -> Option<u64> {
        let recent = restarts_ms
            .iter()
            .filter(|t| now_ms.saturating_sub(**t) < self.window_ms)
            .count();
        (recent < self.attempts as usize).then_some(self.delay_ms)
    }

    fn problems(&self, out: &mut Vec<(String, String)>) {
        if self.attempts > MAX_RESTART_ATTEMPTS {
            out.push((
                "restart.attempts".into(),
                format!(
                    "{} is more than {MAX_RESTART_ATTEMPTS} restarts per window",
                    self.attempts
                ),
            ));
        }
        if self.delay_ms > 3_600_000 {
            out.push((
                "restart.delay".into(),
                format!("{} ms is outside 0..1h", self.delay_ms),
            ));
        }
        if !(1_000..=7 * 86_400_000).contains(&self.window_ms) {
            out.push((
                "restart.window".into(),
                format!("{} ms is outside 1s..7d", self.window_ms),
            ));
        }
    }
}

/// Most data directories one workload may declare.
pub const MAX_DATA_DIRS: usize = 16;
/// Most arguments a command (or probe command) may have.
pub const MAX_ARGS: usize = 1024;
/// Most environment variables a workload may set.
pub const MAX_ENV: usize = 256;
/// Most bytes a workload's arguments and environment may take together.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Refuses more than `max` entries, and any entry with a NUL byte (which no argument can
/// hold), naming `field` and the entry's index.
fn check_strings(field: &str, items: &[String], max: usize, out: &mut Vec<(String, String)>) {
    if items.len() > max {
        out.push((
            field.into(),
            format!("{} arguments; at most {max} are allowed", items.len()),
        ));
    }
    for (i, a) in items.iter().enumerate() {
        if a.contains('\0') {
            out.push((
                format!("{field}[{i}]"),
                "contains a NUL byte, which no argument can hold".into(),
            ));
        }
    }
}

fn default_interval_ms() -> u64 {
    5000
}

/// A liveness probe run after a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// A TCP connection to this port on the host's own address succeeds.
    Tcp {
        /// The port.
        port: u16,
    },
    /// This command exits 0.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

impl WorkloadSpec {
    /// Every problem with the spec, as (field, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Err(e) = validate_workload_name(&self.name) {
            out.push(("name".into(), e));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            out.push(("command".into(), "a command to run is required".into()));
        }
        check_strings("command", &self.command, MAX_ARGS, &mut out);
        if self.env.len() > MAX_ENV {
            out.push((
                "env".into(),
                format!(
                    "{} variables; at most {MAX_ENV} are allowed",
                    self.env.len()
                ),
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                out.push((
                    format!("env.{}", k.escape_debug()),
                    "a variable name must be non-empty, without '=' or NUL".into(),
                ));
            }
            if v.contains('\0') {
                out.push((
                    format!("env.{k}"),
                    "the value contains a NUL byte, which no process environment can hold".into(),
                ));
            }
        }
        for (i, k) in self.secret_env.iter().enumerate() {
            if !self.env.iter().any(|(name, _)| name == k) {
                out.push((
                    format!("secret_env[{i}]"),
                    format!(
                        "{:?} is not a variable of env",
                        k.escape_debug().to_string()
                    ),
                ));
            }
        }
        if self.secret_env.len() > MAX_ENV {
            out.push((
                "secret_env".into(),
                format!(
                    "{} names; at most {MAX_ENV} are allowed",
                    self.secret_env.len()
                ),
            ));
        }
        let size: usize = self.command.iter().map(|a| a.len() + 1).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if size > MAX_COMMAND_BYTES {
            out.push((
                "command".into(),
                format!(
                    "the arguments and environment take {size} bytes; at most {MAX_COMMAND_BYTES} are allowed"
                ),
            ));
        }
        if let Some(Probe::Command { argv }) = &self.probe {
            if argv.is_empty() || argv[0].is_empty() {
                out.push((
                    "probe.command".into(),
                    "a command to run is required".into(),
                ));
            }
            check_strings("probe.command", argv, MAX_ARGS, &mut out);
            let size: usize = argv.iter().map(|a| a.len() + 1).sum();
            if size > MAX_COMMAND_BYTES {
                out.push((
                    "probe.command".into(),
                    format!("{size} bytes; at most {MAX_COMMAND_BYTES} are allowed"),
                ));
            }
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            out.push((
                "interval".into(),
                format!("{} ms is outside 100ms..1h", self.interval_ms),
            ));
        }
        if let Some(dir) = &self.workdir {
            if dir.as_os_str().as_encoded_bytes().contains(&0) {
                out.push(("workdir".into(), "the path contains a NUL byte".into()));
            } else if !dir.is_absolute() {
                out.push((
                    "workdir".into(),
                    format!("{} must be absolute", dir.display()),
                ));
            }
        }
        if self.data_dirs.len() > MAX_DATA_DIRS {
            out.push((
                "data_dirs".into(),
                format!(
                    "{} data directories; at most {MAX_DATA_DIRS} are allowed",
                    self.data_dirs.len()
                ),
            ));
        }
        for (i, dir) in self.data_dirs.iter().enumerate() {
            if let Err(e) = check_data_dir_path(dir) {
                out.push(("data_dirs".into(), e));
                continue;
            }
            for other in &self.data_dirs[..i] {
                if dir.starts_with(other) || other.starts_with(dir) {
                    out.push((
                        "data_dirs".into(),
                        format!(
                            "{} and {} overlap; data directories must not contain each other",
                            other.display(),
                            dir.display()
                        ),
                    ));
                }
            }
        }
        self.restart.problems(&mut out);
        if let Some(u) = &self.user {
            check_account_name("user", u, &mut out);
        }
        if let Some(g) = &self.group {
            check_account_name("group", g, &mut out);
        }
        if let Some(groups) = &self.groups {
            if groups.len() > 64 {
                out.push((
                    "groups".into(),
                    format!("{} groups; at most 64 are allowed", groups.len()),
                ));
            }
            for g in groups {
                check_account_name("groups", g, &mut out);
            }
        }
        if stop_signal_number(&self.stop_signal).is_none() {
            let names: Vec<String> = STOP_SIGNALS
                .iter()
                .map(|(n, _)| format!("SIG{n}"))
                .collect();
            out.push((
                "stop_signal".into(),
                format!("{:?} is not one of {}", self.stop_signal, names.join(", ")),
            ));
        }
        if self.stop_timeout_ms > 3_600_000 {
            out.push((
                "stop_timeout".into(),
                format!("{} ms is outside 0..1h", self.stop_timeout_ms),
            ));
        }
        out
    }
}

/// Checks that a data directory is an absolute, normalised path other than `/`.
pub fn check_data_dir_path(dir: &std::path::Path) -> Result<(), String> {
    use std::path::Component;
    let text = dir
        .to_str()
        .ok_or_else(|| format!("data directory {} is not valid UTF-8", dir.display()))?;
    if !dir.is_absolute() {
        return Err(format!("data directory {text} must be an absolute path"));
    }
    // Path::components() quietly drops interior "." segments, so the text is checked too.
    let normal = dir
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && text
            .split('/')
            .skip(1)
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if text.contains('\0') {
        return Err(format!(
            "data directory {} contains a NUL byte",
            text.escape_debug()
        ));
    }
    if !normal || text.ends_with('/') || text.contains("//") {
        return Err(format!(
            "data directory {text} must be a normalised path (no '.', '..', '//' or trailing '/')"
        ));
    }
    if dir.parent().is_none() {
        return Err("the root directory / cannot be a data directory".into());
    }
    Ok(())
}

/// Checks a workload name: 1–63 characters of `a-z`, `0-9`, `-`, `_`, `.`, starting with
/// a letter or digit (it becomes a directory name on every host).
pub fn validate_workload_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "workload name {name:?} must be 1-{MAX_NAME_LEN} characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        ))
    }
}

/// Another agent, as the data plane reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Host name (its certificate name).
    pub name: String,
    /// Data-plane address.
    pub addr: SocketAddr,
}

/// An order from the coordinator to an agent, on a stream the coordinator opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Order {
    /// Start the workload here as its primary, shadowed on `shadows` (none: unprotected).
    Start {
        /// What to run.
        spec: WorkloadSpec,
        /// The workload's generation.
        generation: u64,
        /// Where to send epochs: each epoch goes to every one.
        shadows: Vec<Peer>,
    },
    /// Accept epochs of the workload from `primary`, for this generation or newer.
    ExpectShadow {
        /// The workload, so the shadow can restore it.
        spec: WorkloadSpec,
        /// Its generation.
        generation: u64,
        /// The host allowed to send epochs.
        primary: String,
    },
    /// This host is not the workload's primary under `generation`: stop any copy of it
    /// running here (whatever its generation), put aside this host's stale copy of its data
    /// directories, and accept epochs from `primary` from now on. Answered only once no copy
    /// runs here.
    Demote {
        /// The workload.
        spec: WorkloadSpec,
        /// Its generation.
        generation: u64,
        /// The host that runs it.
        primary: String,
    },
    /// Take an epoch now. A final epoch stops the workload after the dump.
    Checkpoint {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Stop the workload after dumping (switchover).
        final_epoch: bool,
        /// A final epoch by post-copy: dump without memory, send those images to the
        /// shadow (the target), and serve the memory to it from there on. The tree stays
        /// frozen until every page is taken, then goes.
        post_copy: bool,
        /// The shadow a final epoch goes to (the switchover's target); the workload's
        /// other shadows get periodic epochs only. `None`: every shadow.
        to: Option<String>,
    },
    /// Restore the newest committed epoch (shadow side) and become primary.
    Restore {
        /// What runs (a shadow whose agent restarted no longer knows).
        spec: WorkloadSpec,
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// The oldest epoch acceptable: the newest committed one is restored, and refused
        /// if it is older than this (the recovery point the coordinator recorded).
        epoch: u64,
        /// Where the new primary sends its epochs.
        shadows: Vec<Peer>,
        /// The lease the restored copy starts under (as a heartbeat answer would grant
        /// it), so that it does not freeze before the coordinator records it the primary.
        lease_ms: Option<u64>,
        /// When the newest epoch does not restore (damaged, CRIU's restore fails, or the
        /// restored tree fails its liveness check), try the older ones this host keeps,
        /// newest first, even older than `epoch`: set for a failover, where nothing newer
        /// exists anywhere and an older state beats none; never for a switchover, whose
        /// original resumes instead.
        fall_back: bool,
        /// Restore from the post-copy images the old primary sent under `generation`
        /// instead of an epoch, pulling the memory from it; answered once every page has
        /// arrived (the workload runs before that). Switchovers only.
        post_copy: bool,
    },
    /// Switchover done: forget the stopped original and its images.
    Release {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
    },
    /// Switchover failed before the new primary was confirmed: keep serving here,
    /// restoring locally from the final dump if the tree was stopped.
    Resume {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
    },
    /// The workload is deleted: stop it if it runs here and forget every copy of it.
    Remove {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
    },
    /// Say what this host holds of the workload (answered with [`OrderReply::Held`]).
    /// Read-only: it does not move the generation fence. Answered only after every order
    /// for the workload that this host is carrying out has finished.
    Query {
        /// The workload.
        workload: String,
        /// The generation the asker knows.
        generation: u64,
    },
    /// Send epochs to these shadows from now on (the next one whole to a new one).
    SetShadows {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Every shadow, in the coordinator's order of preference.
        shadows: Vec<Peer>,
    },
}

impl Order {
    /// What is wrong with the order, naming the field, if anything: an agent checks every
    /// order as the coordinator checked the request it came from, so that a faulty or
    /// compromised coordinator cannot make it use a name as a path or run a spec that
    /// could never have been accepted.
    pub fn problem(&self) -> Option<String> {
        let (workload, _) = self.target();
        if let Err(e) = validate_workload_name(workload) {
            return Some(format!("workload: {e}"));
        }
        let spec = match self {
            Order::Start { spec, .. }
            | Order::ExpectShadow { spec, .. }
            | Order::Demote { spec, .. }
            | Order::Restore { spec, .. } => Some(spec),
            _ => None,
        };
        if let Some(spec) = spec {
            if spec.name != workload {
                return Some(format!(
                    "spec.name: {:?} is not the order's workload {workload:?}",
                    spec.name
                ));
            }
            if let Some((field, reason)) = spec.problems().into_iter().next() {
                return Some(format!("spec.{field}: {reason}"));
            }
        }
        let hosts: Vec<&str> = match self {
            Order::Start { shadows, .. }
            | Order::Restore { shadows, .. }
            | Order::SetShadows { shadows, .. } => {
                shadows.iter().map(|p| p.name.as_str()).collect()
            }
            Order::ExpectShadow { primary, .. } | Order::Demote { primary, .. } => {
                vec![primary.as_str()]
            }
            Order::Checkpoint { to, .. } => to.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        for h in &hosts {
            if let Err(e) = crate::tls::identity::validate_host_name(h) {
                return Some(format!("host: {e}"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = hosts.iter().find(|h| !seen.insert(**h)) {
            return Some(format!("shadows: {twice} is named twice"));
        }
        None
    }

    /// The workload and generation the order is for.
    pub fn target(&self) -> (&str, u64) {
        match self {
            Order::Start {
                spec, generation, ..
            }
            | Order::ExpectShadow {
                spec, generation, ..
            }
            | Order::Demote {
                spec, generation, ..
            } => (&spec.name, *generation),
            Order::Checkpoint {
                workload,
                generation,
                ..
            }
            | Order::Restore {
                workload,
                generation,
                ..
            }
            | Order::Release {
                workload,
                generation,
            }
            | Order::Resume {
                workload,
                generation,
            }
            | Order::SetShadows {
                workload,
                generation,
                ..
            }
            | Order::Remove {
                workload,
                generation,
            }
            | Order::Query {
                workload,
                generation,
            } => (workload, *generation),
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Order::Start { .. } => "start",
            Order::ExpectShadow { .. } => "expect-shadow",
            Order::Demote { .. } => "demote",
            Order::Checkpoint {
                final_epoch: false, ..
            } => "checkpoint",
            Order::Checkpoint {
                final_epoch: true, ..
            } => "final-checkpoint",
            Order::Restore { .. } => "restore",
            Order::Release { .. } => "release",
            Order::Resume { .. } => "resume",
            Order::SetShadows { .. } => "set-shadows",
            Order::Remove { .. } => "remove",
            Order::Query { .. } => "query",
        }
    }
}

/// An order as it travels: with the workload's data key when the order needs it (a start,
/// whose epochs the host seals, and a restore, which opens them), kept out of [`Order`] so
/// that no order is ever logged or stored with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEnvelope {
    /// The order.
    pub order: Order,
    /// The workload's data key.
    pub data_key: Option<crate::seal::KeyBytes>,
}

impl Order {
    /// Whether the receiving host needs the workload's data key to carry it out.
    pub fn needs_key(&self) -> bool {
        matches!(self, Order::Start { .. } | Order::Restore { .. })
    }
}

/// What an agent answers to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderReply {
    /// Done.
    Done,
    /// An epoch was committed on the shadow.
    Epoch(EpochReport),
    /// The workload was restored and passed its liveness check.
    Restored {
        /// The epoch restored (the newest committed, at least the one asked for).
        epoch: u64,
        /// Host pid of the restored tree's root.
        pid: i32,
        /// Time CRIU's restore took, milliseconds.
        restore_ms: u64,
        /// Time the liveness check took, milliseconds.
        check_ms: u64,
        /// Newer epochs that did not restore (only with `fall_back`), newest first.
        passed_over: Vec<PassedOver>,
        /// A post-copy restore: how long the memory took to arrive after the check, while
        /// the workload ran, milliseconds (0 otherwise).
        memory_ms: u64,
    },
    /// The order was refused or failed; nothing it would have changed was changed.
    Failed(String),
    /// The order's input is unusable on this host (e.g. a data directory that does not
    /// exist there); nothing was done, and repeating it will not help.
    Invalid(String),
    /// What this host holds of the workload (the answer to a `Query`).
    Held(Option<Box<crate::inventory::Held>>),
}

impl std::fmt::Display for OrderReply {
    /// What the reply says, for people (logs, errors shown by the CLI).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderReply::Done => write!(f, "done"),
            OrderReply::Epoch(e) => write!(f, "epoch {} committed on {}", e.epoch, e.shadow),
            OrderReply::Restored { pid, epoch, .. } => {
                write!(f, "restored epoch {epoch} (pid {pid})")
            }
            OrderReply::Failed(e) => write!(f, "failed: {e}"),
            OrderReply::Invalid(e) => write!(f, "refused: {e}"),
            OrderReply::Held(None) => write!(f, "holds nothing of it"),
            OrderReply::Held(Some(h)) => match &h.copy {
                Some(c) => write!(
                    f,
                    "holds a copy under generation {} ({}, pid {})",
                    c.generation, c.state, c.pid
                ),
                None => write!(f, "holds its epochs only"),
            },
        }
    }
}

/// An epoch a failover's restore passed over for an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedOver {
    /// The epoch.
    pub epoch: u64,
    /// Why it did not restore.
    pub reason: String,
}

/// What a failover that restored an older epoch than the newest says about it, for
/// people: `epoch 27 did not restore (…); epoch 26 did not restore (…)`.
pub fn describe_passed_over(passed: &[PassedOver]) -> String {
    passed
        .iter()
        .map(|p| format!("epoch {} did not restore ({})", p.epoch, p.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One committed epoch, as the primary saw it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochReport {
    /// The workload.
    pub workload: String,
    /// Its generation.
    pub generation: u64,
    /// Epoch number.
    pub epoch: u64,
    /// The shadow that committed it.
    pub shadow: String,
    /// Size of the epoch's files.
    pub bytes_total: u64,
    /// Bytes that went over the wire for it.
    pub bytes_sent: u64,
    /// Bytes of files that differ from the previous epoch (whole changed 4 KiB blocks).
    pub bytes_changed: u64,
    /// Time the workload was frozen for the dump, milliseconds.
    pub frozen_ms: u64,
    /// Of `frozen_ms`, the part spent capturing the data directories.
    pub frozen_disk_ms: u64,
    /// Bytes in the workload's data directories at this epoch.
    pub data_bytes: u64,
    /// Of `bytes_changed`, bytes of the data directories.
    pub data_changed: u64,
    /// Of `bytes_sent`, bytes of data-directory files.
    pub data_sent: u64,
    /// Time the transfer and commit took, milliseconds.
    pub transfer_ms: u64,
    /// Agent CPU time spent on this epoch (dump excluded), milliseconds.
    pub cpu_ms: u64,
    /// When the shadow committed it, milliseconds since the Unix epoch.
    pub committed_unix_ms: u64,
    /// Whether CRIU memory tracking (pre-dumps) was used.
    pub incremental: bool,
    /// How the primary paced the next epoch after this one (none from builds before
    /// adaptive cadence).
    #[serde(default)]
    pub cadence: Option<Cadence>,
}

/// The pace a primary chose for a workload's epochs: the time from one epoch's end to the
/// next one's start, and the limit that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    /// Time from the end of one epoch to the start of the next, milliseconds.
    pub interval_ms: u64,
    /// What set it.
    pub limit: CadenceLimit,
}

/// What set a workload's epoch interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CadenceLimit {
    /// The spec's `interval` (the recovery-point target): every budget is met at it.
    Spec,
    /// The agent's freeze budget: epochs as often as the spec asks would hold the workload
    /// frozen for a larger share of wall time than `[epochs] freeze_budget`.
    FreezeBudget,
    /// The agent's CPU budget: they would cost the agent more than `[epochs] cpu_budget`
    /// of a core.
    CpuBudget,
}

impl CadenceLimit {
    /// How `workload show` names it.
    pub fn describe(self) -> &'static str {
        match self {
            CadenceLimit::Spec => "the spec's interval",
            CadenceLimit::FreezeBudget => "the freeze budget",
            CadenceLimit::CpuBudget => "the CPU budget",
        }
    }
}

/// Something an agent tells the coordinator on its own initiative (one per uni stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Report {
    /// A periodic epoch was committed on the shadow.
    EpochCommitted(EpochReport),
    /// Transfer progress of the epoch in flight.
    Progress {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Bytes sent so far.
        sent: u64,
        /// Bytes to send, as far as known.
        total: u64,
    },
    /// Epochs are not being taken or not reaching the shadow.
    Unprotected {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// Why, in CRIU's or the network's words.
        reason: String,
    },
    /// The workload's process tree exited on its own and its restart policy restarted it.
    Restarted {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// How the tree ended, e.g. "exited with status 3".
        status: String,
        /// Restarts on this host so far.
        restarts: u32,
    },
    /// The workload's process tree exited on its own (and was not restarted).
    Exited {
        /// The workload.
        workload: String,
        /// Its generation.
        generation: u64,
        /// How it ended, e.g. "exit status 3" or "killed by signal 9".
        status: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str]) -> WorkloadSpec {
        WorkloadSpec {
            name: "w".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            workdir: None,
            interval_ms: 1000,
            probe: None,
            data_dirs: Vec::new(),
            restart: RestartPolicy::default(),
            ..Default::default()
        }
    }

    fn fields(s: &WorkloadSpec) -> Vec<String> {
        s.problems().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn an_agent_refuses_orders_no_coordinator_check_would_have_let_through() {
        let good = Order::Start {
            spec: spec(&["/bin/true"]),
            generation: 1,
            shadows: Vec::new(),
        };
        assert_eq!(good.problem(), None);
        let mut s = spec(&["/bin/true"]);
        s.name = "../../etc".into();
        let bad_name = Order::Start {
            spec: s,
            generation: 1,
            shadows: Vec::new(),
        };
        assert!(bad_name.problem().unwrap().starts_with("workload:"));
        let release = Order::Release {
            workload: "a/b".into(),
            generation: 1,
        };
        assert!(release.problem().unwrap().starts_with("workload:"));
        let other = Order::Restore {
            spec: spec(&["/bin/true"]),
            workload: "other".into(),
            generation: 1,
            epoch: 1,
            shadows: Vec::new(),
            lease_ms: None,
            fall_back: false,
            post_copy: false,
        };
        assert!(other.problem().unwrap().starts_with("spec.name:"));
        let nul = Order::ExpectShadow {
            spec: spec(&["/bin/echo", "a\0b"]),
            generation: 1,
            primary: "host-a".into(),
        };
        assert!(nul.problem().unwrap().starts_with("spec.command[1]"));
        let bad_host = Order::Demote {
            spec: spec(&["/bin/true"]),
            generation: 1,
            primary: "Host A/..".into(),
        };
        assert!(bad_host.problem().unwrap().starts_with("host:"));
        let peer = |name: &str| Peer {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let twice = Order::SetShadows {
            workload: "w".into(),
            generation: 1,
            shadows: vec![peer("host-b"), peer("host-c"), peer("host-b")],
        };
        assert_eq!(
            twice.problem().as_deref(),
            Some("shadows: host-b is named twice")
        );
        let bad_target = Order::Checkpoint {
            workload: "w".into(),
            generation: 1,
            final_epoch: true,
            post_copy: false,
            to: Some("../x".into()),
        };
        assert!(bad_target.problem().unwrap().starts_with("host:"));
    }

    #[test]
    fn nul_bytes_and_oversized_commands_are_refused_naming_the_field() {
        assert!(spec(&["/bin/true"]).problems().is_empty());
        assert_eq!(fields(&spec(&["/bin/echo", "a\0b"])), ["command[1]"]);
        let mut s = spec(&["/bin/true"]);
        s.env = vec![("KEY".into(), "va\0lue".into())];
        assert_eq!(fields(&s), ["env.KEY"]);
        s.env = vec![("A=B".into(), "v".into())];
        assert_eq!(fields(&s), ["env.A=B"]);
        let big = "x".repeat(100);
        let many: Vec<&str> = std::iter::once("/bin/true")
            .chain(std::iter::repeat_n(big.as_str(), 15_000))
            .collect();
        let problems = spec(&many).problems();
        assert!(
            problems
                .iter()
                .any(|(f, r)| f == "command" && r.contains("65536")),
            "{problems:?}"
        );
        let mut s = spec(&["/bin/true"]);
        s.probe = Some(Probe::Command {
            argv: vec!["/bin/check".into(), "\0".into()],
        });
        assert_eq!(fields(&s), ["probe.command[1]"]);
    }

    #[test]
    fn data_directories_must_be_normalised_even_where_components_hide_it() {
        for bad in [
            "/srv/x/./db",
            "/srv/x/.",
            "/srv/../etc",
            "/srv//x",
            "/srv/x/",
            "srv/x",
            "/",
        ] {
            assert!(
                check_data_dir_path(std::path::Path::new(bad)).is_err(),
                "{bad} was accepted"
            );
        }
        assert!(check_data_dir_path(std::path::Path::new("/srv/x/db")).is_ok());
    }

    #[test]
    fn names() {
        assert!(validate_workload_name("kv-1").is_ok());
        assert!(validate_workload_name("../etc").is_err());
        assert!(validate_workload_name("").is_err());
        assert!(validate_workload_name("A").is_err());
    }

    #[test]
    fn restarts_are_allowed_up_to_the_attempts_within_the_window_then_refused() {
        let p = RestartPolicy {
            attempts: 2,
            delay_ms: 500,
            window_ms: 60_000,
        };
        assert_eq!(p.decide(&[], 1_000), Some(500), "the first exit restarts");
        assert_eq!(p.decide(&[1_000], 2_000), Some(500), "so does the second");
        assert_eq!(p.decide(&[1_000, 2_000], 3_000), None, "the third gives up");
        assert_eq!(
            p.decide(&[1_000, 2_000], 61_500),
            Some(500),
            "once the first restart is a window old it no longer counts"
        );
        assert_eq!(
            RestartPolicy::default().decide(&[], 0),
            None,
            "off by default"
        );
    }

    #[test]
    fn a_restart_policy_out_of_range_is_named() {
        let mut out = Vec::new();
        RestartPolicy {
            attempts: 1000,
            delay_ms: 7_200_000,
            window_ms: 10,
        }
        .problems(&mut out);
        let fields: Vec<&str> = out.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["restart.attempts", "restart.delay", "restart.window"]
        );
        assert!(out[0].1.contains("1000"), "{out:?}");
    }
}
