//! End to end with real CRIU: what arrives on the shadow is checked before it is trusted.
//! A flipped byte in a staged file is caught by its hash and never committed; epochs and
//! orders from an older generation are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use understudy_common::epoch::Manifest;
use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::PROTOCOL_VERSION;
use understudy_common::tls::ca::{issue, Validity};
use understudy_common::tls::Role;
use understudy_common::transfer::{DataMessage, DataReply, MAX_DATA_FRAME, MAX_FILE_CHUNK};
use understudy_tests::cluster::Cluster;
use understudy_tests::copies::{counts_on, create_counter, one_copy_soon};
use understudy_tests::numbers;
use understudy_tests::wait::eventually;
use understudy_tests::{rawclient, require_criu, require_e2e};

const SLEEPER: &str = "import time\nx = bytearray(8 * 1024 * 1024)\nwhile True:\n    x[0] = (x[0] + 1) % 256\n    time.sleep(0.05)\n";

/// Workload `w` on host-a shadowed on host-b (whose agent has `env`), an epoch every 500 ms.
fn cluster_with_shadow_env(env: &[(&str, &str)]) -> Cluster {
    cluster_with(env, "500ms")
}

fn cluster_with(env: &[(&str, &str)], interval: &str) -> Cluster {
    let c = Cluster::new(&["host-a", "host-b"]);
    c.start_coordinator();
    c.start_agent("host-a");
    c.start_agent_env("host-b", env);
    c.wait_connected(2);
    c.create_workload(&[
        "w",
        "--host",
        "host-a",
        "--shadow",
        "host-b",
        "--interval",
        interval,
        "--",
        "/usr/bin/python3",
        "-c",
        SLEEPER,
    ]);
    c
}

/// A cluster whose shadow host-b has committed workload `w`'s first epoch.
fn shadowing_cluster() -> Cluster {
    let c = cluster_with_shadow_env(&[]);
    eventually("an epoch committed", Duration::from_secs(30), || {
        let w = c.workload("w")?;
        if w.epochs >= 1 {
            Ok(())
        } else {
            Err(format!("{:?}", w.unprotected))
        }
    });
    c
}

fn committed_epochs(c: &Cluster) -> Vec<std::path::PathBuf> {
    let dir = c.host_dir("host-b").join("data/workloads/w/shadow");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// An epoch of workload `w` with these memory image files and no data.
fn manifest(
    generation: u64,
    epoch: u64,
    files: Vec<understudy_common::epoch::FileEntry>,
) -> Manifest {
    Manifest {
        workload: "w".into(),
        generation,
        epoch,
        taken_unix_ms: 0,
        stdio_key: None,
        files,
        data: vec![],
        seal: None,
    }
}

/// Offers `manifest` to `to`'s data plane by hand, as host `from` (with a certificate of
/// its own), and returns the answer.
fn offer(c: &Cluster, from: &str, to: &str, manifest: Manifest) -> DataReply {
    let cert = issue(c.ca(), from, Role::Agent, Validity::days_from_now(1)).unwrap();
    let addr = std::net::SocketAddr::from((c.host(to).addr, 7442));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = rawclient::open_data(addr, to, &cert, &c.ca().cert_pem)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let offer = DataMessage::Offer {
            manifest,
            base_epoch: None,
            final_epoch: false,
        };
        write_frame(&mut send, PROTOCOL_VERSION, &offer)
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            read_frame(&mut recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
        )
        .await
        .unwrap()
        .unwrap()
    })
}

#[test]
fn flipped_byte_in_a_staged_file_is_caught_refetched_and_never_committed() {
    require_e2e!();
    require_criu!();
    // Corrupt the first staged page image once: the shadow must notice and ask again.
    let c = cluster_with_shadow_env(&[("UNDERSTUDY_FAULT_CORRUPT_STAGED", "once:pages-")]);
    eventually("an epoch committed", Duration::from_secs(30), || {
        let w = c.workload("w")?;
        if w.epochs >= 2 {
            Ok(())
        } else {
            Err(format!("{} epochs, {:?}", w.epochs, w.unprotected))
        }
    });
    let log = c.log("host-b");
    assert!(
        log.contains("fault injection: flipped a byte"),
        "fault never injected"
    );
    assert!(
        log.contains("staged file refused"),
        "flip not detected:\n{log}"
    );
    assert!(
        c.log("host-a").contains("resending whole"),
        "no whole resend"
    );
    // Every committed epoch matches its manifest byte for byte.
    let epochs = committed_epochs(&c);
    assert!(!epochs.is_empty());
    for dir in epochs {
        Manifest::read_from(&dir).unwrap().verify_dir(&dir).unwrap();
    }
}

#[test]
fn persistent_corruption_refuses_the_epoch_and_nothing_is_committed_or_restorable() {
    require_e2e!();
    require_criu!();
    let c = cluster_with_shadow_env(&[("UNDERSTUDY_FAULT_CORRUPT_STAGED", "pages-")]);
    let w = eventually(
        "workload reported unprotected",
        Duration::from_secs(30),
        || {
            let w = c.workload("w")?;
            match &w.unprotected {
                Some(why) if why.contains("BLAKE3 mismatch") => Ok(w),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert_eq!(w.epochs, 0);
    assert!(
        committed_epochs(&c).is_empty(),
        "a corrupt epoch was committed"
    );
    let out = c.cli(&["migrate", "w"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no committed epoch"), "{err}");
    // The workload was never disturbed.
    assert_eq!(c.workload("w").unwrap().primary, "host-a");
}

#[test]
fn epoch_from_a_stale_generation_is_refused_naming_both_generations() {
    require_e2e!();
    require_criu!();
    let c = shadowing_cluster();
    let out = c.cli(&["migrate", "w"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = c.workload("w").unwrap();
    assert_eq!((w.primary.as_str(), w.generation), ("host-b", 2));
    assert_eq!(w.shadow.as_deref(), Some("host-a"));

    // By hand, as the current primary (host-b) but with generation 1, offer an epoch to
    // the new shadow host-a.
    let reply = offer(&c, "host-b", "host-a", manifest(1, 1000, vec![]));
    match reply {
        DataReply::Refused { reason } => {
            assert!(
                reason.contains("stale generation 1") && reason.contains("generation 2"),
                "{reason}"
            )
        }
        other => panic!("stale epoch accepted: {other:?}"),
    }
    assert!(!c
        .host_dir("host-a")
        .join("data/workloads/w/shadow/epoch-1000")
        .exists());
}

/// The shadow agent's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_primary_announcing_a_1_tib_memory_image_is_refused_and_the_shadow_allocates_nothing() {
    require_e2e!();
    require_criu!();
    let c = shadowing_cluster();
    let shadow = c.pid("host-b").unwrap();
    let before = rss_kib(shadow);

    // As the primary (host-a), under the current generation, offer an epoch whose memory
    // image announces 1 TiB.
    let image = understudy_common::epoch::FileEntry {
        name: "pages-1.img".into(),
        size: 1 << 40,
        blake3: [0; 32],
    };
    let reply = offer(&c, "host-a", "host-b", manifest(1, 1_000_000, vec![image]));
    match reply {
        DataReply::Refused { reason } => {
            assert!(
                reason.contains("1099511627776") && reason.contains("free"),
                "{reason}"
            )
        }
        other => panic!("a 1 TiB epoch accepted: {other:?}"),
    }
    let after = rss_kib(shadow);
    assert!(
        after < before + 64 * 1024,
        "the shadow agent grew from {before} KiB to {after} KiB"
    );
    assert!(!c
        .host_dir("host-b")
        .join("data/workloads/w/shadow/epoch-1000000")
        .exists());
    // The shadow goes on taking the real primary's epochs.
    let epochs = c.workload("w").unwrap().epochs;
    eventually("epochs go on", Duration::from_secs(30), || {
        let now = c.workload("w")?.epochs;
        if now >= epochs + 2 {
            Ok(())
        } else {
            Err(format!("{now} epochs"))
        }
    });
}

/// A process's resident anonymous memory (its heap: not the files it maps), KiB.
fn anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Samples `pid`'s anonymous memory every 5 ms until the returned flag is set; the
/// thread's result is the highest seen, KiB.
fn watch_anon(
    pid: u32,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(anon_kib(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    });
    (stop, t)
}

/// Offers epoch 2000000 of `w` to host-b by hand, as host-a, with one 256 MiB memory image
/// sent as `wire` (zstd) in `encoding` against `base_epoch`; returns host-b's answer and
/// the highest its agent's heap reached meanwhile, KiB, with where it started.
fn offer_bomb(
    c: &Cluster,
    encoding: understudy_common::transfer::Encoding,
    base_epoch: Option<u64>,
    wire: &[u8],
) -> (
    Result<DataReply, understudy_common::frame::FrameError>,
    u64,
    u64,
) {
    let shadow = c.pid("host-b").unwrap();
    let before = anon_kib(shadow);
    let (stop, watcher) = watch_anon(shadow);
    let reply = offer_file(c, encoding, base_epoch, wire, BOMB as u64);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = watcher.join().unwrap();
    eprintln!("{encoding:?} bomb: the shadow agent's heap {before} KiB before, {peak} KiB at most");
    (reply, peak, before)
}

/// Offers epoch 2000000 of `w` to host-b by hand, as host-a, with one memory image of
/// `size` bytes sent as `wire` (zstd) in `encoding` against `base_epoch`; host-b's answer.
fn offer_file(
    c: &Cluster,
    encoding: understudy_common::transfer::Encoding,
    base_epoch: Option<u64>,
    wire: &[u8],
    size: u64,
) -> Result<DataReply, understudy_common::frame::FrameError> {
    // Announced honestly (it fits on disk), with a wrong hash.
    let image = understudy_common::epoch::FileEntry {
        name: "pages-1.img".into(),
        size,
        blake3: [7; 32],
    };
    let cert = issue(c.ca(), "host-a", Role::Agent, Validity::days_from_now(1)).unwrap();
    let addr = std::net::SocketAddr::from((c.host("host-b").addr, 7442));
    let generation = c.workload("w").unwrap().generation;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = rawclient::open_data(addr, "host-b", &cert, &c.ca().cert_pem)
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let offer = DataMessage::Offer {
            manifest: manifest(generation, 2_000_000, vec![image]),
            base_epoch,
            final_epoch: false,
        };
        write_frame(&mut send, PROTOCOL_VERSION, &offer)
            .await
            .unwrap();
        let accepted: DataReply = read_frame(&mut recv, PROTOCOL_VERSION, MAX_DATA_FRAME)
            .await
            .unwrap();
        assert_eq!(
            accepted,
            DataReply::Accept {
                have_base: base_epoch.is_some()
            }
        );
        let file = DataMessage::File {
            name: "pages-1.img".into(),
            encoding,
        };
        write_frame(&mut send, PROTOCOL_VERSION, &file)
            .await
            .unwrap();
        // The shadow may be gone before all is sent (a test killing it).
        let mut sent = Ok(());
        for piece in wire.chunks(MAX_FILE_CHUNK as usize).chain([&[][..]]) {
            sent = send.write_all(&(piece.len() as u32).to_be_bytes()).await;
            if sent.is_ok() {
                sent = send.write_all(piece).await;
            }
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            let _ = write_frame(
                &mut send,
                PROTOCOL_VERSION,
                &DataMessage::Done { seal: None },
            )
            .await;
        }
        tokio::time::timeout(
            Duration::from_secs(60),
            read_frame::<_, DataReply>(&mut recv, PROTOCOL_VERSION, MAX_DATA_FRAME),
        )
        .await
        .unwrap()
    })
}

/// Size of the "compression bombs": 256 MiB of zeros compress to a few KiB, so a shadow
/// that decoded a file in memory would hold all of it at once.
const BOMB: usize = 256 << 20;

#[test]
fn a_whole_file_is_staged_as_it_arrives_and_a_compression_bomb_leaves_memory_flat() {
    require_e2e!();
    require_criu!();
    let c = shadowing_cluster();
    let wire = zstd::bulk::compress(&vec![0u8; BOMB], 3).unwrap();
    assert!(wire.len() < 1 << 20, "{} bytes", wire.len());
    let (reply, peak, before) = offer_bomb(
        &c,
        understudy_common::transfer::Encoding::Whole,
        None,
        &wire,
    );
    // The shadow never held the file in memory (its files, mapped to be hashed, are not
    // counted: they are the page cache's)...
    assert!(
        peak < before + 64 * 1024,
        "the shadow agent's heap peaked at {peak} KiB (from {before} KiB)"
    );
    // ...and did not commit it: it is asked for again (its hash is wrong), or refused
    // when the real primary's next epoch took the workload's staging first.
    assert!(
        matches!(
            reply,
            Ok(DataReply::Resend { .. }) | Ok(DataReply::Refused { .. })
        ),
        "{reply:?}"
    );
    assert!(!c
        .host_dir("host-b")
        .join("data/workloads/w/shadow/epoch-2000000")
        .exists());
}

#[test]
fn a_delta_is_applied_as_it_arrives_and_a_compression_bomb_in_one_leaves_memory_flat() {
    require_e2e!();
    require_criu!();
    // Epochs 15 s apart: the offer by hand has the shadow to itself between two.
    let c = cluster_with(&[], "15s");
    eventually("the first epoch committed", Duration::from_secs(40), || {
        committed_epochs(&c)
            .last()
            .cloned()
            .ok_or("none yet".to_owned())
    });
    let base = newest_committed(&c).unwrap();

    // A delta of one command: 256 MiB of new bytes (zeros), a few KiB on the wire.
    let mut raw = Vec::with_capacity(BOMB + 32);
    raw.extend_from_slice(&0x7273_0236_u32.to_be_bytes());
    raw.push(0x44);
    raw.extend_from_slice(&(BOMB as u64).to_be_bytes());
    raw.resize(raw.len() + BOMB, 0);
    raw.push(0x00);
    let wire = zstd::bulk::compress(&raw, 3).unwrap();
    drop(raw);
    assert!(wire.len() < 1 << 20, "{} bytes", wire.len());
    let (reply, peak, before) = offer_bomb(
        &c,
        understudy_common::transfer::Encoding::Delta,
        Some(base),
        &wire,
    );
    assert!(
        peak < before + 64 * 1024,
        "the shadow agent's heap peaked at {peak} KiB (from {before} KiB)"
    );
    // It was applied (the whole 256 MiB staged), found not to match, and asked for again.
    assert!(matches!(reply, Ok(DataReply::Resend { .. })), "{reply:?}");
    assert!(!c
        .host_dir("host-b")
        .join("data/workloads/w/shadow/epoch-2000000")
        .exists());
}

/// The newest epoch of `w` committed on host-b.
fn newest_committed(c: &Cluster) -> Option<u64> {
    committed_epochs(c)
        .iter()
        .filter_map(|p| epoch_number(p))
        .max()
}

fn epoch_number(dir: &std::path::Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("epoch-")?
        .parse()
        .ok()
}

/// zstd of a delta of one LITERAL of `size` zero bytes, made a megabyte at a time.
fn zero_literal_delta(size: u64) -> Vec<u8> {
    use std::io::Write;
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(&0x7273_0236_u32.to_be_bytes()).unwrap();
    z.write_all(&[0x44]).unwrap();
    z.write_all(&size.to_be_bytes()).unwrap();
    let mb = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        z.write_all(&mb).unwrap();
    }
    z.write_all(&[0x00]).unwrap();
    z.finish().unwrap()
}

#[test]
fn a_shadow_killed_while_applying_a_delta_restarts_on_its_last_epoch_and_the_workload_moves_intact()
{
    require_e2e!();
    require_criu!();
    const HOSTS: [&str; 2] = ["host-a", "host-b"];
    let c = Cluster::new(&HOSTS);
    c.start_coordinator();
    for h in HOSTS {
        c.start_agent(h);
    }
    c.wait_connected(2);
    create_counter(&c, "w", "host-a", "host-b", "15s");
    // Right after an epoch commits, so that the primary's next one (15 s later) does not
    // meet the delta offered by hand.
    let first = eventually("a first epoch committed", Duration::from_secs(40), || {
        newest_committed(&c).ok_or("none yet".to_owned())
    });
    let base = eventually("the next epoch committed", Duration::from_secs(40), || {
        newest_committed(&c)
            .filter(|n| *n > first)
            .ok_or("not yet".to_owned())
    });

    // A delta building a 1 GiB image: the shadow is killed when it has written 64 MiB.
    const SIZE: u64 = 1 << 30;
    let wire = zero_literal_delta(SIZE);
    let shadow = c.host_dir("host-b").join("data/workloads/w/shadow");
    let staged = shadow.join(".staging-2000000/pages-1.img");
    let reply = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            offer_file(
                &c,
                understudy_common::transfer::Encoding::Delta,
                Some(base),
                &wire,
                SIZE,
            )
        });
        let t = std::time::Instant::now();
        while std::fs::metadata(&staged).map_or(0, |m| m.len()) < 64 << 20 {
            assert!(
                !sender.is_finished(),
                "the offer ended before the shadow had written 64 MiB: {:?}",
                sender.join()
            );
            assert!(t.elapsed() < Duration::from_secs(60), "nothing staged");
            std::thread::sleep(Duration::from_millis(5));
        }
        c.kill("host-b");
        sender.join().unwrap()
    });
    assert!(reply.is_err(), "answered though killed: {reply:?}");
    assert!(staged.exists(), "the half-applied file is left by the kill");

    // Restarted, the shadow throws away the half-applied epoch and still holds its last
    // committed one, on which the primary's next epochs build.
    c.restart_agent("host-b", true);
    let left: Vec<_> = std::fs::read_dir(&shadow)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "still there once registered: {left:?}");
    assert!(
        c.log("host-b")
            .contains("discarded epochs an earlier run was receiving"),
        "the restarted agent says what it threw away"
    );
    assert!(
        newest_committed(&c) >= Some(base),
        "{:?}",
        committed_epochs(&c)
    );
    eventually(
        "an epoch committed after the restart",
        Duration::from_secs(60),
        || {
            newest_committed(&c)
                .filter(|n| *n > base)
                .ok_or(format!("{:?}", committed_epochs(&c)))
        },
    );

    // The workload moves there with its state and runs once.
    let out = c.cli(&["migrate", "w"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last_on_a = *numbers(&c.output_log("host-a", "w")).last().unwrap();
    assert_eq!(one_copy_soon(&c, &HOSTS, "w"), "host-b");
    let on_b = counts_on(&c, "host-b", "w");
    assert!(
        on_b[0] + 1 >= last_on_a,
        "host-b started at {} but host-a had logged {last_on_a}",
        on_b[0]
    );
}
