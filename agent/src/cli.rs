//! The `understudy-agent` command line. Usage errors exit 64, config errors 78.

use std::path::{Path, PathBuf};
use understudy_common::outln;

use clap::{Parser, Subcommand};
use understudy_common::exit;

use crate::config::AgentConfig;

/// understudy-agent: watches this host and keeps understudies of its workloads.
#[derive(Debug, Parser)]
#[command(name = "understudy-agent", version, about)]
pub struct Cli {
    /// Path to agent.toml (to run the agent).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Process 1 of a workload's PID namespace (started by the agent, not by hand).
    #[command(hide = true)]
    Supervise(crate::supervisor::Launch),
    /// Guards a post-copy restore against the agent's end (started by the agent).
    #[command(hide = true)]
    PostcopyGuard(crate::postcopy::guard::GuardArgs),
    /// Enroll this host: make its key, have the coordinator sign its certificate with a
    /// join token (`understudy token create`), and put both where agent.toml says.
    Join(crate::join::JoinArgs),
    /// Check an agent config file and print every problem with its key.
    Validate {
        /// Path to agent.toml.
        config: PathBuf,
    },
    /// Sample this host's metrics (the feature schema in models/schema.toml) twice, one
    /// second apart, and print each with its unit, or why it is unavailable here.
    Metrics,
    /// Stream recorded telemetry through the live detectors. smd/asd: the host anomaly
    /// detector warms up on --train (learning its baseline and calibrating its own alarm
    /// threshold from its scores), then scores --test row by row into `row,score,alarm`
    /// (with --keep-learning it goes on learning and calibrating from the rows it scores, as
    /// the live agent does). nab: the streaming univariate detector scores --input into
    /// `timestamp,value,anomaly_score`, told the file's range and probationary period as NAB
    /// tells every detector.
    Replay {
        /// Input layout: smd (rows of comma-separated floats, 1-minute steps), asd (the same,
        /// 5-minute steps), nab (`timestamp,value` CSV; timestamps `YYYY-MM-DD HH:MM:SS` in
        /// UTC or unix seconds). `.zst` accepted.
        #[arg(long, value_enum)]
        format: ReplayFormat,
        /// smd/asd: rows to learn the host's baseline from.
        #[arg(long)]
        train: Option<PathBuf>,
        /// smd/asd: rows to score.
        #[arg(long)]
        test: Option<PathBuf>,
        /// nab: the series to score.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
        /// Directory of the shipped models (default: installed, else the source tree's).
        #[arg(long)]
        models: Option<PathBuf>,
        /// smd/asd: go on learning from --test rows that do not alarm, as live.
        #[arg(long)]
        keep_learning: bool,
        /// smd/asd: false alarms a day the host's threshold is calibrated for (default: the
        /// model manifest's `false_alarms_per_day`).
        #[arg(long)]
        false_alarms_per_day: Option<f64>,
        /// nab: judge each value against the range of the values before it only, as a live
        /// probe must (default: the file's minimum and maximum, which NAB gives every
        /// detector, and NAB's rest after an alarm).
        #[arg(long)]
        streaming: bool,
        /// nab: values reported as 0 after an alarm (default: a fifth of NAB's probationary
        /// period; --streaming: the manifest's `rest`).
        #[arg(long)]
        rest: Option<usize>,
    },
}

/// Layouts `replay` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReplayFormat {
    /// Server Machine Dataset (38 metrics, the host model).
    Smd,
    /// Application Server Dataset (19 metrics, its own model: anomaly-asd).
    Asd,
    /// Numenta Anomaly Benchmark (one series, the univariate detector).
    Nab,
}

/// Parses the command line and runs; returns the exit code.
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
    match (cli.command, cli.config) {
        (Some(Command::Supervise(launch)), _) => crate::supervisor::run(launch),
        (Some(Command::PostcopyGuard(args)), _) => crate::postcopy::guard::run(&args),
        (Some(Command::Join(args)), _) => crate::join::run(&args),
        (Some(Command::Validate { config }), _) => match load(&config) {
            Ok(_) => {
                outln!("{}: ok", config.display());
                0
            }
            Err(code) => code,
        },
        (Some(Command::Metrics), _) => print_metrics(),
        (
            Some(Command::Replay {
                format,
                train,
                test,
                input,
                out,
                models,
                keep_learning,
                false_alarms_per_day,
                streaming,
                rest,
            }),
            _,
        ) => {
            if let Some(f) = false_alarms_per_day.filter(|f| !(f.is_finite() && *f > 0.0)) {
                eprintln!(
                    "understudy-agent replay: --false-alarms-per-day {f}: must be a number above 0"
                );
                return exit::USAGE;
            }
            let dir = models.unwrap_or_else(crate::predict::manifest::default_dir);
            match (format, train, test, input) {
                (ReplayFormat::Nab, None, None, Some(input)) => {
                    let how = crate::predict::replay::NabOptions { streaming, rest };
                    replay_nab(&input, &out, &dir, how)
                }
                (ReplayFormat::Smd | ReplayFormat::Asd, ..) if streaming || rest.is_some() => {
                    eprintln!(
                        "understudy-agent replay: --streaming and --rest are for --format nab only"
                    );
                    exit::USAGE
                }
                (ReplayFormat::Smd | ReplayFormat::Asd, Some(train), Some(test), None) => {
                    let (model, rows_per_day) = match format {
                        ReplayFormat::Asd => ("anomaly-asd", 288.0),
                        _ => ("anomaly", 1440.0),
                    };
                    let how = (rows_per_day, false_alarms_per_day);
                    replay(&train, &test, &out, &dir, model, how, keep_learning)
                }
                (ReplayFormat::Nab, ..) => {
                    eprintln!("understudy-agent replay: --format nab needs --input FILE (and no --train/--test)");
                    exit::USAGE
                }
                _ => {
                    eprintln!("understudy-agent replay: --format smd/asd need --train FILE and --test FILE (and no --input)");
                    exit::USAGE
                }
            }
        }
        (None, Some(config)) => run(&config),
        (None, None) => {
            eprintln!("understudy-agent: --config FILE is required to run the agent (see --help)");
            exit::USAGE
        }
    }
}

fn replay_nab(
    input: &Path,
    out: &Path,
    dir: &Path,
    how: crate::predict::replay::NabOptions,
) -> i32 {
    let model = match crate::predict::univariate::UnivariateModel::load(dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("understudy-agent replay: {e}");
            return exit::CONFIG;
        }
    };
    match crate::predict::replay::nab(&model, input, out, how) {
        Ok(n) => {
            eprintln!("{n} rows scored into {}", out.display());
            0
        }
        Err(e) => {
            eprintln!("understudy-agent replay: {e}");
            exit::DATA_ERR
        }
    }
}

fn replay(
    train: &Path,
    test: &Path,
    out: &Path,
    dir: &Path,
    model: &str,
    calibration: (f64, Option<f64>),
    keep_learning: bool,
) -> i32 {
    let mut det = match crate::predict::load_anomaly_named(dir, model) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("understudy-agent replay: {e}");
            return exit::CONFIG;
        }
    };
    match crate::predict::replay::smd(&mut det, train, test, out, calibration, keep_learning) {
        Ok(n) => {
            eprintln!("{n} rows scored into {}", out.display());
            0
        }
        Err(e) => {
            eprintln!("understudy-agent replay: {e}");
            exit::DATA_ERR
        }
    }
}

fn print_metrics() -> i32 {
    let schema = match crate::hostmetrics::schema::shipped() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return exit::SOFTWARE;
        }
    };
    let mut sampler = crate::hostmetrics::Sampler::new(schema, None);
    sampler.sample();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let sample = sampler.sample();
    for (m, r) in sampler.schema().metric.iter().zip(&sample.readings) {
        match r {
            Ok(v) => outln!("{:<18} {:>16.3} {}", m.name, v, m.unit),
            Err(why) => outln!("{:<18} {:>16} {why}", m.name, "unavailable:"),
        }
    }
    0
}

fn load(path: &Path) -> Result<AgentConfig, i32> {
    understudy_common::config::load(path).map_err(|e| {
        eprintln!("{e}");
        exit::CONFIG
    })
}

/// Marks every descriptor above stderr that this process inherited close-on-exec, so
/// none leaks into the workloads it starts (CRIU cannot dump a descriptor opened in
/// another mount namespace).
fn close_inherited_fds() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

fn run(path: &Path) -> i32 {
    close_inherited_fds();
    understudy_common::shutdown::init_logging();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    match runtime.block_on(crate::run::run(config)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("understudy-agent: {e}");
            understudy_common::exit::Coded::exit_code(&e)
        }
    }
}
