//! The operator API is HTTPS with client certificates of the cluster CA, and roles decide
//! who may do what: refusals are 401/403 (or a refused handshake), nothing is created by a
//! refused request, and every change and refusal is an audit event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use understudy_common::tls::ca::{create_ca, issue, Validity};
use understudy_common::tls::Role;
use understudy_coordinator::events::Event;
use understudy_tests::api::ApiClient;
use understudy_tests::cluster::{http_get, Cluster, HTTP_PORT, PLAIN_PORT};
use understudy_tests::require_e2e;

const HOSTS: [&str; 2] = ["host-a", "host-b"];

fn body(name: &str, user: Option<&str>) -> String {
    let user = user.map_or(String::new(), |u| format!(r#","user":"{u}""#));
    format!(
        r#"{{"spec":{{"name":"{name}","command":["/bin/sleep","600"],"interval_ms":3600000{user}}},"host":"host-a","shadow":"host-b"}}"#
    )
}

/// A coordinator and the agents of HOSTS, connected.
fn cluster() -> Cluster {
    let c = Cluster::new(&HOSTS);
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(HOSTS.len());
    c
}

fn audit_events(c: &Cluster) -> Vec<Event> {
    let all: Vec<Event> =
        serde_json::from_str(&c.api_get("coord", "/v1/events?limit=10000").unwrap()).unwrap();
    all.into_iter().filter(|e| e.kind == "audit").collect()
}

fn workload_names(c: &Cluster) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&c.api_get("coord", "/v1/workloads").unwrap()).unwrap();
    v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["spec"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Client files in `dir`: the cluster's CA (to trust the coordinator) and `cert` as `admin`.
fn client_files(dir: &Path, ca_pem: &str, cert: &understudy_common::tls::ca::PemPair) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.join("admin.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("admin.key"), &cert.key_pem).unwrap();
}

#[test]
fn only_certificates_of_the_cluster_ca_with_the_right_role_change_anything_and_all_is_audited() {
    require_e2e!();
    let c = cluster();
    let api = SocketAddr::from((c.host("coord").addr, HTTP_PORT));

    // Without a certificate: health answers, everything else is 401, nothing created.
    let anonymous = c.api_client(None);
    assert!(anonymous.get(api, "/v1/health").is_ok());
    let (status, answer) = anonymous
        .send(api, "POST", "/v1/workloads", &body("anon", Some("nobody")))
        .unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("client certificate"), "{answer}");
    assert_eq!(
        anonymous.send(api, "GET", "/v1/workloads", "").unwrap().0,
        401
    );

    // A viewer reads but may not create.
    let viewer = c.api_client(Some(Role::Viewer));
    assert!(viewer.get(api, "/v1/workloads").is_ok());
    let (status, answer) = viewer
        .send(
            api,
            "POST",
            "/v1/workloads",
            &body("viewed", Some("nobody")),
        )
        .unwrap();
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("operator"), "{answer}");

    // An operator creates a workload that runs as another user, but not one that runs
    // as root, written out or left unset.
    let operator = c.api_client(Some(Role::Operator));
    let (status, answer) = operator
        .send(api, "POST", "/v1/workloads", &body("op-root", None))
        .unwrap();
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("spec.user"), "{answer}");
    let (status, answer) = operator
        .send(
            api,
            "POST",
            "/v1/workloads",
            &body("op-root2", Some("root")),
        )
        .unwrap();
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = operator
        .send(
            api,
            "POST",
            "/v1/workloads",
            &body("op-nobody", Some("nobody")),
        )
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    // ... and may not restore a backup or take one.
    assert_eq!(operator.send(api, "GET", "/v1/backup", "").unwrap().0, 403);

    // An admin creates a root workload (with a secret in its environment).
    let admin = c.api_client(Some(Role::Admin));
    let with_env = body("admin-root", None).replacen(
        r#""interval_ms""#,
        r#""env":[["API_TOKEN","s3cret-value"]],"interval_ms""#,
        1,
    );
    let (status, answer) = admin.send(api, "POST", "/v1/workloads", &with_env).unwrap();
    assert_eq!(status, 201, "{answer}");
    // A viewer sees the environment's names, not its values; an operator sees them.
    for path in ["/v1/workloads", "/v1/workloads/admin-root"] {
        let seen = viewer.get(api, path).unwrap();
        assert!(
            seen.contains("API_TOKEN") && !seen.contains("s3cret-value"),
            "{seen}"
        );
        assert!(seen.contains("(redacted)"), "{seen}");
        let seen = operator.get(api, path).unwrap();
        assert!(seen.contains("s3cret-value"), "{seen}");
    }

    // A certificate of another CA, and an expired one of this CA: the handshake fails.
    let tmp = tempfile::tempdir().unwrap();
    let other_ca = create_ca(Validity::days_from_now(10)).unwrap();
    let foreign = issue(
        &other_ca,
        "mallory",
        Role::Admin,
        Validity::days_from_now(1),
    )
    .unwrap();
    client_files(&tmp.path().join("foreign"), &c.ca().cert_pem, &foreign);
    let foreign = ApiClient::new(&tmp.path().join("foreign"), Some(Role::Admin));
    assert!(foreign
        .send(
            api,
            "POST",
            "/v1/workloads",
            &body("foreign", Some("nobody"))
        )
        .is_err());
    std::thread::sleep(std::time::Duration::from_millis(1100)); // one audited refusal a second
    let now = time::OffsetDateTime::now_utc();
    let expired = issue(
        c.ca(),
        "old-admin",
        Role::Admin,
        Validity {
            not_before: now - time::Duration::days(3),
            not_after: now - time::Duration::days(1),
        },
    )
    .unwrap();
    client_files(&tmp.path().join("expired"), &c.ca().cert_pem, &expired);
    let expired = ApiClient::new(&tmp.path().join("expired"), Some(Role::Admin));
    assert!(expired
        .send(
            api,
            "POST",
            "/v1/workloads",
            &body("expired", Some("nobody"))
        )
        .is_err());

    // Nothing was created but what the operator and the admin were allowed to.
    let mut names = workload_names(&c);
    names.sort();
    assert_eq!(names, ["admin-root", "op-nobody"]);

    // Every refusal and change is in the audit log, naming who and the answer.
    let audit = audit_events(&c);
    let has = |needle: &[&str]| {
        audit
            .iter()
            .any(|e| needle.iter().all(|n| e.message.contains(n)))
    };
    let shown: Vec<_> = audit.iter().map(|e| e.message.clone()).collect();
    assert!(
        has(&["without a certificate", "POST /v1/workloads", "401"]),
        "{shown:#?}"
    );
    assert!(
        has(&["test-viewer (viewer)", "POST /v1/workloads", "403"]),
        "{shown:#?}"
    );
    assert!(
        has(&[
            "test-operator (operator)",
            "POST /v1/workloads",
            "403",
            "spec.user"
        ]),
        "{shown:#?}"
    );
    assert!(
        has(&["test-operator (operator)", "POST /v1/workloads", "201"]),
        "{shown:#?}"
    );
    assert!(
        has(&["test-admin (admin)", "POST /v1/workloads", "201"]),
        "{shown:#?}"
    );
    assert!(has(&["TLS handshake", "unknown_ca"]), "{shown:#?}");
    assert!(has(&["TLS handshake", "expired"]), "{shown:#?}");
    // Reads are not audited.
    assert!(!has(&["GET /v1/workloads: 200"]), "{shown:#?}");

    // The plain listener serves /metrics and /v1/health, nothing else.
    let plain = SocketAddr::from((c.host("coord").addr, PLAIN_PORT));
    assert!(http_get(plain, "/metrics").unwrap().contains("understudy_"));
    assert!(http_get(plain, "/v1/health").is_ok());
    let refused = http_get(plain, "/v1/workloads").unwrap_err();
    assert!(refused.contains("404"), "{refused}");

    // The CLI with a viewer's certificate: refused, naming the role it lacks.
    let mut cli = c.cli_command();
    c.as_role(&mut cli, Role::Viewer);
    let out = cli
        .args(["workload", "delete", "op-nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs role operator"), "{err}");
    // Without a CA to check the coordinator with: a config error naming what to give.
    let out = Command::new(understudy_tests::cluster::bin("understudy"))
        .args(["workload", "list"])
        .env("UNDERSTUDY_COORDINATOR", c.api())
        .env("HOME", tmp.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("UNDERSTUDY_CA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
}

#[test]
fn a_request_naming_another_host_announcing_a_large_body_or_nested_too_deep_is_refused() {
    require_e2e!();
    let c = Cluster::new(&[]);
    c.start_coordinator();
    c.wait_connected(0);
    let api = SocketAddr::from((c.host("coord").addr, HTTP_PORT));
    let admin = c.api_client(Some(Role::Admin));
    let status = |answer: &str| answer.split_whitespace().nth(1).map(str::to_owned);
    let create = body("rebound", Some("nobody"));
    let request = |host: &str| {
        format!(
            "POST /v1/workloads HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{create}",
            create.len()
        )
    };

    // A page whose own name was rebound to the coordinator's address sends its name.
    let answer = admin
        .exchange(api, request("attacker.example:7441").as_bytes())
        .unwrap();
    assert_eq!(status(&answer).as_deref(), Some("421"), "{answer}");
    assert!(answer.contains("[http] names"), "{answer}");
    // The coordinators' shared name is one of its names.
    let answer = admin
        .exchange(api, b"GET /v1/workloads HTTP/1.1\r\nHost: coordinator.understudy:7441\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(status(&answer).as_deref(), Some("200"), "{answer}");

    // A body announced larger than the limit is refused before a byte of it is read.
    let answer = admin
        .exchange(
            api,
            format!(
                "POST /v1/workloads HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                2 << 20
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(status(&answer).as_deref(), Some("413"), "{answer}");
    assert!(answer.contains(&(1usize << 20).to_string()), "{answer}");

    // JSON nested 100 000 deep (within the size limit) is refused as malformed, and the
    // coordinator goes on serving.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let answer = admin
        .exchange(
            api,
            format!(
                "POST /v1/workloads HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{deep}",
                deep.len()
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(
        matches!(status(&answer).as_deref(), Some("400" | "422")),
        "{}",
        &answer[..answer.len().min(400)]
    );
    assert!(
        admin.get(api, "/v1/health").is_ok(),
        "the API stopped serving"
    );

    assert!(workload_names(&c).is_empty(), "{:?}", workload_names(&c));
}

#[test]
fn a_secret_variable_reaches_the_workload_and_is_shown_to_nobody() {
    require_e2e!();
    let c = cluster();
    let marker = "understudy-test-secret-env";
    let mut cli = c.cli_command();
    c.as_role(&mut cli, Role::Operator);
    let out = cli
        .args([
            "workload",
            "create",
            "with-secret",
            "--host",
            "host-a",
            "--shadow",
            "host-b",
            "--user",
            "nobody",
            "--env",
            "MODE=plain-value",
            "--secret-env",
            "DB_PASSWORD=hunter2-secret",
            "--",
            "/bin/sh",
            "-c",
            "sleep 600",
            marker,
        ])
        .output()
        .unwrap();
    let shown =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");

    // The workload has it.
    let pid = understudy_tests::wait::eventually(
        "the workload runs",
        std::time::Duration::from_secs(10),
        || {
            c.processes("host-a", marker)
                .first()
                .copied()
                .ok_or_else(|| "not yet".to_owned())
        },
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"DB_PASSWORD=hunter2-secret"),
        "the workload's environment lacks its secret"
    );

    // Nobody sees its value, whatever the role; the other variable operators see.
    let api = SocketAddr::from((c.host("coord").addr, HTTP_PORT));
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let seen = c
            .api_client(Some(role))
            .get(api, "/v1/workloads/with-secret")
            .unwrap();
        assert!(
            seen.contains("DB_PASSWORD") && seen.contains("(secret)") && !seen.contains("hunter2"),
            "{role:?}: {seen}"
        );
        assert_eq!(
            seen.contains("plain-value"),
            role != Role::Viewer,
            "{role:?}: {seen}"
        );
    }
    // ... nor any log.
    for who in ["coord", "host-a", "host-b"] {
        assert!(
            !c.log(who).contains("hunter2"),
            "{who}'s log shows the secret"
        );
    }

    // A secret name that is not a variable of the environment is refused, naming it.
    let (status, answer) = c
        .api_client(Some(Role::Operator))
        .send(
            api,
            "POST",
            "/v1/workloads",
            &body("bad-secret", Some("nobody")).replacen(
                r#""interval_ms""#,
                r#""secret_env":["NOT_THERE"],"interval_ms""#,
                1,
            ),
        )
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("secret_env[0]") && answer.contains("NOT_THERE"),
        "{answer}"
    );
}

#[test]
fn a_revoked_persons_certificate_is_refused_even_after_a_restart_and_a_new_one_is_accepted() {
    require_e2e!();
    let c = Cluster::new(&HOSTS);
    c.start_coordinator();
    let api = SocketAddr::from((c.host("coord").addr, HTTP_PORT));
    // alice, an operator, with a certificate of her own (written where the test client
    // looks for an admin's: the role is the certificate's, not the file's).
    let alice_as = |cert: &understudy_common::tls::ca::PemPair| {
        let dir = c.client_dir().join("alice");
        client_files(&dir, &c.ca().cert_pem, cert);
        ApiClient::new(&dir, Some(Role::Admin))
    };
    let first = issue(c.ca(), "alice", Role::Operator, Validity::days_from_now(1)).unwrap();
    let alice = alice_as(&first);
    eventually_up(&alice, api);
    // Revoking is an admin's.
    let (status, answer) = alice
        .send(api, "POST", "/v1/certificates/alice/revoke", "{}")
        .unwrap();
    assert_eq!(status, 403, "{answer}");

    let out = c.cli(&["revoke", "alice"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("alice: certificates issued before"), "{said}");
    let refused = |alice: &ApiClient| {
        let (status, answer) = alice.send(api, "GET", "/v1/workloads", "").unwrap();
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("revoked by test-admin (admin)"), "{answer}");
        let (status, answer) = alice
            .send(api, "POST", "/v1/workloads", &body("after", Some("nobody")))
            .unwrap();
        assert_eq!(status, 401, "{answer}");
        assert!(!workload_names(&c).contains(&"after".to_owned()));
    };
    refused(&alice);
    // Other people are not affected, and the refusal and the revocation are in the log.
    assert!(c.api_get("coord", "/v1/workloads").is_ok());
    let events: Vec<Event> =
        serde_json::from_str(&c.api_get("coord", "/v1/events?limit=1000").unwrap()).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "revoke" && e.message.contains("certificates of alice")),
        "{events:#?}"
    );
    assert!(
        audit_events(&c).iter().any(|e| e
            .message
            .contains("alice (operator): GET /v1/workloads: 401")),
        "{:#?}",
        audit_events(&c)
    );

    // The revocation is a record of the store: it outlives a SIGKILL of the coordinator.
    c.kill("coord");
    c.start_coordinator();
    eventually_up(&c.api_client(Some(Role::Admin)), api);
    refused(&alice);

    // A certificate issued after the revocation (a second later: certificates count in
    // seconds) lets her back.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = issue(c.ca(), "alice", Role::Operator, Validity::days_from_now(1)).unwrap();
    let (status, answer) = alice_as(&second)
        .send(api, "GET", "/v1/workloads", "")
        .unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// Waits until the API at `api` answers `client`.
fn eventually_up(client: &ApiClient, api: SocketAddr) {
    understudy_tests::wait::eventually(
        "the API answering",
        std::time::Duration::from_secs(20),
        || client.get(api, "/v1/health").map(|_| ()),
    );
}

/// A viewer's certificate made due for renewal: issued (by its start) ten minutes ago,
/// valid two more minutes, so two thirds of its lifetime are behind it.
fn due_certificate(c: &Cluster, name: &str) -> understudy_common::tls::ca::PemPair {
    let mut v = Validity::from_now(std::time::Duration::from_secs(120));
    v.not_before -= std::time::Duration::from_secs(300);
    issue(c.ca(), name, Role::Viewer, v).unwrap()
}

/// The CLI with `dir`'s `ca.crt`, `client.crt` and `client.key`.
fn cli_with(c: &Cluster, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = c.cli_command();
    cmd.env("UNDERSTUDY_CA", dir.join("ca.crt"))
        .env("UNDERSTUDY_CERT", dir.join("client.crt"))
        .env("UNDERSTUDY_KEY", dir.join("client.key"));
    cmd.args(args).output().unwrap()
}

fn write_client(dir: &Path, ca_pem: &str, cert: &understudy_common::tls::ca::PemPair) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.join("client.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("client.key"), &cert.key_pem).unwrap();
}

fn identity_of(cert_pem: &str) -> understudy_common::tls::PeerIdentity {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    understudy_common::tls::identity::read_identity(&der).unwrap()
}

#[test]
fn the_cli_renews_its_certificate_two_thirds_through_its_lifetime_and_goes_on_with_it() {
    require_e2e!();
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::new(&HOSTS);
    c.enable_enrollment("1h");
    c.start_coordinator();
    let api = SocketAddr::from((c.host("coord").addr, HTTP_PORT));
    eventually_up(&c.api_client(Some(Role::Admin)), api);

    let dir = c.client_dir().join("bob");
    let old = due_certificate(&c, "bob");
    write_client(&dir, &c.ca().cert_pem, &old);
    let out = cli_with(&c, &dir, &["hosts"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("renewed the client certificate"), "{said}");
    // A new key and a certificate for it: the same name and role, valid for the
    // coordinator's configured lifetime.
    let cert = std::fs::read_to_string(dir.join("client.crt")).unwrap();
    let key = std::fs::read_to_string(dir.join("client.key")).unwrap();
    assert_ne!(key, old.key_pem, "the key was not replaced");
    let (was, now) = (identity_of(&old.cert_pem), identity_of(&cert));
    assert_eq!((now.name.as_str(), now.role), ("bob", Some(Role::Viewer)));
    assert!(now.not_after_unix > was.not_after_unix + 1800, "{now:?}");
    let mode = std::fs::metadata(dir.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.join("client.crt.next").exists() && !dir.join("client.key.next").exists());
    // The next invocation uses it, and has nothing to renew.
    let out = cli_with(&c, &dir, &["hosts"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("renewed"));
    assert_eq!(
        std::fs::read_to_string(dir.join("client.crt")).unwrap(),
        cert
    );
    let events: Vec<Event> =
        serde_json::from_str(&c.api_get("coord", "/v1/events?limit=1000").unwrap()).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "renew" && e.message.contains("bob renewed its viewer certificate")),
        "{events:#?}"
    );

    // A coordinator that does not sign: the CLI says so and goes on with the old one.
    let plain = Cluster::new(&HOSTS);
    plain.start_coordinator();
    let api = SocketAddr::from((plain.host("coord").addr, HTTP_PORT));
    eventually_up(&plain.api_client(Some(Role::Admin)), api);
    let dir = plain.client_dir().join("carol");
    let old = due_certificate(&plain, "carol");
    write_client(&dir, &plain.ca().cert_pem, &old);
    let out = cli_with(&plain, &dir, &["hosts"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains("was not renewed") && said.contains("[enrollment]"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("client.crt")).unwrap(),
        old.cert_pem
    );
}
