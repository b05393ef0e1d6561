//! The witness hands its log on: a leader lost right after a write that only the witness
//! received (the other coordinator had not yet) still leaves the group a coordinator
//! leader, holding that write.

use std::time::Duration;

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
