//! `understudy token create|list`: join tokens for `understudy-agent join` (admin).

use comfy_table::{presets::NOTHING, Table};
use understudy_common::outln;

use super::api::{get, post, print_json};
use super::Output;
use crate::server::join::{NewToken, TokenRequest};
use crate::tokens::TokenView;

/// `understudy token …`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a single-use join token (shown once) for `understudy-agent join`.
    Create {
        /// How long it may be used (e.g. 1h; at most 7days).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The role of the certificate it buys (only agent).
        #[arg(long, default_value = "agent")]
        role: String,
        /// The only host name it may be used for; needed to re-enroll a host the
        /// coordinator knows.
        #[arg(long)]
        host: Option<String>,
    },
    /// Tokens made and not yet forgotten (a day after use or expiry), without secrets.
    List,
    /// Delete a token so that it can no longer be used.
    Delete {
        /// The token's id (the part before the dot).
        id: String,
    },
}

use super::ops::time_text;

/// Runs one `token` command.
pub fn run(base: &str, output: Output, command: TokenCommand) -> i32 {
    match command {
        TokenCommand::Create { ttl, role, host } => {
            let req = TokenRequest {
                ttl,
                role: Some(role),
                host,
            };
            match post::<_, NewToken>(base, "/v1/tokens", &req) {
                Ok(t) if output == Output::Json => print_json(&t),
                Ok(t) => {
                    outln!("{}", t.token);
                    outln!(
                        "# single use, until {}; on the new host: understudy-agent join --coordinator ADDRESS:PORT --token {}",
                        time_text(t.record.expires_unix_ms),
                        t.token
                    );
                    0
                }
                Err(f) => f.report(),
            }
        }
        TokenCommand::Delete { id } => {
            match super::api::delete_empty(base, &format!("/v1/tokens/{id}")) {
                Ok(()) => {
                    outln!("join token {id} deleted");
                    0
                }
                Err(f) => f.report(),
            }
        }
        TokenCommand::List => match get::<Vec<TokenView>>(base, "/v1/tokens") {
            Ok(list) if output == Output::Json => print_json(&list),
            Ok(list) => {
                let mut table = Table::new();
                table.load_preset(NOTHING);
                table.set_header(["ID", "ROLE", "FOR", "MADE BY", "EXPIRES", "USED"]);
                for t in list {
                    table.add_row([
                        t.id,
                        t.role.to_string(),
                        t.host.unwrap_or_else(|| "any new host".into()),
                        t.created_by,
                        time_text(t.expires_unix_ms),
                        t.used
                            .map_or("-".into(), |(h, at)| format!("by {h} at {}", time_text(at))),
                    ]);
                }
                outln!("{table}");
                0
            }
            Err(code) => code,
        },
    }
}
