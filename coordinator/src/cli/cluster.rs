//! `understudy cluster status|init|join|remove` and `understudy witness`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use comfy_table::{presets::NOTHING, Table};
use understudy_common::{exit, outln};

use super::api::{get, post, print_json};
use super::Output;
use crate::server::group::{
    ClusterStatus, InitRequest, JoinRequest, MembershipAnswer, RemoveRequest,
};

/// `understudy cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, the leader, the term, log positions and each member's lag.
    Status,
    /// Forms the group: the member asked (`--coordinator`) and the members at `--peer`
    /// (their peer addresses) become its voters. Run once, on one member.
    Init {
        /// Peer (Raft) address of another member; repeat for each.
        #[arg(long = "peer", required = true)]
        peers: Vec<SocketAddr>,
    },
    /// Adds the member at `--peer` as a learner, then makes it a voter once it caught up.
    Join {
        /// Its peer (Raft) address.
        #[arg(long)]
        peer: SocketAddr,
    },
    /// Removes member `--id` from the group.
    Remove {
        /// Its id.
        #[arg(long)]
        id: u64,
    },
}

/// Runs a cluster command against `base`.
pub fn run(command: ClusterCommand, base: &str, output: Output) -> i32 {
    match command {
        ClusterCommand::Status => status(base, output),
        ClusterCommand::Init { peers } => {
            done(post(base, "/v1/cluster/init", &InitRequest { peers }))
        }
        ClusterCommand::Join { peer } => {
            done(post(base, "/v1/cluster/join", &JoinRequest { peer }))
        }
        ClusterCommand::Remove { id } => {
            done(post(base, "/v1/cluster/remove", &RemoveRequest { id }))
        }
    }
}

fn done(r: Result<MembershipAnswer, super::api::ApiFailure>) -> i32 {
    match r {
        Ok(a) => {
            outln!("{}", a.done);
            0
        }
        Err(f) => f.report(),
    }
}

fn status(base: &str, output: Output) -> i32 {
    // Each member listed is asked in turn until one knows a leader (a member cut off from
    // the others knows none).
    let mut first = None;
    for b in base.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let (_, r) = super::api::send(b, "GET", "/v1/cluster", None, Duration::from_secs(5));
        if let Some(s) = r.ok().and_then(|r| r.into_json::<ClusterStatus>().ok()) {
            let has_leader = s.leader.is_some();
            first.get_or_insert(s.clone());
            if has_leader {
                first = Some(s);
                break;
            }
        }
    }
    let mut s = match first {
        Some(s) => s,
        None => match get::<ClusterStatus>(base, "/v1/cluster") {
            Ok(s) => s,
            Err(code) => return code,
        },
    };
    // Lag is known to the leader only: ask it when another member answered.
    if s.leader.is_some() && s.leader != Some(s.answered_by) {
        let leader_api = s
            .members
            .iter()
            .find(|m| Some(m.id) == s.leader)
            .and_then(|m| m.http.clone());
        if let Some(http) = leader_api {
            if let Ok(from_leader) = get::<ClusterStatus>(&format!("https://{http}"), "/v1/cluster")
            {
                s = from_leader;
            }
        }
    }
    if output == Output::Json {
        return print_json(&s);
    }
    outln!(
        "leader: {}   term: {}   last log index: {}   (answered by member {}, {})",
        s.leader.map_or("none".into(), |l| l.to_string()),
        s.term,
        s.last_log_index.map_or("-".into(), |i| i.to_string()),
        s.answered_by,
        s.state.to_lowercase()
    );
    if s.members.is_empty() {
        outln!("no members: the group is not initialised (understudy cluster init)");
        return 0;
    }
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(["ID", "KIND", "ROLE", "RAFT", "API", "LAG"]);
    for m in &s.members {
        table.add_row([
            m.id.to_string(),
            m.kind.clone(),
            m.role.clone(),
            m.raft.clone(),
            m.http.clone().unwrap_or_else(|| "-".into()),
            m.lag.map_or("-".into(), |l| l.to_string()),
        ]);
    }
    outln!("{table}");
    0
}

/// `understudy witness --config FILE`
pub fn witness(path: &Path) -> i32 {
    understudy_common::shutdown::init_logging();
    let config: crate::config::WitnessConfig = match understudy_common::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    // Raft runs on the member's own threads; this one only waits for the signal.
    super::run_server("witness", 1, crate::server::serve::witness(config))
}
