//! Operator commands that query the coordinator's HTTP API and print the answer.

use std::time::Duration;
use understudy_common::outln;

use comfy_table::{presets::NOTHING, Table};
use serde::de::DeserializeOwned;
use understudy_common::exit;

use super::Output;
use crate::registry::HostRecord;
use crate::server::http::{Health, HostList};
use crate::server::wall_ms;

pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

/// How many redirects (from a group member to its leader) a call follows.
const MAX_REDIRECTS: usize = 3;

/// A request's body.
pub(super) enum Body {
    /// JSON.
    Json(serde_json::Value),
    /// Raw bytes (a backup).
    Bytes(Vec<u8>),
}

/// How long a call waits for the coordinator group to elect a leader when every member
/// it reached said there is none (a member restarting, a leader stepping down): a few
/// elections' worth, so an operator's command rides over one instead of failing.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Pause between rounds while waiting for a leader.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// Sends one request to the coordinator at `base`, which may list several members
/// (`URL,URL`): each is tried in turn while it cannot be reached or has no leader, and a
/// member's redirect to its leader is followed (with the method and body kept). While a
/// member reached says the group has no leader (HTTP 503, sent before anything is acted
/// on, so asking again cannot act twice), the round is repeated for up to
/// [`LEADER_WAIT`]. Returns the URL last asked and its answer.
pub(super) fn send(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Body>,
    timeout: Duration,
) -> (String, Result<ureq::Response, ureq::Error>) {
    send_waiting(base, method, path, body, timeout, LEADER_WAIT)
}

fn send_waiting(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Body>,
    timeout: Duration,
    wait: Duration,
) -> (String, Result<ureq::Response, ureq::Error>) {
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let (url, result) = send_round(base, method, path, body, timeout);
        // Only a round no member acted on is asked again: one that ended in a leader's
        // answer (an acceptance or a refusal) never is.
        let leaderless = matches!(&result, Err(ureq::Error::Status(503, _)));
        if !leaderless || started.elapsed() + LEADER_POLL > wait {
            return (url, result);
        }
        if !told {
            eprintln!("the coordinator group has no leader yet; waiting up to {wait:?} for one");
            told = true;
        }
        std::thread::sleep(LEADER_POLL);
    }
}

/// One round of [`send`] over the members: the first answer that is neither "unreachable"
/// nor "no leader", else a member's "no leader" (rather than another's unreachability),
/// else the last failure.
fn send_round(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Body>,
    timeout: Duration,
) -> (String, Result<ureq::Response, ureq::Error>) {
    let bases: Vec<String> = base
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| {
            if b.contains("://") {
                b.to_owned()
            } else {
                format!("https://{b}")
            }
        })
        .collect();
    let agent = if bases.iter().any(|b| b.starts_with("https://")) {
        super::identity::agent_for(base)
    } else {
        ureq::AgentBuilder::new().redirects(0).build()
    };
    let changes = !matches!(method, "GET" | "HEAD");
    let mut last = None;
    let mut no_leader = None;
    for (i, b) in bases.iter().enumerate() {
        let mut url = format!("{}{path}", b.trim_end_matches('/'));
        let mut hops = 0;
        let result = loop {
            let req = agent.request(method, &url).timeout(timeout);
            let r = match body {
                Some(Body::Json(v)) => req.send_json(v.clone()),
                Some(Body::Bytes(b)) => req
                    .set("content-type", "application/octet-stream")
                    .send_bytes(b),
                None => req.call(),
            };
            let location = match &r {
                Ok(resp) if matches!(resp.status(), 307 | 308) => resp.header("location"),
                Err(ureq::Error::Status(307 | 308, resp)) => resp.header("location"),
                _ => None,
            }
            .map(str::to_owned);
            match location {
                Some(to) if hops < MAX_REDIRECTS => {
                    hops += 1;
                    url = to;
                }
                _ => break r,
            }
        };
        let more = i + 1 < bases.len();
        match result {
            // A change the member received but did not answer may have been carried out:
            // never sent to another member.
            Err(ureq::Error::Transport(ref t)) if changes && after_sending(t) => {
                return (url, result)
            }
            Err(ureq::Error::Status(503, _)) if more || no_leader.is_some() => {
                no_leader.get_or_insert((url, result));
            }
            Err(ureq::Error::Transport(_)) if more || no_leader.is_some() => {
                last = Some((url, result));
            }
            _ => return (url, result),
        }
    }
    no_leader.or(last).unwrap_or_else(|| {
        let url = format!("{base}{path}");
        let r = agent.request(method, &url).timeout(timeout).call();
        (url, r)
    })
}

/// Whether a failure to get an answer came after the request was sent, so that the
/// coordinator may have acted on it (not a failure to connect or to agree on TLS).
fn after_sending(t: &ureq::Transport) -> bool {
    use ureq::ErrorKind as K;
    !matches!(
        t.kind(),
        K::ConnectionFailed
            | K::Dns
            | K::InvalidUrl
            | K::UnknownScheme
            | K::InsecureRequestHttpsOnly
            | K::InvalidProxyUrl
            | K::ProxyConnect
            | K::ProxyUnauthorized
    )
}

/// [`answer`] to a request that changes something: one the coordinator received but did
/// not answer (it was killed, or the connection broke) is [`ApiFailure::Unsettled`].
fn answer_change<T: DeserializeOwned>(
    base: &str,
    url: &str,
    result: Result<ureq::Response, ureq::Error>,
) -> Result<T, ApiFailure> {
    match result {
        Err(ureq::Error::Transport(t)) if after_sending(&t) => Err(ApiFailure::Unsettled(format!(
            "no answer from {url} after it received the request ({t}): the coordinator may or may not have acted on it; look (understudy workload show, understudy events) before you ask again"
        ))),
        r => answer(base, url, r),
    }
}

/// GET `path` and decode the JSON answer; prints the problem and returns an exit code.
pub(super) fn get<T: DeserializeOwned>(base: &str, path: &str) -> Result<T, i32> {
    let (url, r) = send(base, "GET", path, None, TIMEOUT);
    answer(base, &url, r).map_err(|f| {
        let unreachable = matches!(f, ApiFailure::Unreachable(_));
        let code = f.report();
        if unreachable {
            eprintln!("(set --coordinator or UNDERSTUDY_COORDINATOR to its HTTP API address)");
        }
        code
    })
}

/// Why a POST did not succeed.
#[derive(Debug)]
pub(super) enum ApiFailure {
    /// The coordinator could not be reached or answered nonsense.
    Unreachable(String),
    /// The coordinator refused the request.
    Refused(u16, String),
    /// The coordinator stopped leading its group while acting on the request: the group's
    /// new leader settles what became of it ([`crate::server::http::ErrorBody::unsettled`]).
    Unsettled(String),
}

impl ApiFailure {
    /// What went wrong, as the coordinator or the connection said it.
    pub(super) fn message(&self) -> &str {
        match self {
            ApiFailure::Unreachable(m) | ApiFailure::Refused(_, m) | ApiFailure::Unsettled(m) => m,
        }
    }

    /// Prints the failure and returns the exit code for it.
    pub(super) fn report(self) -> i32 {
        match self {
            ApiFailure::Unreachable(e) => {
                eprintln!("{e}");
                exit::UNAVAILABLE
            }
            ApiFailure::Refused(status, msg) => {
                eprintln!("refused: {msg}");
                if status >= 500 {
                    exit::SOFTWARE
                } else {
                    exit::DATA_ERR
                }
            }
            ApiFailure::Unsettled(msg) => {
                eprintln!("{msg}");
                exit::SOFTWARE
            }
        }
    }
}

/// DELETE `path` and decode the JSON answer.
pub(super) fn delete<T: DeserializeOwned>(base: &str, path: &str) -> Result<T, ApiFailure> {
    let (url, r) = send(base, "DELETE", path, None, Duration::from_secs(120));
    answer_change(base, &url, r)
}

/// DELETE `path`, expecting no answer body.
pub(super) fn delete_empty(base: &str, path: &str) -> Result<(), ApiFailure> {
    let (url, r) = send(base, "DELETE", path, None, TIMEOUT);
    match r {
        Ok(_) => Ok(()),
        Err(e) => answer_change::<serde_json::Value>(base, &url, Err(e)).map(|_| ()),
    }
}

/// The decoded answer to a request, or why there is none.
pub(super) fn answer<T: DeserializeOwned>(
    base: &str,
    url: &str,
    result: Result<ureq::Response, ureq::Error>,
) -> Result<T, ApiFailure> {
    match result {
        Ok(resp) => resp
            .into_json()
            .map_err(|e| ApiFailure::Unreachable(format!("unexpected answer from {url}: {e}"))),
        Err(ureq::Error::Status(code, resp)) => {
            match resp.into_json::<crate::server::http::ErrorBody>() {
                Ok(b) if b.unsettled => Err(ApiFailure::Unsettled(b.error)),
                Ok(b) => Err(ApiFailure::Refused(code, b.error)),
                Err(_) => Err(ApiFailure::Refused(
                    code,
                    format!("the coordinator answered HTTP {code} to {url}"),
                )),
            }
        }
        Err(e) => Err(ApiFailure::Unreachable(format!(
            "cannot reach the coordinator at {base}: {e}"
        ))),
    }
}

/// POST `body` as JSON to `path` and decode the JSON answer.
pub(super) fn post<B: serde::Serialize, T: DeserializeOwned>(
    base: &str,
    path: &str,
    body: &B,
) -> Result<T, ApiFailure> {
    let body = match serde_json::to_value(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(ApiFailure::Unreachable(format!(
                "cannot encode the request: {e}"
            )))
        }
    };
    let (url, r) = send(
        base,
        "POST",
        path,
        Some(&Body::Json(body)),
        Duration::from_secs(120),
    );
    answer_change(base, &url, r)
}

/// POST raw `bytes` to `path` and decode the JSON answer.
pub(super) fn post_bytes<T: DeserializeOwned>(
    base: &str,
    path: &str,
    bytes: Vec<u8>,
) -> Result<T, ApiFailure> {
    let (url, r) = send(
        base,
        "POST",
        path,
        Some(&Body::Bytes(bytes)),
        Duration::from_secs(120),
    );
    answer_change(base, &url, r)
}

/// GET `path` as raw bytes, at most `cap` of them.
pub(super) fn get_bytes(base: &str, path: &str, cap: usize) -> Result<Vec<u8>, ApiFailure> {
    let (url, r) = send(base, "GET", path, None, Duration::from_secs(120));
    match r {
        Ok(resp) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(resp.into_reader(), cap as u64 + 1),
                &mut out,
            )
            .map_err(|e| ApiFailure::Unreachable(format!("reading the answer of {url}: {e}")))?;
            Ok(out)
        }
        Err(e) => answer::<serde_json::Value>(base, &url, Err(e)).map(|_| Vec::new()),
    }
}

/// Prints `value` as pretty JSON.
pub(super) fn print_json<T: serde::Serialize>(value: &T) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            outln!("{s}");
            0
        }
        Err(e) => {
            eprintln!("cannot render JSON: {e}");
            exit::SOFTWARE
        }
    }
}

/// `understudy hosts`
pub fn hosts(base: &str, output: Output) -> i32 {
    let list: HostList = match get(base, "/v1/hosts") {
        Ok(l) => l,
        Err(code) => return code,
    };
    if output == Output::Json {
        return print_json(&list);
    }
    if list.hosts.is_empty() {
        outln!("no hosts have registered yet");
        return 0;
    }
    let now = wall_ms();
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header([
        "NAME",
        "STATE",
        "HEALTH",
        "ADDRESS",
        "LAST SEEN",
        "CPU",
        "MEMORY",
        "LOAD",
        "UPTIME",
        "VERSION",
    ]);
    for h in &list.hosts {
        table.add_row(host_row(h, now));
    }
    outln!("{table}");
    0
}

/// `host show`'s anomaly line: the score, this host's threshold and, past the warm-up, how
/// unusual the score is for this host.
fn anomaly_line(r: &understudy_common::telemetry::HealthReport) -> String {
    let standing = r.percentile.map_or(String::new(), |p| {
        format!("; percentile {p:.1} of this host's recent scores")
    });
    format!(
        "anomaly:      {:.3} (alarms above {:.3}{standing})",
        r.anomaly, r.anomaly_threshold
    )
}

/// `understudy host show NAME`
pub fn host_show(base: &str, output: Output, name: &str) -> i32 {
    let list: HostList = match get(base, "/v1/hosts") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Some(h) = list.hosts.iter().find(|h| h.name == name) else {
        eprintln!("understudy host show: no host named {name:?}");
        return exit::DATA_ERR;
    };
    if output == Output::Json {
        return print_json(h);
    }
    let now = wall_ms();
    let row = host_row(h, now);
    outln!("host:         {}", h.name);
    if let Some(z) = list.zones.get(&h.name) {
        outln!("zone:         {z}");
    }
    outln!("state:        {}", row[1]);
    outln!("address:      {}", row[3]);
    outln!("last seen:    {}", row[4]);
    outln!(
        "cpu:          {}   memory: {}   load: {}   uptime: {}",
        row[5],
        row[6],
        row[7],
        row[8]
    );
    match h.telemetry.as_ref().and_then(|t| t.health.as_ref()) {
        None => outln!("health:       - (this agent sends no assessment)"),
        Some(r) => {
            outln!("health:       {}", health_text(h));
            if let Some(note) = &r.note {
                outln!("              {note}");
            }
            if r.level != understudy_common::telemetry::HealthLevel::Degraded {
                outln!("{}", anomaly_line(r));
                let top: Vec<String> = r.top.iter().map(|(m, c)| format!("{m} {c:.2}")).collect();
                outln!("top metrics:  {}", top.join(", "));
                if let Some(risk) = &r.risk {
                    outln!(
                        "risk:         {:.1}% within {} min (most likely: {} runs out)",
                        100.0 * risk.probability,
                        risk.horizon_secs / 60,
                        risk.cause
                    );
                }
                if !r.kernel_errors.is_empty() {
                    let e: Vec<String> = r
                        .kernel_errors
                        .iter()
                        .map(|(k, n)| format!("{n} {k}"))
                        .collect();
                    outln!("kernel errors: {} in the last hour", e.join(", "));
                }
                for f in &r.forecasts {
                    outln!(
                        "forecast:     {} in {} min: {:.2} (p90 {:.2})",
                        f.metric,
                        f.horizon_secs / 60,
                        f.central,
                        f.upper
                    );
                }
            }
        }
    }
    outln!("version:      {}", h.agent_version);
    0
}

/// `92 healthy`, `64 critical (top: disk_q)`, `degraded`, or `-`.
fn health_text(h: &HostRecord) -> String {
    use understudy_common::telemetry::HealthLevel;
    match h.telemetry.as_ref().and_then(|t| t.health.as_ref()) {
        None => "-".into(),
        Some(r) if r.level == HealthLevel::Degraded => "degraded".into(),
        Some(r) if r.level == HealthLevel::Healthy => format!("{} {}", r.score, r.level.as_str()),
        Some(r) => format!(
            "{} {}{}",
            r.score,
            r.level.as_str(),
            r.top
                .first()
                .map(|(m, _)| format!(" (top: {m})"))
                .unwrap_or_default()
        ),
    }
}

fn host_row(h: &HostRecord, now_ms: u64) -> Vec<String> {
    let ago = Duration::from_millis(now_ms.saturating_sub(h.last_seen_unix_ms));
    let (cpu, mem, load, up) = match &h.telemetry {
        Some(t) => (
            format!("{:.0}%", t.cpu_percent),
            format!(
                "{:.1}/{:.1} GiB",
                gib(t.memory_used_bytes),
                gib(t.memory_total_bytes)
            ),
            format!("{:.2}", t.load[0]),
            short_duration(Duration::from_secs(t.uptime_secs)),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    vec![
        h.name.clone(),
        if h.connected {
            "connected"
        } else {
            "disconnected"
        }
        .into(),
        health_text(h),
        h.address.map_or("-".into(), |a| a.to_string()),
        format!("{} ago", short_duration(ago)),
        cpu,
        mem,
        load,
        up,
        h.agent_version.clone(),
    ]
}

#[allow(clippy::cast_precision_loss)] // display only
fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// "5s", "2m", "3h2m", "2d1h".
pub(super) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `understudy status`
pub fn status(base: &str, output: Output) -> i32 {
    let health: Health = match get(base, "/v1/health") {
        Ok(h) => h,
        Err(code) => return code,
    };
    if output == Output::Json {
        return print_json(&health);
    }
    outln!(
        "coordinator {base}: {} (version {}, up {})",
        health.status,
        health.version,
        short_duration(Duration::from_secs(health.uptime_secs))
    );
    outln!(
        "hosts: {} connected, {} disconnected",
        health.hosts_connected,
        health.hosts_known - health.hosts_connected.min(health.hosts_known)
    );
    0
}

#[cfg(test)]
mod tests {
    use super::super::test_http::serve;
    use super::*;

    #[test]
    fn host_show_says_how_unusual_the_score_is_for_the_host_once_it_knows() {
        let mut r = understudy_common::telemetry::HealthReport {
            score: 90,
            level: understudy_common::telemetry::HealthLevel::Healthy,
            anomaly: 0.2144,
            anomaly_threshold: 1.016,
            top: Vec::new(),
            note: None,
            forecasts: Vec::new(),
            risk: None,
            kernel_errors: Vec::new(),
            percentile: None,
        };
        assert_eq!(anomaly_line(&r), "anomaly:      0.214 (alarms above 1.016)");
        r.percentile = Some(62.44);
        assert_eq!(
            anomaly_line(&r),
            "anomaly:      0.214 (alarms above 1.016; percentile 62.4 of this host's recent scores)"
        );
    }

    const NO_LEADER: &str = r#"{"error":"no leader yet (member 2, term 1); retry shortly"}"#;

    #[test]
    fn a_call_waits_out_an_election_and_gets_the_answer() {
        let base = serve(vec![
            (503, NO_LEADER),
            (503, NO_LEADER),
            (200, r#"{"ok":1}"#),
        ]);
        let (_, r) = send_waiting(&base, "GET", "/v1/x", None, TIMEOUT, LEADER_WAIT);
        let v: serde_json::Value = r
            .expect("answered once a leader was there")
            .into_json()
            .unwrap();
        assert_eq!(v["ok"], 1);
    }

    #[test]
    fn a_group_without_a_leader_for_longer_than_the_wait_is_reported() {
        let base = serve(vec![(503, NO_LEADER); 8]);
        let wait = Duration::from_millis(600);
        let started = std::time::Instant::now();
        let (url, r) = send_waiting(&base, "GET", "/v1/x", None, TIMEOUT, wait);
        assert!(started.elapsed() >= LEADER_POLL, "asked more than once");
        match answer::<serde_json::Value>(&base, &url, r) {
            Err(ApiFailure::Refused(503, msg)) => assert!(msg.contains("no leader"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_leader_that_acted_is_not_asked_again_when_another_member_had_no_leader() {
        // The first member lost its leadership; the second leads and accepts, and would
        // refuse a second copy of the request.
        let cut_off = serve(vec![(503, NO_LEADER); 4]);
        let leader = serve(vec![
            (202, r#"{"accepted":1}"#),
            (409, r#"{"error":"already runs"}"#),
        ]);
        let base = format!("{cut_off},{leader}");
        let (_, r) = send_waiting(&base, "POST", "/v1/x", None, TIMEOUT, LEADER_WAIT);
        let v: serde_json::Value = r.expect("the leader's acceptance").into_json().unwrap();
        assert_eq!(v["accepted"], 1);
    }

    #[test]
    fn a_member_without_a_leader_is_reported_rather_than_another_unreachable_one() {
        let cut_off = serve(vec![(503, NO_LEADER); 8]);
        let gone = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let base = format!("{cut_off},{gone}");
        let (url, r) = send_waiting(
            &base,
            "GET",
            "/v1/x",
            None,
            TIMEOUT,
            Duration::from_millis(600),
        );
        match answer::<serde_json::Value>(&base, &url, r) {
            Err(ApiFailure::Refused(503, msg)) => assert!(msg.contains("no leader"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_is_not_asked_again() {
        let base = serve(vec![(409, r#"{"error":"already exists"}"#), (200, "{}")]);
        let (url, r) = send_waiting(&base, "POST", "/v1/x", None, TIMEOUT, LEADER_WAIT);
        match answer::<serde_json::Value>(&base, &url, r) {
            Err(ApiFailure::Refused(409, msg)) => assert_eq!(msg, "already exists"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_left_unsettled_by_a_lost_leadership_is_not_asked_again_anywhere() {
        // The first member stopped leading while it created the workload; asking the
        // second (the new leader) again could start it twice.
        let old = serve(vec![(
            500,
            r#"{"error":"member 1 stopped leading","unsettled":true}"#,
        )]);
        let new = serve(vec![(201, r#"{"created":1}"#)]);
        let base = format!("{old},{new}");
        let (url, r) = send_waiting(&base, "POST", "/v1/x", None, TIMEOUT, LEADER_WAIT);
        match answer::<serde_json::Value>(&base, &url, r) {
            Err(ApiFailure::Unsettled(msg)) => assert_eq!(msg, "member 1 stopped leading"),
            other => panic!("{other:?}"),
        }
    }

    /// Takes one connection, reads the request and closes without an answer (a member
    /// killed while it acted on the request).
    fn hang_up() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
        });
        format!("http://{addr}")
    }

    #[test]
    fn a_change_a_member_received_but_never_answered_is_not_sent_to_another() {
        let killed = hang_up();
        let new = serve(vec![(201, r#"{"created":1}"#)]);
        let base = format!("{killed},{new}");
        let (url, r) = send_waiting(&base, "POST", "/v1/x", None, TIMEOUT, LEADER_WAIT);
        match answer_change::<serde_json::Value>(&base, &url, r) {
            Err(ApiFailure::Unsettled(msg)) => assert!(msg.contains("may or may not"), "{msg}"),
            other => panic!("{other:?}"),
        }
        // A query is asked of the next member.
        let killed = hang_up();
        let base = format!("{killed},{new2}", new2 = serve(vec![(200, r#"{"ok":1}"#)]));
        let (url, r) = send_waiting(&base, "GET", "/v1/x", None, TIMEOUT, LEADER_WAIT);
        let v: serde_json::Value = answer(&base, &url, r).expect("the second member's answer");
        assert_eq!(v["ok"], 1);
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(short_duration(Duration::from_secs(5)), "5s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 120)), "3h2m");
        assert_eq!(
            short_duration(Duration::from_secs(2 * 86400 + 3600)),
            "2d1h"
        );
    }
}
