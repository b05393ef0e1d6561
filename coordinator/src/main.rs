//! `understudy`: the coordinator server and operator CLI.

fn main() {
    std::process::exit(understudy_coordinator::cli::main());
}
