//! The witness hands its log on: a leader lost right after a write that only the witness
//! received (the other coordinator had not yet) still leaves the group a coordinator
//! leader, holding that write. A witness given the CA key renews its own certificate.

use std::time::Duration;

use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::Role;
use understudy_tests::cluster::group::MEMBERS;
use understudy_tests::cluster::Cluster;
use understudy_tests::require_e2e;
use understudy_tests::wait::eventually;

#[test]
fn a_leader_lost_before_the_other_coordinator_had_its_last_writes_still_leaves_a_leader_with_them()
{
    require_e2e!();
    let c = Cluster::started_group(&["host-a"]);
    let leader = c.leader().unwrap();
    let other = if leader == "coord" { "coord2" } else { "coord" };
    let id = |name: &str| MEMBERS.iter().find(|(n, _)| *n == name).unwrap().1;

    // The other coordinator leaves the leader's entries unanswered (a fault hook): from
    // now on the group commits with the leader and the witness alone.
    assert_eq!(c.stop(other), Some(0));
    c.start_member_env(
        other,
        &[(
            "UNDERSTUDY_FAULTS",
            &format!("refuse-entries-from:{}", id(leader)),
        )],
    );
    let out = c.cli(&["host", "cordon", "host-a"]);
    assert!(out.status.success(), "{out:?}");
    let behind = eventually(
        "the other coordinator behind",
        Duration::from_secs(10),
        || {
            let s = c.cluster_status()?;
            let lag = s
                .members
                .iter()
                .find(|m| m.id == id(other))
                .and_then(|m| m.lag);
            match lag {
                Some(n) if n > 0 => Ok(n),
                other => Err(format!("lag {other:?}")),
            }
        },
    );

    // The leader is lost: only the witness holds the cordon.
    c.kill(leader);
    let now = c.wait_leader(&[leader, "witness"], Duration::from_secs(20));
    assert_eq!(
        now, other,
        "{behind} entries behind, the other coordinator leads"
    );
    let admin: serde_json::Value =
        serde_json::from_str(&c.api_get(other, "/v1/hosts/host-a/admin").unwrap()).unwrap();
    assert_eq!(
        admin["cordoned"], true,
        "the write the witness held: {admin}"
    );

    // And the group goes on: the lost coordinator comes back and follows.
    c.start_member(leader);
    eventually("the group whole again", Duration::from_secs(20), || {
        let s = c.cluster_status()?;
        if s.leader == Some(id(other))
            && s.members
                .iter()
                .all(|m| m.lag == Some(0) || Some(m.id) == s.leader)
        {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
}

#[test]
fn a_witness_with_the_ca_key_renews_its_certificate_and_the_group_elects_with_the_new_one() {
    require_e2e!();
    let c = Cluster::started_group(&["host-a"]);
    let leader = c.leader().unwrap();
    let other = if leader == "coord" { "coord2" } else { "coord" };

    // The witness, restarted with the CA key and a certificate that expires in 20 s with
    // two thirds of its lifetime behind it, renews at once.
    assert_eq!(c.stop("witness"), Some(0));
    let mut v = Validity::from_now(Duration::from_secs(20));
    v.not_before -= Duration::from_secs(300);
    let expires = v.not_after;
    let due = issue(c.ca(), "witness", Role::Coordinator, v).unwrap();
    c.install_tls("witness", &due, &c.ca().cert_pem);
    let d = c.host_dir("witness");
    std::fs::write(d.join("ca.key"), &c.ca().key_pem).unwrap();
    let cfg = d.join("witness.toml");
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str(&format!(
        "[enrollment]\nca_key = \"{}\"\ncert_lifetime = \"1h\"\n",
        d.join("ca.key").display()
    ));
    std::fs::write(&cfg, toml).unwrap();
    c.start_member("witness");
    eventually("the witness renewed", Duration::from_secs(20), || {
        let pem = std::fs::read_to_string(d.join("host.crt")).map_err(|e| e.to_string())?;
        if pem != due.cert_pem && c.log("witness").contains("certificate was renewed") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });

    // Once the old certificate has expired, the other coordinator restarts (new handshakes
    // with the witness) and the leader is lost: it can only be elected with the witness's
    // vote, over a connection the witness's new certificate made.
    let left = expires - time::OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_secs(1));
    assert_eq!(c.stop(other), Some(0));
    c.start_member(other);
    eventually("the group whole again", Duration::from_secs(20), || {
        let s = c.cluster_status()?;
        if s.members
            .iter()
            .all(|m| m.lag == Some(0) || Some(m.id) == s.leader)
        {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    c.kill(leader);
    let now = c.wait_leader(&[leader, "witness"], Duration::from_secs(30));
    assert_eq!(now, other);
    let out = c.cli(&["host", "cordon", "host-a"]);
    assert!(out.status.success(), "{out:?}");
}
