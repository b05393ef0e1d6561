//! A group leader's writes commit while every thread of the coordinator's runtime is busy
//! waiting for the lock the writer holds (request handlers queue on the state lock while a
//! write commits). In process: one real member (QUIC peer endpoint, redb log and store) led
//! by itself, its store written through the group exactly as the coordinator writes it.
//! Before Raft had a runtime of its own, this froze the leader for good (seen in CI as a
//! leader whose log went silent and whose API stopped answering).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use understudy_common::tls::ca::{create_ca, issue, Validity};
use understudy_common::tls::Role;
use understudy_coordinator::config::{FailoverSection, HeartbeatSection};
use understudy_coordinator::events::Event;
use understudy_coordinator::raft::node::{Node, NodeSettings};
use understudy_coordinator::raft::Member;
use understudy_coordinator::server::{group, Shared};
use understudy_coordinator::store::Store;
use understudy_tests::rawclient::loaded_tls;

fn event(seq: u64, message: &str) -> Event {
    Event {
        seq,
        unix_ms: 0,
        kind: "test".into(),
        host: None,
        workload: None,
        message: message.into(),
        inputs: Vec::new(),
    }
}

/// A free UDP port on the loopback.
fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

#[test]
fn a_write_commits_while_every_runtime_thread_waits_for_the_writers_lock() {
    let dir = tempfile::tempdir().unwrap();
    let ca = create_ca(Validity::days_from_now(1)).unwrap();
    let cert = issue(&ca, "coord", Role::Coordinator, Validity::days_from_now(1)).unwrap();
    let tls = loaded_tls(&cert, &ca.cert_pem);
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // As few threads as a small VM's coordinator would have.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
    let me = Member {
        raft: listen.to_string(),
        quic: None,
        http: None,
    };
    let log = dir.path().join("cluster.log");
    let (group, _leading) = rt.block_on(async {
        let node = Node::start(
            NodeSettings {
                id: 1,
                listen,
                me: me.clone(),
                log: &log,
                elect: true,
            },
            &tls,
            store.clone(),
        )
        .await
        .unwrap();
        node.raft
            .initialize(BTreeMap::from([(1, me)]))
            .await
            .unwrap();
        let hb = HeartbeatSection::default();
        let f = FailoverSection::default();
        let build = move |store: Arc<Store>| -> Result<Arc<Shared>, String> {
            let loaded = store.load().map_err(|e| e.to_string())?;
            Ok(Arc::new(Shared::new(
                store,
                loaded,
                hb.interval,
                hb.timeout,
                understudy_coordinator::workloads::failover::Settings {
                    mode: f.mode,
                    fence_after: f.fence_after,
                    failover_after: f.failover_after,
                    replace_shadow_after: f.replace_after(),
                },
                Default::default(),
            )))
        };
        group::start(node, store.clone(), build, |_, _| {})
    });
    let _ = group;

    // Wait until this member leads and its writes are taken.
    let start = Instant::now();
    let mut seq = 1;
    loop {
        let s = store.clone();
        let r = rt.block_on(async move {
            tokio::task::spawn_blocking(move || s.append_event(&event(seq, "first")))
                .await
                .unwrap()
        });
        if r.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the member never took a write: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        seq += 1;
    }

    // One task holds the lock while it writes; more tasks than the runtime has threads
    // wait for that lock, blocking every thread.
    let lock = Arc::new(Mutex::new(()));
    let (done_tx, done_rx) = mpsc::channel();
    let (held_tx, held_rx) = mpsc::channel();
    {
        let lock = lock.clone();
        let store = store.clone();
        rt.spawn(async move {
            let _guard = lock.lock().unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let r = tokio::task::block_in_place(|| store.append_event(&event(seq + 1, "held")));
            done_tx.send(r.map_err(|e| e.to_string())).unwrap();
        });
    }
    held_rx.recv().unwrap();
    for _ in 0..4 {
        let lock = lock.clone();
        rt.spawn(async move {
            let _guard = lock.lock().unwrap();
        });
    }
    let outcome = done_rx.recv_timeout(Duration::from_secs(10));
    // A frozen runtime must not hang the test on its way out.
    rt.shutdown_background();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the write under the lock failed: {e}"),
        Err(_) => panic!("the write under the lock did not commit within 10 s: the leader froze"),
    }
    let events = store.load().unwrap().events;
    assert!(
        events.iter().any(|e| e.message == "held"),
        "the committed write is in the store: {events:?}"
    );
}
