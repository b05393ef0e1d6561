//! Operator maintenance and the engine's view: `host cordon|uncordon|drain`,
//! `maintenance add|list|remove`, `plan` and `events`.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{presets::NOTHING, Table};
use understudy_common::{exit, outln};

use super::api::{get, post, print_json};
use super::Output;
use crate::admin::HostAdmin;
use crate::decide::Action;
use crate::events::Event;
use crate::server::admin::{DrainStatus, WindowView};
use crate::server::http_admin::{DrainRequest, Plan, WindowRequest};
use crate::server::wall_ms;

/// `understudy maintenance …`
#[derive(Debug, clap::Subcommand)]
pub enum MaintenanceCommand {
    /// Schedule a window: every workload leaves HOST before it opens, and nothing is
    /// placed there during it.
    Add {
        /// The host.
        host: String,
        /// When it opens: an RFC 3339 time (2026-12-24T02:00:00Z) or +DURATION from now.
        #[arg(long, value_parser = parse_start)]
        start: u64,
        /// How long it lasts (e.g. 2h).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why, for the event log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Windows to come.
    List,
    /// Remove a window by its id.
    Remove {
        /// The id `list` shows.
        id: u64,
    },
}

/// A start time: RFC 3339, or `+DURATION` from now; ms since the Unix epoch.
fn parse_start(s: &str) -> Result<u64, String> {
    if let Some(rel) = s.strip_prefix('+') {
        let d = humantime::parse_duration(rel).map_err(|e| format!("{rel}: {e}"))?;
        return Ok(wall_ms().saturating_add(d.as_millis() as u64));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("{s}: {e}"))?;
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("{s}: before 1970"))
}

pub(super) fn time_text(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn fail(f: super::api::ApiFailure) -> i32 {
    f.report()
}

/// `host cordon` / `host uncordon`.
pub fn cordon(base: &str, output: Output, host: &str, on: bool) -> i32 {
    let path = format!(
        "/v1/hosts/{host}/{}",
        if on { "cordon" } else { "uncordon" }
    );
    match post::<_, HostAdmin>(base, &path, &serde_json::json!({})) {
        Ok(a) if output == Output::Json => print_json(&a),
        Ok(_) => {
            outln!(
                "{host} {}",
                if on {
                    "cordoned: nothing new is placed there"
                } else {
                    "uncordoned"
                }
            );
            0
        }
        Err(f) => fail(f),
    }
}

/// `host revoke HOST` (`host`) and `revoke NAME` (not `host`).
pub fn revoke(base: &str, output: Output, name: &str, host: bool) -> i32 {
    let path = if host {
        format!("/v1/hosts/{name}/revoke")
    } else {
        format!("/v1/certificates/{name}/revoke")
    };
    match post::<_, crate::revocation::Revocation>(base, &path, &serde_json::json!({})) {
        Ok(r) if output == Output::Json => print_json(&r),
        Ok(r) => {
            let until = time_text(r.at_unix_ms);
            if host {
                outln!("{name}: certificates issued before {until} are refused and its connection is closed; issue it a new certificate to let it back");
            } else {
                outln!("{name}: certificates issued before {until} are refused; issue a new one (understudy ca issue --name {name}) to let its holder back");
            }
            0
        }
        Err(f) => fail(f),
    }
}

/// `host drain` and its `--monitor` / `--cancel`.
pub fn drain(
    base: &str,
    output: Output,
    host: &str,
    req: DrainRequest,
    (detach, monitor): (bool, bool),
) -> i32 {
    let path = format!("/v1/hosts/{host}/drain");
    let first: DrainStatus = if monitor {
        match super::drain_watch::look(base, &path, super::drain_watch::OUTAGE) {
            Ok(s) => s,
            Err(code) => return code,
        }
    } else {
        let cancel = req.cancel;
        match post(base, &path, &req) {
            Ok(s) if cancel => {
                return if output == Output::Json {
                    print_json(&s)
                } else {
                    outln!(
                        "drain of {host} cancelled; what moved stays moved; {host} stays cordoned"
                    );
                    0
                };
            }
            Ok(s) => s,
            Err(f) => return fail(f),
        }
    };
    if detach {
        if output == Output::Json {
            return print_json(&first);
        }
        outln!(
            "draining {host}: {} workloads; `understudy host drain {host} --monitor` follows it",
            first.workloads.len()
        );
        return 0;
    }
    if output == Output::Table {
        outln!(
            "draining {host}: {} workloads, {} shadows (Ctrl-C stops watching, not the drain)",
            first.primaries_left.len(),
            first.shadows_left.len()
        );
    }
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let watched = super::drain_watch::watch(base, &path, super::drain_watch::OUTAGE, |s| {
        if output == Output::Table {
            for (w, text) in &s.workloads {
                if shown.get(w) != Some(text) {
                    outln!("  {w}: {text}");
                    shown.insert(w.clone(), text.clone());
                }
            }
        }
    });
    let last = match watched {
        Ok(s) => s,
        Err(code) => return code,
    };
    if output == Output::Json {
        print_json(&last);
    }
    if last.primaries_left.is_empty() && last.shadows_left.is_empty() {
        if output == Output::Table {
            outln!("{host} drained: it runs no workload and holds no shadow; it stays cordoned");
        }
        0
    } else {
        eprintln!(
            "the drain of {host} ended with workloads left: {}{}; `understudy events --host {host}` says why",
            last.primaries_left.join(", "),
            if last.shadows_left.is_empty() {
                String::new()
            } else {
                format!("; shadows of {}", last.shadows_left.join(", "))
            }
        );
        exit::TEMP_FAIL
    }
}

/// `maintenance …`.
pub fn maintenance(base: &str, output: Output, command: MaintenanceCommand) -> i32 {
    match command {
        MaintenanceCommand::Add {
            host,
            start,
            duration,
            reason,
        } => {
            let req = WindowRequest {
                host,
                start_unix_ms: start,
                duration_ms: duration.as_millis() as u64,
                reason,
            };
            match post::<_, WindowView>(base, "/v1/maintenance", &req) {
                Ok(w) if output == Output::Json => print_json(&w),
                Ok(w) => {
                    outln!(
                        "window {} on {}: {} for {}",
                        w.id,
                        w.host,
                        time_text(w.window.start_ms),
                        humantime::format_duration(Duration::from_millis(w.window.duration_ms))
                    );
                    0
                }
                Err(f) => fail(f),
            }
        }
        MaintenanceCommand::List => {
            let windows: Vec<WindowView> = match get(base, "/v1/maintenance") {
                Ok(w) => w,
                Err(code) => return code,
            };
            if output == Output::Json {
                return print_json(&windows);
            }
            let mut t = Table::new();
            t.load_preset(NOTHING);
            t.set_header(["ID", "HOST", "START", "DURATION", "REASON"]);
            for w in &windows {
                t.add_row([
                    w.id.to_string(),
                    w.host.clone(),
                    time_text(w.window.start_ms),
                    humantime::format_duration(Duration::from_millis(w.window.duration_ms))
                        .to_string(),
                    w.window.reason.clone(),
                ]);
            }
            outln!("{t}");
            0
        }
        MaintenanceCommand::Remove { id } => {
            match super::api::delete_empty(base, &format!("/v1/maintenance/{id}")) {
                Ok(()) => {
                    if output == Output::Table {
                        outln!("window {id} removed");
                    }
                    0
                }
                Err(f) => fail(f),
            }
        }
    }
}

/// `plan`: what the engine would do now and why.
pub fn plan(base: &str, output: Output) -> i32 {
    let p: Plan = match get(base, "/v1/plan") {
        Ok(p) => p,
        Err(code) => return code,
    };
    if output == Output::Json {
        return print_json(&p);
    }
    outln!("decisions mode: {}", p.mode);
    if p.decisions.is_empty() {
        outln!("no host is in trouble: nothing would move");
    }
    for d in &p.decisions {
        let what = match &d.action {
            Action::Move { to } => format!("move to {to}"),
            Action::Advise { to, why } => format!("should move to {to}, but: {why}"),
            Action::Hold { why } => format!("stays: {why}"),
        };
        outln!(
            "{} on {}: {what}\n    because {} (score {:.2} = benefit {:.2} − cost {:.2})",
            d.workload,
            d.from,
            d.trigger.detail,
            d.score,
            d.benefit,
            d.cost
        );
    }
    if !p.windows.is_empty() {
        outln!("maintenance windows:");
        for w in &p.windows {
            outln!(
                "  {} {}: {} for {} ({})",
                w.id,
                w.host,
                time_text(w.window.start_ms),
                humantime::format_duration(Duration::from_millis(w.window.duration_ms)),
                w.window.reason
            );
        }
    }
    0
}

/// `events`: the event log, optionally followed.
pub fn events(
    base: &str,
    output: Output,
    follow: bool,
    host: Option<&str>,
    workload: Option<&str>,
) -> i32 {
    let mut after: Option<u64> = None;
    loop {
        let mut path = String::from("/v1/events?limit=1000");
        for (k, v) in [("host", host), ("workload", workload)] {
            if let Some(v) = v {
                path.push_str(&format!("&{k}={v}"));
            }
        }
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
            if follow {
                // A blocking query: the coordinator answers as soon as there is one (within
                // the CLI's 5 s request timeout).
                path.push_str("&wait=3s");
            }
        }
        let batch: Vec<Event> = match get(base, &path) {
            Ok(b) => b,
            Err(code) => return code,
        };
        for e in &batch {
            if output == Output::Json {
                match serde_json::to_string(e) {
                    Ok(line) => outln!("{line}"),
                    Err(err) => {
                        eprintln!("cannot render JSON: {err}");
                        return exit::SOFTWARE;
                    }
                }
            } else {
                outln!("{}", event_line(e));
            }
        }
        if let Some(last) = batch.last() {
            after = Some(last.seq);
        } else if after.is_none() {
            after = Some(0);
        }
        if !follow {
            return 0;
        }
    }
}

fn event_line(e: &Event) -> String {
    let when = time_text(e.unix_ms);
    let subject = match (&e.host, &e.workload) {
        (Some(h), Some(w)) => format!("{w}@{h}"),
        (Some(h), None) => h.clone(),
        (None, Some(w)) => w.clone(),
        (None, None) => "-".into(),
    };
    let inputs = if e.inputs.is_empty() {
        String::new()
    } else {
        let kv: Vec<String> = e.inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" [{}]", kv.join(" "))
    };
    format!("{when} {:<11} {subject:<20} {}{inputs}", e.kind, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_absolute_or_relative() {
        assert_eq!(
            parse_start("2026-12-24T02:00:00Z").unwrap(),
            1_798_077_600_000
        );
        let rel = parse_start("+10m").unwrap();
        let expect = wall_ms() + 600_000;
        assert!(rel.abs_diff(expect) < 5_000, "{rel} vs {expect}");
        assert!(parse_start("tomorrow").unwrap_err().contains("tomorrow"));
    }
}
