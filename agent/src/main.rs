//! `understudy-agent`: the per-host agent.

fn main() {
    std::process::exit(understudy_agent::cli::main());
}
