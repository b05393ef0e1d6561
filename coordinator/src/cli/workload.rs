//! `understudy workload …` and `understudy migrate`: creating and inspecting workloads and
//! moving them, through the coordinator's API.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use understudy_common::{out, outln};

use clap::Subcommand;
use comfy_table::{presets::NOTHING, Table};
use serde::Deserialize;
use understudy_common::exit;
use understudy_common::workload::{FailoverMode, Priority, Probe, RestartPolicy, WorkloadSpec};

use super::api::{get, print_json, short_duration};
use super::workload_view as view;
use super::Output;
use crate::server::http::{WorkloadList, WorkloadView};
use crate::server::wall_ms;
use crate::server::workloads::{CreateRequest, MigrateRequest, MigrationStatus};
use crate::workloads::migration::Phase;
use crate::workloads::{WorkloadRecord, WorkloadState};

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per invocation; boxing buys nothing
pub enum WorkloadCommand {
    /// Start a protected workload: `understudy workload create NAME --host A -- CMD ARGS…`.
    Create {
        /// Workload name (omit with --spec, which names it).
        name: Option<String>,
        /// Host to run it on.
        #[arg(long)]
        host: Option<String>,
        /// Host to keep its understudy on (default: chosen by the coordinator).
        #[arg(long)]
        shadow: Option<String>,
        /// How many shadows, on as many other hosts (1–3; default 1): each epoch goes to
        /// all, a move or a failover takes the best.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
        shadows: Option<u8>,
        /// Time between checkpoint epochs.
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// After a restore, check that this TCP port accepts connections.
        #[arg(long)]
        probe_tcp: Option<u16>,
        /// Environment variable for the workload, KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// A secret environment variable, KEY=VALUE (repeatable): the workload gets it,
        /// the API shows its value to nobody. A spec file (`secret_env`) keeps the value
        /// out of the shell's history and the process list.
        #[arg(long = "secret-env", value_parser = parse_env)]
        secret_env: Vec<(String, String)>,
        /// Working directory (must exist on every host, or lie in a data directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// A data directory (absolute path) captured with every epoch and moved with the
        /// workload (repeatable).
        #[arg(long = "data-dir")]
        data_dirs: Vec<PathBuf>,
        /// Restart the command when it exits on its own, up to this many times per
        /// --restart-window (default 0: never).
        #[arg(long)]
        restart_attempts: Option<u32>,
        /// Pause before each restart (default 5s).
        #[arg(long, value_parser = humantime::parse_duration)]
        restart_delay: Option<Duration>,
        /// Restarts older than this no longer count against --restart-attempts (default 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        restart_window: Option<Duration>,
        #[command(flatten)]
        service: ServiceArgs,
        /// Read the spec from a TOML file instead.
        #[arg(long, conflicts_with = "command")]
        spec: Option<PathBuf>,
        /// Program and arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List workloads.
    List,
    /// Show one workload in detail.
    Show {
        /// Workload name.
        name: String,
    },
    /// Stop a workload and delete it, with every copy of it on its shadow.
    Delete {
        /// Workload name.
        name: String,
        /// Delete the record even when its primary cannot confirm it stopped the workload
        /// (a host that is down): the host stops its copy when it reconnects.
        #[arg(long)]
        force: bool,
    },
}

/// Who the command runs as and how it is stopped.
#[derive(Debug, Default, clap::Args)]
pub struct ServiceArgs {
    /// Run the command as this user (name or uid) instead of root.
    #[arg(long)]
    user: Option<String>,
    /// Its group (default: the user's own).
    #[arg(long)]
    group: Option<String>,
    /// Its supplementary groups, comma-separated (default: the user's).
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// The signal that asks it to stop (default SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// How long a stop waits before killing the whole tree (default 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_timeout: Option<Duration>,
    /// `auto` (default): restored on its shadow when its host is lost, running under a
    /// lease; `manual`: it waits for its host, without a lease.
    #[arg(long, value_parser = parse_failover)]
    failover: Option<FailoverMode>,
    /// How much it matters when the coordinator weighs moving it off a host in trouble:
    /// low, normal (default), high or critical (weights 0.5, 1, 2, 4).
    #[arg(long, value_parser = parse_priority)]
    priority: Option<Priority>,
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    match s {
        "low" => Ok(Priority::Low),
        "normal" => Ok(Priority::Normal),
        "high" => Ok(Priority::High),
        "critical" => Ok(Priority::Critical),
        other => Err(format!("{other:?} is not low, normal, high or critical")),
    }
}

fn parse_failover(s: &str) -> Result<FailoverMode, String> {
    match s {
        "auto" => Ok(FailoverMode::Auto),
        "manual" => Ok(FailoverMode::Manual),
        other => Err(format!("{other:?} is not auto or manual")),
    }
}

impl ServiceArgs {
    /// Puts these settings on `spec`, the flags winning over the spec file's.
    fn apply(self, file: Option<&SpecFile>, spec: &mut WorkloadSpec) {
        spec.user = self.user.or_else(|| file.and_then(|f| f.user.clone()));
        spec.group = self.group.or_else(|| file.and_then(|f| f.group.clone()));
        spec.groups = self.groups.or_else(|| file.and_then(|f| f.groups.clone()));
        if let Some(sig) = self
            .stop_signal
            .or_else(|| file.and_then(|f| f.stop_signal.clone()))
        {
            spec.stop_signal = sig;
        }
        if let Some(t) = self
            .stop_timeout
            .or_else(|| file.and_then(|f| f.stop_timeout))
        {
            spec.stop_timeout_ms = ms(t);
        }
        if let Some(f) = self.failover.or_else(|| file.and_then(|f| f.failover)) {
            spec.failover = f;
        }
        if let Some(p) = self.priority.or_else(|| file.and_then(|f| f.priority)) {
            spec.priority = p;
        }
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// A workload spec file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    command: Vec<String>,
    host: Option<String>,
    shadow: Option<String>,
    shadows: Option<u8>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Names of `env` variables whose values are secret.
    #[serde(default)]
    secret_env: Vec<String>,
    workdir: Option<PathBuf>,
    probe: Option<ProbeFile>,
    #[serde(default)]
    data_dirs: Vec<PathBuf>,
    #[serde(default)]
    restart: RestartFile,
    user: Option<String>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    stop_signal: Option<String>,
    #[serde(default, with = "humantime_serde")]
    stop_timeout: Option<Duration>,
    failover: Option<FailoverMode>,
    priority: Option<Priority>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartFile {
    attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The restart policy from flags, falling back to the file's, then the defaults.
fn restart_policy(
    attempts: Option<u32>,
    delay: Option<Duration>,
    window: Option<Duration>,
    file: &RestartFile,
) -> RestartPolicy {
    let d = RestartPolicy::default();
    RestartPolicy {
        attempts: attempts.or(file.attempts).unwrap_or(d.attempts),
        delay_ms: delay.or(file.delay).map_or(d.delay_ms, ms),
        window_ms: window.or(file.window).map_or(d.window_ms, ms),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFile {
    tcp: Option<u16>,
    command: Option<Vec<String>>,
}

fn read_spec_file(path: &Path) -> Result<SpecFile, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        exit::DATA_ERR
    })?;
    understudy_common::config::parse::<SpecFile>(&text).map_err(|(key, reason)| {
        eprintln!("{}: {key}: {reason}", path.display());
        exit::DATA_ERR
    })
}

/// Adds `--secret-env` variables to the environment, marked secret.
fn add_secrets(spec: &mut WorkloadSpec, secrets: Vec<(String, String)>) {
    for (k, v) in secrets {
        spec.env.retain(|(name, _)| *name != k);
        spec.env.push((k.clone(), v));
        if !spec.secret_env.contains(&k) {
            spec.secret_env.push(k);
        }
    }
}

fn interval_ms(d: Option<Duration>) -> u64 {
    d.map_or(5000, ms)
}

/// Runs a workload subcommand.
pub fn run(base: &str, output: Output, cmd: WorkloadCommand) -> i32 {
    match cmd {
        WorkloadCommand::Create {
            name,
            host,
            shadow,
            shadows,
            interval,
            probe_tcp,
            env,
            secret_env,
            workdir,
            data_dirs,
            restart_attempts,
            restart_delay,
            restart_window,
            service,
            spec,
            command,
        } => {
            let req = match spec {
                Some(path) => {
                    let f = match read_spec_file(&path) {
                        Ok(f) => f,
                        Err(code) => return code,
                    };
                    let probe = f.probe.clone().and_then(|p| match (p.tcp, p.command) {
                        (Some(port), _) => Some(Probe::Tcp { port }),
                        (None, Some(argv)) => Some(Probe::Command { argv }),
                        _ => None,
                    });
                    let Some(host) = host.or(f.host.clone()) else {
                        eprintln!(
                            "{}: host: no host given (in the file or with --host)",
                            path.display()
                        );
                        return exit::USAGE;
                    };
                    let mut spec = WorkloadSpec {
                        name: f.name.clone(),
                        command: f.command.clone(),
                        env: f.env.clone().into_iter().collect(),
                        workdir: f.workdir.clone(),
                        interval_ms: interval_ms(interval.or(f.interval)),
                        probe,
                        data_dirs: if data_dirs.is_empty() {
                            f.data_dirs.clone()
                        } else {
                            data_dirs
                        },
                        restart: restart_policy(
                            restart_attempts,
                            restart_delay,
                            restart_window,
                            &f.restart,
                        ),
                        ..WorkloadSpec::default()
                    };
                    service.apply(Some(&f), &mut spec);
                    spec.secret_env.clone_from(&f.secret_env);
                    add_secrets(&mut spec, secret_env);
                    CreateRequest {
                        spec,
                        host,
                        shadow: shadow.or(f.shadow.clone()),
                        shadows: shadows.or(f.shadows),
                    }
                }
                None => {
                    let (Some(name), Some(host)) = (name, host) else {
                        eprintln!("understudy workload create: NAME and --host are required (or --spec FILE)");
                        return exit::USAGE;
                    };
                    if command.is_empty() {
                        eprintln!("understudy workload create: give the command after `--`");
                        return exit::USAGE;
                    }
                    let mut spec = WorkloadSpec {
                        name,
                        command,
                        env,
                        workdir,
                        interval_ms: interval_ms(interval),
                        probe: probe_tcp.map(|port| Probe::Tcp { port }),
                        data_dirs,
                        restart: restart_policy(
                            restart_attempts,
                            restart_delay,
                            restart_window,
                            &RestartFile::default(),
                        ),
                        ..WorkloadSpec::default()
                    };
                    service.apply(None, &mut spec);
                    add_secrets(&mut spec, secret_env);
                    CreateRequest {
                        spec,
                        host,
                        shadow,
                        shadows,
                    }
                }
            };
            match super::api::post::<_, WorkloadRecord>(base, "/v1/workloads", &req) {
                Ok(rec) if rec.state == WorkloadState::Starting => {
                    super::unsettled::create_outcome(
                        base,
                        &rec.spec.name,
                        output,
                        &format!(
                            "{} did not answer the order to start {}: it may be running there",
                            rec.primary, rec.spec.name
                        ),
                        print_workload,
                    )
                }
                Ok(rec) if output == Output::Json => print_json(&rec),
                Ok(rec) => {
                    let protection = rec.unprotected.clone();
                    let w = WorkloadView {
                        record: rec,
                        protection,
                    };
                    print_workload(&w);
                    match w.record.state {
                        WorkloadState::Failed(_) => exit::SOFTWARE,
                        _ => 0,
                    }
                }
                Err(super::api::ApiFailure::Unsettled(why)) => super::unsettled::create_outcome(
                    base,
                    &req.spec.name,
                    output,
                    &why,
                    print_workload,
                ),
                Err(f) => f.report(),
            }
        }
        WorkloadCommand::List => {
            let list: WorkloadList = match get(base, "/v1/workloads") {
                Ok(l) => l,
                Err(code) => return code,
            };
            if output == Output::Json {
                return print_json(&list);
            }
            if list.workloads.is_empty() {
                outln!("no workloads");
                return 0;
            }
            let now = wall_ms();
            let mut table = Table::new();
            table.load_preset(NOTHING).set_header([
                "NAME",
                "STATE",
                "PRIMARY",
                "SHADOW",
                "GEN",
                "RECOVERY POINT",
                "SIZE",
            ]);
            for w in &list.workloads {
                let r = &w.record;
                table.add_row(vec![
                    r.spec.name.clone(),
                    view::short_state(w),
                    r.primary.clone(),
                    r.shadow.clone().unwrap_or_else(|| "-".into()),
                    r.generation.to_string(),
                    view::recovery_point_short(r, now),
                    r.last_epoch
                        .as_ref()
                        .map_or_else(|| "-".into(), |e| mib(e.bytes_total)),
                ]);
            }
            outln!("{table}");
            0
        }
        WorkloadCommand::Delete { name, force } => {
            if let Err(code) = check_name(&name) {
                return code;
            }
            let path = if force {
                format!("/v1/workloads/{name}?force=true")
            } else {
                format!("/v1/workloads/{name}")
            };
            let deleted = match super::api::delete::<WorkloadRecord>(base, &path) {
                Err(super::api::ApiFailure::Unsettled(why)) => {
                    super::unsettled::delete_again(base, &path, &name, &why)
                }
                r => r.map(Some),
            };
            match deleted {
                Ok(None) => {
                    eprintln!("{name} is gone: the first request deleted it");
                    0
                }
                Ok(Some(rec)) if output == Output::Json => print_json(&rec),
                Ok(Some(rec)) => {
                    outln!(
                        "deleted {name}: stopped on {}{}",
                        rec.primary,
                        rec.shadow
                            .map(|s| format!(", epochs dropped on {s}"))
                            .unwrap_or_default()
                    );
                    0
                }
                Err(f) => f.report(),
            }
        }
        WorkloadCommand::Show { name } => {
            if let Err(code) = check_name(&name) {
                return code;
            }
            let w: WorkloadView = match get(base, &format!("/v1/workloads/{name}")) {
                Ok(r) => r,
                Err(code) => return code,
            };
            if output == Output::Json {
                return print_json(&w);
            }
            print_workload(&w);
            if let Ok(hosts) = get::<crate::server::http::HostList>(base, "/v1/hosts") {
                print_probe(&w.record, &hosts);
            }
            0
        }
    }
}

/// The probe line of `workload show`, from the primary's newest heartbeat.
fn print_probe(w: &WorkloadRecord, hosts: &crate::server::http::HostList) {
    let Some(probe) = &w.spec.probe else {
        return;
    };
    let report = hosts
        .hosts
        .iter()
        .find(|h| h.name == w.primary)
        .and_then(|h| h.telemetry.as_ref())
        .and_then(|t| t.probes.iter().find(|p| p.workload == w.spec.name));
    let Some(p) = report else {
        outln!(
            "probe:        {}, no result from {} yet",
            view::probe_text(probe),
            w.primary
        );
        return;
    };
    let latency = p
        .latency_ms
        .map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
    outln!(
        "probe:        {} on {}: {} of {} failed ({} in a row), latency {latency} (anomaly {:.2}, {} latency alarms)",
        p.probe, w.primary, p.failures, p.runs, p.consecutive_failures, p.latency_anomaly, p.latency_alarms
    );
    if let Some(e) = &p.last_error {
        outln!("              last failure: {e}");
    }
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// Refuses a name the coordinator could never have given a workload, before asking it.
fn check_name(name: &str) -> Result<(), i32> {
    understudy_common::workload::validate_workload_name(name).map_err(|e| {
        eprintln!("understudy: {e}");
        exit::USAGE
    })
}

fn print_workload(w: &WorkloadView) {
    let r = &w.record;
    let now = wall_ms();
    outln!("workload:       {}", r.spec.name);
    outln!("state:          {}", view::long_state(r));
    outln!("protection:     {}", view::protection_text(w));
    outln!("command:        {}", view::quoted(&r.spec.command));
    if let Some(u) = &r.spec.user {
        outln!(
            "user:           {u}{}{}",
            r.spec
                .group
                .as_ref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default(),
            r.spec
                .groups
                .as_ref()
                .map(|g| format!(", groups {}", g.join(",")))
                .unwrap_or_default()
        );
    }
    outln!(
        "stop:           {}, then SIGKILL after {}",
        r.spec.stop_signal,
        humantime::format_duration(Duration::from_millis(r.spec.stop_timeout_ms))
    );
    if r.spec.failover == FailoverMode::Manual {
        outln!("failover:       manual (waits for its host; no lease)");
    }
    if r.spec.priority != Priority::Normal {
        outln!(
            "priority:       {} (weight {})",
            r.spec.priority.as_str(),
            r.spec.priority.weight()
        );
    }
    outln!("primary:        {}", r.primary);
    let shadows = r.shadows();
    if shadows.len() > 1 || r.more_shadows.wanted() > 1 {
        let each: Vec<String> = shadows
            .iter()
            .map(|h| match r.epoch_on(h) {
                Some(e) => format!("{h} (epoch {e})"),
                None => format!("{h} (no epoch yet)"),
            })
            .collect();
        outln!(
            "shadows:        {} of {} wanted: {}",
            shadows.len(),
            r.more_shadows.wanted(),
            each.join(", ")
        );
    } else {
        outln!("shadow:         {}", r.shadow.as_deref().unwrap_or("-"));
    }
    outln!("generation:     {}", r.generation);
    outln!("interval:       {}", view::interval_text(r));
    outln!("recovery point: {}", view::recovery_point(r, now));
    if let Some(e) = &r.last_epoch {
        outln!(
            "epoch size:     {} total, {} changed, {} sent",
            mib(e.bytes_total),
            mib(e.bytes_changed),
            mib(e.bytes_sent)
        );
        outln!(
            "epoch timing:   frozen {} ms ({} ms memory, {} ms disk), transfer {} ms, agent CPU {} ms",
            e.frozen_ms,
            e.frozen_ms.saturating_sub(e.frozen_disk_ms),
            e.frozen_disk_ms,
            e.transfer_ms,
            e.cpu_ms
        );
        outln!(
            "epoch dump:     {}",
            if e.incremental {
                "the pages written since the epoch before (memory tracking)"
            } else {
                "whole"
            }
        );
        if !r.spec.data_dirs.is_empty() {
            outln!(
                "data dirs:      {} ({} in the last epoch, {} changed)",
                r.spec
                    .data_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                mib(e.data_bytes),
                mib(e.data_changed)
            );
        }
    }
    outln!(
        "epochs:         {} committed since the workload was created (numbers carry on across hosts)",
        r.epochs
    );
    let rp = r.spec.restart;
    if rp.attempts > 0 || r.restarts > 0 {
        outln!(
            "restarts:       {} (policy: up to {} per {}, {} apart)",
            r.restarts,
            rp.attempts,
            humantime::format_duration(Duration::from_millis(rp.window_ms)),
            humantime::format_duration(Duration::from_millis(rp.delay_ms))
        );
    }
    if let Some((status, at)) = &r.last_exit {
        let age = Duration::from_millis(now.saturating_sub(*at));
        outln!("last exit:      {status}, {} ago", short_duration(age));
    }
    if let Some(m) = r
        .last_migration
        .as_ref()
        .filter(|m| m.outcome == "failed over")
    {
        outln!(
            "last move:      failed over from {} to {} {} ago (generation {}), recovery point epoch {}{}",
            m.from,
            m.to,
            short_duration(Duration::from_millis(now.saturating_sub(m.finished_unix_ms))),
            m.generation,
            m.recovery_epoch.map_or("?".into(), |e| e.to_string()),
            m.recovery_age_ms
                .map(|a| format!(" ({:.1} s old)", a as f64 / 1000.0))
                .unwrap_or_default()
        );
        if let Some(why) = &m.error {
            outln!("                (not the newest: {why})");
        }
    } else if let Some(m) = &r.last_migration {
        outln!(
            "last move:      {} -> {} {} (generation {}){}{}",
            m.from,
            m.to,
            m.outcome,
            m.generation,
            m.freeze_ms
                .map(|f| format!(", frozen {f} ms"))
                .unwrap_or_default(),
            m.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    if let Some((why, at)) = &r.last_correction {
        let age = Duration::from_millis(now.saturating_sub(*at));
        outln!("corrected:      {} ago: {why}", short_duration(age));
    }
}

/// `understudy migrate NAME [--to HOST] [--dry-run] [--post-copy]`
pub fn migrate(
    base: &str,
    output: Output,
    name: &str,
    to: Option<String>,
    (dry_run, post_copy): (bool, bool),
) -> i32 {
    if let Err(code) = check_name(name) {
        return code;
    }
    // The generation it runs under now: a migration this request starts runs under a
    // higher one, which tells its outcome apart if the answer is lost.
    let before = if dry_run {
        0
    } else {
        match get::<WorkloadView>(base, &format!("/v1/workloads/{name}")) {
            Ok(v) => v.record.generation,
            Err(code) => return code,
        }
    };
    let req = MigrateRequest {
        to,
        dry_run,
        post_copy,
    };
    let started: MigrationStatus =
        match super::api::post(base, &format!("/v1/workloads/{name}/migrate"), &req) {
            Ok(s) => s,
            Err(super::api::ApiFailure::Unsettled(why)) => {
                return super::unsettled::move_outcome(base, name, before, output, &why)
            }
            Err(f) => return f.report(),
        };
    if dry_run {
        if output == Output::Json {
            return print_json(&started);
        }
        outln!("dry run: {}", started.plan);
        return 0;
    }
    if output == Output::Table {
        outln!("{}", started.plan);
    }
    let tty = std::io::stdout().is_terminal();
    let mut last_line = String::new();
    let mut was_waiting = false;
    let status = loop {
        std::thread::sleep(Duration::from_millis(100));
        let path = format!("/v1/workloads/{name}/migration");
        let (url, r) = super::api::send(base, "GET", &path, None, super::api::TIMEOUT);
        let s: MigrationStatus = match super::api::answer(base, &url, r) {
            Ok(s) => s,
            // The coordinator that ran it is gone, or its successor (which did not start
            // it) has no progress to show: the record says how it ended.
            Err(
                f @ (super::api::ApiFailure::Unreachable(_)
                | super::api::ApiFailure::Unsettled(_)
                | super::api::ApiFailure::Refused(404 | 503, _)),
            ) => {
                if tty && output == Output::Table {
                    outln!();
                }
                return super::unsettled::move_outcome(
                    base,
                    name,
                    before,
                    output,
                    &format!("lost track of the migration of {name}: {}", f.message()),
                );
            }
            Err(f) => return f.report(),
        };
        if s.outcome.is_some() {
            break s;
        }
        if output == Output::Table {
            let line = progress_line(&s);
            if tty {
                out!("\r\x1b[2K{line}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            } else if phase_of(&line) != phase_of(&last_line) || s.waiting.is_some() != was_waiting
            {
                // Without a terminal: a line when the phase changes, or a wait begins or ends.
                outln!("{line}");
            }
            last_line = line;
            was_waiting = s.waiting.is_some();
        }
    };
    if tty && output == Output::Table {
        outln!();
    }
    if output == Output::Json {
        print_json(&status);
    } else {
        match status.outcome.as_deref() {
            Some("succeeded") => outln!(
                "migrated {name} from {} to {} in {:.2} s; frozen for {} ms",
                status.from,
                status.to,
                status.elapsed_ms as f64 / 1000.0,
                status.freeze_ms.unwrap_or(0)
            ),
            Some(other) => eprintln!(
                "migration of {name} {other}: {}",
                status.error.as_deref().unwrap_or("no reason given")
            ),
            None => {}
        }
    }
    match status.outcome.as_deref() {
        Some("succeeded") => 0,
        Some("rolled back") => exit::TEMP_FAIL,
        _ => exit::SOFTWARE,
    }
}

fn phase_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

fn progress_line(s: &MigrationStatus) -> String {
    let phase = match s.phase {
        Phase::Sync => "sync (last epoch while running)",
        Phase::Freeze => "freeze (final epoch, workload stopped)",
        Phase::Restore => "restore",
        Phase::Confirm => "confirm (the restore's answer was lost; asking the target)",
        Phase::Release => "release",
        Phase::Rollback => "rollback",
        Phase::Finished => "finished",
    };
    let mut line = format!(
        "phase {phase}  elapsed {:.1} s",
        s.elapsed_ms as f64 / 1000.0
    );
    if s.bytes_total > 0 {
        line.push_str(&format!(
            "  sent {} / {}",
            mib(s.bytes_sent),
            mib(s.bytes_total)
        ));
    }
    if let Some(eta) = s.eta_ms {
        line.push_str(&format!("  ~{:.1} s left", eta as f64 / 1000.0));
    }
    if let Some(w) = &s.waiting {
        line.push_str(&format!("  ({w})"));
    }
    line
}
