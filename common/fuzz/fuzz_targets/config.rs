//! A config file as an operator writes it, through the plumbing every understudy config
//! goes through (`config::parse`: TOML, unknown keys refused, the failing key and line
//! named): into a struct shaped like the agent's and coordinator's configs — sections,
//! the `[tls]` section they all share, durations, addresses, lists, optional values.
#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use understudy_common::config::{check_range, parse};
use understudy_common::tls::files::TlsFiles;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Config {
    tls: TlsFiles,
    #[serde(default)]
    agent: Option<Section>,
    #[serde(default)]
    peers: Vec<Peer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Section {
    data_dir: PathBuf,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    listen: Option<SocketAddr>,
    zone: Option<String>,
    limits: Option<Vec<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Peer {
    id: u64,
    address: String,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse::<Config>(text) {
        Ok(c) => {
            if let Some(interval) = c.agent.and_then(|a| a.interval) {
                let mut problems = Vec::new();
                check_range(
                    &mut problems,
                    "agent.interval",
                    interval,
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                );
            }
        }
        Err((key, reason)) => {
            assert!(
                !reason.is_empty(),
                "a refusal without a reason (key {key:?})"
            );
        }
    }
});
