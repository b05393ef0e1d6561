//! The coordinator's config file (`coordinator.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use understudy_common::config::{check_range, Problem, Validate};
use understudy_common::tls::files::TlsFiles;
use understudy_common::tls::Role;

/// Everything `understudy serve` reads from its config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Where agents connect.
    #[serde(default)]
    pub quic: QuicSection,
    /// Where operators and monitoring connect.
    #[serde(default)]
    pub http: HttpSection,
    /// The cluster CA and this coordinator's certificate.
    pub tls: TlsFiles,
    /// Where the registry is kept.
    pub store: StoreSection,
    /// How often agents report and when silence means a lost host.
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    /// When a lost host's workloads are restored elsewhere, and the leases that fence them.
    #[serde(default)]
    pub failover: FailoverSection,
    /// When workloads move by themselves, and the guardrails.
    #[serde(default)]
    pub decisions: crate::decide::config::DecisionsSection,
    /// Membership of a coordinator group (docs/ha.md); absent: a single coordinator.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Signing the certificates of hosts that join with a token; absent: no joins.
    #[serde(default)]
    pub enrollment: Option<EnrollmentSection>,
}

/// `[enrollment]`: this coordinator holds the cluster CA's key and signs the certificate
/// of a host that presents a join token (`understudy-agent join`). Every member of a group
/// that may lead needs it for joins to work whichever leads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentSection {
    /// The cluster CA's private key (the CA certificate is `tls.ca`).
    pub ca_key: PathBuf,
    /// How long a certificate signed for a joining host is valid.
    #[serde(default = "default_cert_lifetime", with = "humantime_serde")]
    pub cert_lifetime: Duration,
}

fn default_cert_lifetime() -> Duration {
    Duration::from_secs(365 * 86_400)
}

impl EnrollmentSection {
    /// Adds its problems: a lifetime out of range, a key that is not the CA's (`ca`).
    fn check(&self, problems: &mut Vec<Problem>, ca: &std::path::Path) {
        check_range(
            problems,
            "enrollment.cert_lifetime",
            self.cert_lifetime,
            Duration::from_secs(60),
            Duration::from_secs(10 * 365 * 86_400),
        );
        if let Err(p) = self.load_ca(ca) {
            problems.push(p);
        }
    }

    /// The CA (certificate from `ca`, key from `ca_key`), checked to match.
    pub fn load_ca(
        &self,
        ca: &std::path::Path,
    ) -> Result<understudy_common::tls::ca::PemPair, Problem> {
        let read = |key: &str, path: &std::path::Path| {
            understudy_common::config::read_capped(path)
                .map_err(|e| Problem::new(key, format!("cannot read {}: {e}", path.display())))
        };
        let pair = understudy_common::tls::ca::PemPair {
            cert_pem: read("tls.ca", ca)?,
            key_pem: read("enrollment.ca_key", &self.ca_key)?,
        };
        understudy_common::tls::ca::check_ca(&pair).map_err(|e| {
            Problem::new(
                "enrollment.ca_key",
                format!("{} with {}: {e}", self.ca_key.display(), ca.display()),
            )
        })?;
        Ok(pair)
    }
}

/// `[cluster]`: this coordinator is a member of a group of coordinators and a witness.
/// The addresses in `quic.listen` and `http.listen` are the ones the other members give
/// agents and operators, so they must be reachable addresses, not wildcards.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This member's id, unique in the group, at least 1.
    pub id: u64,
    /// UDP address of the peer (Raft) endpoint.
    pub listen: SocketAddr,
    /// The Raft log file; its directory must exist.
    pub log: PathBuf,
}

/// The config of `understudy witness`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The cluster CA and the witness's certificate (a coordinator-role one).
    pub tls: TlsFiles,
    /// Its place in the group.
    pub witness: WitnessSection,
    /// The cluster CA's key, for the witness to renew its own certificate two thirds
    /// through its lifetime (as coordinators with `[enrollment]` do); it signs nothing
    /// else. Without it, its certificate is replaced by hand.
    pub enrollment: Option<EnrollmentSection>,
}

/// `[witness]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSection {
    /// Its id, unique in the group, at least 1.
    pub id: u64,
    /// UDP address of its peer (Raft) endpoint.
    pub listen: SocketAddr,
    /// The Raft log file; its directory must exist.
    pub log: PathBuf,
    /// Its copy of the records (applied like every member's, served to nobody).
    pub store: PathBuf,
}

/// A note when the directory of `path` does not exist yet: the service creates it when it
/// starts (under its unit, systemd's `StateDirectory=` already has), so a fresh install
/// validates before its first start.
fn note_missing_dir(notes: &mut Vec<Problem>, key: &str, path: &std::path::Path) {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => notes.push(Problem::new(
            key,
            format!(
                "directory {} does not exist yet; it is created when the service starts",
                dir.display()
            ),
        )),
        _ => {}
    }
}

fn check_id(problems: &mut Vec<Problem>, key: &str, id: u64) {
    if id == 0 {
        problems.push(Problem::new(key, "0 is not a member id (ids start at 1)"));
    }
}

impl Validate for WitnessConfig {
    fn notes(&self) -> Vec<Problem> {
        let mut notes = Vec::new();
        note_missing_dir(&mut notes, "witness.log", &self.witness.log);
        note_missing_dir(&mut notes, "witness.store", &self.witness.store);
        notes
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        check_id(&mut problems, "witness.id", self.witness.id);
        if self.witness.log == self.witness.store {
            problems.push(Problem::new(
                "witness.log",
                "must differ from witness.store",
            ));
        }
        if let Err(e) = self.tls.load(Role::Coordinator) {
            problems.push(Problem::new("", e.to_string()));
        }
        if let Some(e) = &self.enrollment {
            e.check(&mut problems, &self.tls.ca);
        }
        problems
    }
}

/// `[failover]`: a host unreachable for `failover_after` has its workloads restored on
/// their shadows; so that they never run twice, a primary that has not heard from the
/// coordinator for `fence_after` freezes them first. The rule, checked by `validate`:
/// `failover_after > fence_after + heartbeat.timeout + margin`, the margin being the larger
/// of 500 ms and a tenth of `fence_after` (the renewal's way to the supervisor, and clocks
/// that run at slightly different rates).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSection {
    /// `auto` (default): failovers happen by themselves; `manual`: never, and workloads
    /// run without leases.
    pub mode: understudy_common::workload::FailoverMode,
    /// A workload's lease: how long its primary may run it without hearing from the
    /// coordinator (default 1.5 s).
    #[serde(with = "humantime_serde")]
    pub fence_after: Duration,
    /// How long a host must be unreachable before its workloads are restored elsewhere
    /// (default 3.6 s).
    #[serde(with = "humantime_serde")]
    pub failover_after: Duration,
    /// How long a shadow's host must be unreachable before another host becomes the shadow
    /// in its place (default: 5 min, or `failover_after` when that is longer; "0s": never,
    /// the shadow waits for its host or a drain). See [`FailoverSection::replace_after`].
    #[serde(with = "humantime_serde")]
    pub replace_shadow_after: Option<Duration>,
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection {
            mode: understudy_common::workload::FailoverMode::Auto,
            fence_after: Duration::from_millis(1500),
            failover_after: Duration::from_millis(3600),
            replace_shadow_after: None,
        }
    }
}

impl FailoverSection {
    /// How long a shadow's host must be unreachable before it is replaced (zero: never).
    pub fn replace_after(&self) -> Duration {
        self.replace_shadow_after
            .unwrap_or_else(|| Duration::from_secs(300).max(self.failover_after))
    }

    /// The clock-rate margin the timing rule adds.
    pub fn margin(&self) -> Duration {
        (self.fence_after / 10).max(Duration::from_millis(500))
    }
}

/// `[quic]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicSection {
    /// UDP address agents connect to.
    pub listen: SocketAddr,
}

impl Default for QuicSection {
    fn default() -> Self {
        QuicSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 7440)),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// TCP address of the operator API (HTTPS with client certificates) and `/metrics`.
    pub listen: SocketAddr,
    /// TCP address of a plain-HTTP listener that serves only `/metrics` and `/v1/health`
    /// (for a scraper without a client certificate); none unless configured.
    #[serde(default)]
    pub plain_listen: Option<SocketAddr>,
    /// Whether a workload may run as root (created by an admin with `user = "root"`
    /// written out); `false` refuses every such workload.
    #[serde(default = "yes")]
    pub allow_root_workloads: bool,
    /// DNS names operators reach the API by, accepted in a request's `Host` header besides
    /// IP addresses, `localhost` and `coordinator.understudy` (others are refused: DNS
    /// rebinding).
    #[serde(default)]
    pub names: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 7441)),
            plain_listen: None,
            allow_root_workloads: true,
            names: Vec::new(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The registry database file; its directory must exist.
    pub path: PathBuf,
}

/// `[heartbeat]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    /// How often agents send a heartbeat.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Silence after which a host is shown disconnected.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(1500),
        }
    }
}

impl Validate for CoordinatorConfig {
    fn notes(&self) -> Vec<Problem> {
        let mut notes = Vec::new();
        note_missing_dir(&mut notes, "store.path", &self.store.path);
        if let Some(c) = &self.cluster {
            note_missing_dir(&mut notes, "cluster.log", &c.log);
        }
        notes
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.quic.listen.port() == 0 {
            problems.push(Problem::new("quic.listen", "port must not be 0"));
        }
        if self.http.listen.port() == 0 {
            problems.push(Problem::new("http.listen", "port must not be 0"));
        }
        if self.quic.listen == self.http.listen {
            problems.push(Problem::new("http.listen", "must differ from quic.listen"));
        }
        if let Some(plain) = self.http.plain_listen {
            if plain.port() == 0 {
                problems.push(Problem::new("http.plain_listen", "port must not be 0"));
            }
            if plain == self.http.listen || plain == self.quic.listen {
                problems.push(Problem::new(
                    "http.plain_listen",
                    "must differ from http.listen and quic.listen",
                ));
            }
        }
        for (i, name) in self.http.names.iter().enumerate() {
            let fine = !name.is_empty()
                && name.len() <= 253
                && name.parse::<std::net::IpAddr>().is_err()
                && name.trim_end_matches('.').split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !fine {
                problems.push(Problem::new(
                    format!("http.names[{i}]"),
                    format!("{name:?} is not a DNS name (IP addresses are always accepted)"),
                ));
            }
        }
        let hb = &self.heartbeat;
        check_range(
            &mut problems,
            "heartbeat.interval",
            hb.interval,
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        check_range(
            &mut problems,
            "heartbeat.timeout",
            hb.timeout,
            Duration::from_millis(200),
            Duration::from_secs(600),
        );
        if hb.timeout <= Duration::from_secs(600) && hb.timeout < hb.interval.saturating_mul(2) {
            problems.push(Problem::new(
                "heartbeat.timeout",
                format!(
                    "{} must be at least twice heartbeat.interval ({})",
                    humantime::format_duration(hb.timeout),
                    humantime::format_duration(hb.interval)
                ),
            ));
        }
        let f = &self.failover;
        check_range(
            &mut problems,
            "failover.fence_after",
            f.fence_after,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        check_range(
            &mut problems,
            "failover.failover_after",
            f.failover_after,
            Duration::from_secs(2),
            Duration::from_secs(86_400),
        );
        if let Some(r) = f
            .replace_shadow_after
            .filter(|r| !r.is_zero() && *r < f.failover_after)
        {
            problems.push(Problem::new(
                "failover.replace_shadow_after",
                format!(
                    "{} must be 0s (never) or at least failover.failover_after ({}): a shadow is not given up on sooner than a primary",
                    humantime::format_duration(r),
                    humantime::format_duration(f.failover_after)
                ),
            ));
        }
        let needed = f.fence_after + hb.timeout + f.margin();
        if f.fence_after <= Duration::from_secs(3600)
            && hb.timeout <= Duration::from_secs(600)
            && f.failover_after <= needed
        {
            problems.push(Problem::new(
                "failover.failover_after",
                format!(
                    "{} must be more than failover.fence_after ({}) + heartbeat.timeout ({}) + a margin of {} = {}: a lost primary must have frozen its workloads before they are restored elsewhere",
                    humantime::format_duration(f.failover_after),
                    humantime::format_duration(f.fence_after),
                    humantime::format_duration(hb.timeout),
                    humantime::format_duration(f.margin()),
                    humantime::format_duration(needed)
                ),
            ));
        }
        self.decisions.check(&mut problems);
        if let Some(c) = &self.cluster {
            check_id(&mut problems, "cluster.id", c.id);
            if c.log == self.store.path {
                problems.push(Problem::new("cluster.log", "must differ from store.path"));
            }
            for (key, addr) in [
                ("quic.listen", self.quic.listen),
                ("http.listen", self.http.listen),
            ] {
                if addr.ip().is_unspecified() {
                    problems.push(Problem::new(
                        key,
                        format!("{addr}: a group member gives this address to agents and operators, so it must be a reachable address, not a wildcard"),
                    ));
                }
            }
        }
        if let Err(e) = self.tls.load(Role::Coordinator) {
            problems.push(Problem::new("", e.to_string()));
        }
        if let Some(e) = &self.enrollment {
            e.check(&mut problems, &self.tls.ca);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_common::config::parse;

    #[test]
    fn an_enrollment_key_that_is_not_the_cas_is_refused_naming_it() {
        use understudy_common::tls::ca::{create_ca, Validity};
        let d = tempfile::tempdir().unwrap();
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        let other = create_ca(Validity::days_from_now(10)).unwrap();
        std::fs::write(d.path().join("ca.crt"), &ca.cert_pem).unwrap();
        std::fs::write(d.path().join("ca.key"), &ca.key_pem).unwrap();
        std::fs::write(d.path().join("other.key"), &other.key_pem).unwrap();
        let problems_with = |key: &str, lifetime: &str| {
            let cfg: CoordinatorConfig = parse(&format!(
                r#"
                [tls]
                ca = "{d}/ca.crt"
                cert = "/nonexistent/c.crt"
                key = "/nonexistent/c.key"
                [store]
                path = "{d}/coordinator.redb"
                [enrollment]
                ca_key = "{d}/{key}"
                cert_lifetime = "{lifetime}"
                "#,
                d = d.path().display()
            ))
            .unwrap();
            cfg.validate()
                .into_iter()
                .filter(|p| p.key.starts_with("enrollment."))
                .map(|p| format!("{}: {}", p.key, p.reason))
                .collect::<Vec<_>>()
        };
        assert_eq!(problems_with("ca.key", "30days"), Vec::<String>::new());
        let wrong = problems_with("other.key", "30days");
        assert!(
            wrong.len() == 1
                && wrong[0].starts_with("enrollment.ca_key: ")
                && wrong[0].contains("other.key"),
            "{wrong:?}"
        );
        let missing = problems_with("none.key", "30days");
        assert!(missing[0].contains("none.key"), "{missing:?}");
        let short = problems_with("ca.key", "10s");
        assert!(
            short[0].starts_with("enrollment.cert_lifetime"),
            "{short:?}"
        );
    }

    #[test]
    fn a_group_member_needs_an_id_reachable_addresses_and_its_own_log() {
        let cfg: CoordinatorConfig = parse(
            r#"
            [quic]
            listen = "0.0.0.0:7440"
            [http]
            listen = "10.0.0.1:7441"
            [tls]
            ca = "/nonexistent/ca.crt"
            cert = "/nonexistent/c.crt"
            key = "/nonexistent/c.key"
            [store]
            path = "/tmp/coordinator.redb"
            [cluster]
            id = 0
            listen = "10.0.0.1:7442"
            log = "/tmp/coordinator.redb"
            "#,
        )
        .unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|p| p.key).collect();
        for k in ["cluster.id", "cluster.log", "quic.listen"] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
        assert!(!keys.iter().any(|x| x == "http.listen"), "{keys:?}");
    }

    #[test]
    fn a_witness_config_names_each_problem() {
        let cfg: WitnessConfig = parse(
            r#"
            [tls]
            ca = "/nonexistent/ca.crt"
            cert = "/nonexistent/c.crt"
            key = "/nonexistent/c.key"
            [witness]
            id = 0
            listen = "10.0.0.3:7442"
            log = "/nonexistent/dir/raft.redb"
            store = "/tmp/records.redb"
            "#,
        )
        .unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.iter().any(|x| x == "witness.id"), "{keys:?}");
        // A directory the witness creates when it starts: a note.
        assert!(!keys.iter().any(|x| x == "witness.log"), "{keys:?}");
        let notes: Vec<_> = cfg.notes().into_iter().map(|p| p.key).collect();
        assert_eq!(notes, ["witness.log"]);
        assert!(parse::<WitnessConfig>("[witness]\nid = 1\nsurprise = 2\n").is_err());

        // A witness's CA key (to renew its own certificate) is checked like a coordinator's.
        let with_key: WitnessConfig = parse(
            r#"
            [tls]
            ca = "/nonexistent/ca.crt"
            cert = "/nonexistent/c.crt"
            key = "/nonexistent/c.key"
            [witness]
            id = 3
            listen = "10.0.0.3:7442"
            log = "/tmp/raft.redb"
            store = "/tmp/records.redb"
            [enrollment]
            ca_key = "/nonexistent/ca.key"
            "#,
        )
        .unwrap();
        let keys: Vec<_> = with_key.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.iter().any(|k| k == "tls.ca"), "{keys:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let cfg: CoordinatorConfig = parse(
            r#"
            [tls]
            ca = "/nonexistent/ca.crt"
            cert = "/nonexistent/c.crt"
            key = "/nonexistent/c.key"
            [store]
            path = "/nonexistent/dir/coordinator.redb"
            [http]
            listen = "127.0.0.1:7441"
            names = ["coord.example.org", "evil.example/x", "10.0.0.1"]
            [heartbeat]
            interval = "2s"
            timeout = "3s"
            "#,
        )
        .unwrap();
        let keys: Vec<_> = cfg
            .validate()
            .into_iter()
            .map(|p| p.reason.clone() + "|" + &p.key)
            .collect();
        assert!(
            keys.iter().any(|k| k.ends_with("|heartbeat.timeout")),
            "{keys:?}"
        );
        assert!(
            !keys.iter().any(|k| k.ends_with("|store.path")),
            "a state directory the service creates is not a problem: {keys:?}"
        );
        let notes: Vec<_> = cfg.notes().into_iter().map(|p| p.key).collect();
        assert_eq!(notes, ["store.path"]);
        assert!(keys.iter().any(|k| k.contains("tls.ca")), "{keys:?}");
        assert!(
            keys.iter()
                .any(|k| k.ends_with("|http.names[1]") && k.contains("evil.example/x")),
            "{keys:?}"
        );
        assert!(
            keys.iter().any(|k| k.ends_with("|http.names[2]")),
            "{keys:?}"
        );
        assert!(
            !keys.iter().any(|k| k.ends_with("|http.names[0]")),
            "{keys:?}"
        );
    }

    #[test]
    fn durations_out_of_range_are_refused_naming_the_key_instead_of_overflowing() {
        let cfg: CoordinatorConfig = parse(
            r#"
            [tls]
            ca = "/x/ca.crt"
            cert = "/x/c.crt"
            key = "/x/c.key"
            [store]
            path = "/tmp/c.redb"
            [heartbeat]
            interval = "1s"
            timeout = "300000000000y"
            "#,
        )
        .unwrap();
        let p: Vec<_> = cfg
            .validate()
            .into_iter()
            .filter(|p| p.key == "heartbeat.timeout")
            .collect();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].reason.contains("outside"), "{p:?}");
    }

    #[test]
    fn a_failover_that_could_outrun_the_fence_is_refused_naming_both_keys() {
        let cfg: CoordinatorConfig = parse(
            r#"
            [tls]
            ca = "/x/ca.crt"
            cert = "/x/c.crt"
            key = "/x/c.key"
            [store]
            path = "/tmp/c.redb"
            [heartbeat]
            interval = "1s"
            timeout = "5s"
            [failover]
            fence_after = "15s"
            failover_after = "20s"
            "#,
        )
        .unwrap();
        let p: Vec<_> = cfg
            .validate()
            .into_iter()
            .filter(|p| p.key == "failover.failover_after")
            .collect();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].reason.contains("failover.fence_after") && p[0].reason.contains("21s 500ms"),
            "{p:?}"
        );
    }

    #[test]
    fn a_shadow_given_up_on_sooner_than_a_primary_is_refused_and_zero_turns_it_off() {
        let with = |value: &str| -> Vec<Problem> {
            let cfg: CoordinatorConfig = parse(&format!(
                "[tls]\nca = \"/x/ca.crt\"\ncert = \"/x/c.crt\"\nkey = \"/x/c.key\"\n[store]\npath = \"/tmp/c.redb\"\n[failover]\nfailover_after = \"10s\"\nreplace_shadow_after = \"{value}\"\n"
            ))
            .unwrap();
            cfg.validate()
                .into_iter()
                .filter(|p| p.key == "failover.replace_shadow_after")
                .collect()
        };
        let p = with("5s");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].reason.contains("failover.failover_after (10s)"),
            "{p:?}"
        );
        assert!(with("10s").is_empty());
        assert!(with("0s").is_empty());
        // Unset: 5 min, or failover_after when that is longer (a config that was valid
        // before the key existed stays valid).
        let section = |failover_after: u64| FailoverSection {
            failover_after: Duration::from_secs(failover_after),
            ..FailoverSection::default()
        };
        assert_eq!(section(10).replace_after(), Duration::from_secs(300));
        assert_eq!(section(600).replace_after(), Duration::from_secs(600));
    }

    #[test]
    fn unknown_key_refused() {
        let err = parse::<CoordinatorConfig>("[quic]\nlisten = \"0.0.0.0:1\"\nlisten_port = 3\n")
            .unwrap_err();
        assert_eq!(err.0, "quic.listen_port");
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;
    use understudy_common::config::parse;

    #[test]
    fn shipped_sample_parses() {
        let cfg: CoordinatorConfig =
            parse(include_str!("../../packaging/coordinator.toml")).unwrap();
        // Everything but the certificate files (not present here) is valid.
        let problems: Vec<_> = cfg
            .validate()
            .into_iter()
            .filter(|p| !p.reason.contains("tls."))
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn shipped_witness_sample_parses() {
        let cfg: WitnessConfig = parse(include_str!("../../packaging/witness.toml")).unwrap();
        assert_eq!(cfg.witness.id, 3);
        let problems: Vec<_> = cfg
            .validate()
            .into_iter()
            .filter(|p| {
                !p.reason.contains("tls.")
                    && !p.key.starts_with("witness.log")
                    && !p.key.starts_with("witness.store")
            })
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
    }
}
