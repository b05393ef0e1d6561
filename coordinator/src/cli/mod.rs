//! The `understudy` command line: the coordinator server and the operator's commands.
//!
//! Every command returns a process exit code; usage errors exit 64, config errors 78.

mod api;
mod backup;
mod ca;
mod cluster;
mod drain_watch;
mod identity;
mod ops;
mod store;
#[cfg(test)]
mod test_http;
mod tokens;
mod unsettled;
mod workload;
mod workload_view;

use std::path::PathBuf;
use understudy_common::outln;

use clap::{Parser, Subcommand, ValueEnum};
use understudy_common::exit;

use crate::config::CoordinatorConfig;

/// understudy: keep a live understudy of every important workload.
#[derive(Debug, Parser)]
#[command(name = "understudy", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    identity: identity::IdentityArgs,
}

/// How query commands print their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// Base URL of the coordinator's HTTP API; for a group, several separated by commas
    /// (each is tried in turn, and a member's redirect to its leader is followed).
    #[arg(
        long,
        env = "UNDERSTUDY_COORDINATOR",
        default_value = "https://127.0.0.1:7441",
        global = true
    )]
    coordinator: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per invocation; boxing buys nothing
enum Command {
    /// Run the coordinator.
    Serve {
        /// Path to coordinator.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a witness: a member of a coordinator group that votes, never leads and serves
    /// no API (docs/ha.md).
    Witness {
        /// Path to witness.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The coordinator group: its members, leader and membership changes.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Write every record of the coordinator (a group's leader) to a backup file.
    Backup {
        /// Where to write it (replaced once the new one is complete and synced).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put a backup's records into a new, empty coordinator group (docs/ha.md).
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check a coordinator config file and print every problem with its key.
    Validate {
        /// Path to coordinator.toml.
        config: PathBuf,
    },
    /// Manage the cluster certificate authority.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Join tokens for new hosts (`understudy-agent join`); admin.
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Refuse every certificate of NAME issued until now (admin): a person's or a tool's on
    /// the operator API, or a host's (as `host revoke`). One issued afterwards is accepted.
    Revoke {
        /// The name in the certificates (`understudy ca issue --name`).
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Inspect or salvage the coordinator's database (with the coordinator stopped).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// List hosts known to the coordinator.
    Hosts {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one host: its telemetry and health assessment.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Show the coordinator's health and a summary of the cluster.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create, list and inspect protected workloads.
    Workload {
        #[command(subcommand)]
        command: workload::WorkloadCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Schedule, list and remove maintenance windows.
    Maintenance {
        #[command(subcommand)]
        command: ops::MaintenanceCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// What the decision engine would do now, and why (a dry run).
    Plan {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The event log: decisions, triggers, moves and operator actions.
    Events {
        /// Keep printing new events as they come.
        #[arg(long, short)]
        follow: bool,
        /// Only about this host.
        #[arg(long)]
        host: Option<String>,
        /// Only about this workload.
        #[arg(long)]
        workload: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Move a workload to its shadow (or --to HOST) with a planned switchover.
    Migrate {
        /// Workload name.
        name: String,
        /// Target host (default: the current shadow).
        #[arg(long)]
        to: Option<String>,
        /// Only say what would happen.
        #[arg(long)]
        dry_run: bool,
        /// Move by post-copy: the workload runs on the target at once and its memory follows
        /// (the freeze does not grow with its size; the old primary must stay up until the
        /// memory has arrived, else the workload comes back from its last checkpoint).
        #[arg(long)]
        post_copy: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `understudy host …`
#[derive(Debug, Subcommand)]
enum HostCommand {
    /// One host's telemetry, health score, anomaly score and top contributing metrics.
    Show {
        /// Host name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Place nothing new on the host.
    Cordon {
        /// Host name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Allow placing on the host again.
    Uncordon {
        /// Host name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Refuse the host's certificates issued until now and close its connection (admin).
    /// A certificate issued for it afterwards is accepted.
    Revoke {
        /// Host name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cordon the host and move every workload and shadow off it, showing progress.
    Drain {
        /// Host name.
        name: String,
        /// Give up on what has not moved after this long (e.g. 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        deadline: Option<std::time::Duration>,
        /// Workloads moved at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// Start the drain and return at once.
        #[arg(long, conflicts_with_all = ["monitor", "cancel"])]
        detach: bool,
        /// Follow a drain already running.
        #[arg(long, conflicts_with = "cancel")]
        monitor: bool,
        /// Stop the drain (what moved stays moved; the host stays cordoned).
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Parses the command line and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => exit::USAGE,
            };
            let _ = e.print();
            return code;
        }
    };
    identity::set(cli.identity);
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Validate { config } => validate(&config),
        Command::Witness { config } => cluster::witness(&config),
        Command::Cluster { command, api } => cluster::run(command, &api.coordinator, api.output),
        Command::Ca { command } => ca::run(command),
        Command::Store { command } => store::run(command),
        Command::Token { command, api } => tokens::run(&api.coordinator, api.output, command),
        Command::Revoke { name, api } => ops::revoke(&api.coordinator, api.output, &name, false),
        Command::Backup { out, api } => backup::take(&api.coordinator, &out),
        Command::Restore { from, api } => backup::restore(&api.coordinator, &from),
        Command::Hosts { api } => api::hosts(&api.coordinator, api.output),
        Command::Host { command } => host(command),
        Command::Maintenance { command, api } => {
            ops::maintenance(&api.coordinator, api.output, command)
        }
        Command::Plan { api } => ops::plan(&api.coordinator, api.output),
        Command::Events {
            follow,
            host,
            workload,
            api,
        } => ops::events(
            &api.coordinator,
            api.output,
            follow,
            host.as_deref(),
            workload.as_deref(),
        ),
        Command::Status { api } => api::status(&api.coordinator, api.output),
        Command::Workload { command, api } => workload::run(&api.coordinator, api.output, command),
        Command::Migrate {
            name,
            to,
            dry_run,
            post_copy,
            api,
        } => workload::migrate(
            &api.coordinator,
            api.output,
            &name,
            to,
            (dry_run, post_copy),
        ),
    }
}

fn host(command: HostCommand) -> i32 {
    match command {
        HostCommand::Show { name, api } => api::host_show(&api.coordinator, api.output, &name),
        HostCommand::Cordon { name, api } => ops::cordon(&api.coordinator, api.output, &name, true),
        HostCommand::Revoke { name, api } => ops::revoke(&api.coordinator, api.output, &name, true),
        HostCommand::Uncordon { name, api } => {
            ops::cordon(&api.coordinator, api.output, &name, false)
        }
        HostCommand::Drain {
            name,
            deadline,
            parallel,
            detach,
            monitor,
            cancel,
            api,
        } => ops::drain(
            &api.coordinator,
            api.output,
            &name,
            crate::server::http_admin::DrainRequest {
                deadline_ms: deadline.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                parallel: Some(usize::from(parallel)),
                cancel,
            },
            (detach, monitor),
        ),
    }
}

fn load_config(path: &std::path::Path) -> Result<CoordinatorConfig, i32> {
    understudy_common::config::load(path).map_err(|e| {
        eprintln!("{e}");
        exit::CONFIG
    })
}

fn validate(path: &std::path::Path) -> i32 {
    match load_config(path) {
        Ok(cfg) => {
            understudy_common::config::print_notes(path, &cfg);
            outln!("{}: ok", path.display());
            0
        }
        Err(code) => code,
    }
}

fn serve(path: &std::path::Path) -> i32 {
    understudy_common::shutdown::init_logging();
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Group members wait for replicated writes on a worker (`block_in_place`); more
    // workers than cores keep the others serving meanwhile.
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get().max(4));
    run_server("serve", workers, crate::server::serve::serve(config))
}

/// Runs a long-lived server command on a runtime of `workers` threads (1: the calling
/// thread alone) and maps its outcome to an exit code.
pub(crate) fn run_server<E: understudy_common::exit::Coded>(
    command: &str,
    workers: usize,
    server: impl std::future::Future<Output = Result<(), E>>,
) -> i32 {
    let built = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("understudy {command}: {e}");
            e.exit_code()
        }
    }
}
