//! Post-copy against the real CRIU: a lazy dump serves its memory to a `criu lazy-pages`
//! daemon feeding a lazy restore in another PID namespace (the original is still there,
//! frozen, holding its pids), and a lazy dump whose pages are never taken fails with the
//! tree fenced by a `SIGSTOP` sent at `post-dump`, not running on.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{alive, criu_or_skip, Counter};
use criu_sys::{DumpOptions, PageServer};

/// Without CAP_SYS_RESOURCE, CRIU's page server cannot grow the pipes it serves from past
/// `fs.pipe-max-size` (1 MiB by default; it needs 4 MiB): raise it, as a host running
/// post-copy moves without that capability must.
fn pipe_max_size_for_lazy_pages() {
    const NEEDED: u64 = 4 << 20;
    let path = "/proc/sys/fs/pipe-max-size";
    let now: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if now < NEEDED {
        std::fs::write(path, NEEDED.to_string()).expect("raise fs.pipe-max-size");
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Closes `stream` with a reset rather than a FIN (`SO_LINGER` of zero).
fn reset(stream: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a valid `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(stream);
}

/// Connects to the page server on `port` once it listens: CRIU opens it only after the
/// `post-dump` notification. (Connecting at once could be refused; the test then gave up
/// while CRIU, still holding the tree, waited for a client forever.)
fn connect_when_listening(port: u16) -> std::net::TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                assert!(
                    Instant::now() < deadline,
                    "the page server did not listen on {port} within 20 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("connect to the page server on {port}: {e}"),
        }
    }
}

fn state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
        .and_then(|r| r.chars().next())
        .unwrap_or('?')
}

/// Starts a lazy dump of `pid` on a thread; returns when CRIU has written the images (and
/// the tree was sent `SIGSTOP`), with the dump's result still to come.
fn lazy_dump(
    criu: criu_sys::Criu,
    pid: i32,
    images: std::path::PathBuf,
    port: u16,
) -> std::thread::JoinHandle<Result<(), criu_sys::CriuError>> {
    let (tx, rx) = mpsc::channel();
    let dump = std::thread::spawn(move || {
        let opts = DumpOptions {
            pid,
            images_dir: images,
            lazy_pages: Some(PageServer {
                address: "127.0.0.1".into(),
                port,
            }),
            ..DumpOptions::default()
        };
        criu.dump_with_notify(&opts, &mut |action| {
            if action == "post-dump" {
                // SAFETY: kill(2) on a pid we started; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                let _ = tx.send(());
            }
            true
        })
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("CRIU to write the images and notify post-dump");
    dump
}

/// A temporary directory, an empty images directory in it, a counter counting there, and
/// a free port for the page server; the host allowed to serve lazy pages.
fn counting() -> (tempfile::TempDir, std::path::PathBuf, Counter, u16) {
    pipe_max_size_for_lazy_pages();
    let tmp = tempfile::tempdir().expect("tempdir");
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).expect("images dir");
    let counter = Counter::start(tmp.path());
    (tmp, images, counter, free_port())
}

#[test]
fn lazy_restore_in_another_pid_namespace_counts_on_from_the_dump() {
    let Some(criu) = criu_or_skip() else { return };
    let (tmp, images, counter, port) = counting();
    let pid = counter.pid();
    let dump = lazy_dump(criu.clone(), pid, images.clone(), port);
    let at_dump = counter.read();
    let pages: u64 = std::fs::read_dir(&images)
        .expect("images")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!("lazy dump: count {at_dump}, {pages} bytes of pages in the images");

    // The target's copy of the images; the restore runs where the original's pids are free.
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).expect("target dir");
    for e in std::fs::read_dir(&images).expect("images").flatten() {
        if !e.file_name().to_string_lossy().ends_with(".log") {
            std::fs::copy(e.path(), target.join(e.file_name())).expect("copy image");
        }
    }
    let daemon = criu.lazy_pages_daemon(
        &target,
        &PageServer {
            address: "127.0.0.1".into(),
            port,
        },
        "lazy-pages.log",
    );
    let quote = |c: &Command| {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let bin = criu.service_binary().display().to_string();
    let t = target.display();
    let script = format!(
        "{daemon} & sleep 0.3; '{bin}' restore -D '{t}' -W '{t}' --lazy-pages -d -o restore.log -v4 || exit 9; wait; sleep 60",
        daemon = quote(&daemon),
    );
    let mut ns = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare");
    let outcome = dump.join().expect("dump thread");
    let restored = std::fs::read_to_string(target.join("restore.log")).unwrap_or_default();
    let lazy_log = std::fs::read_to_string(target.join("lazy-pages.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = counter.read();
    while seen <= at_dump + 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = counter.read();
    }
    let _ = ns.kill();
    let _ = ns.wait();
    outcome.unwrap_or_else(|e| {
        panic!(
            "lazy dump: {e}\nrestore log tail: {restored:.2000}\nlazy-pages log: {lazy_log:.2000}"
        )
    });
    assert!(
        !alive(pid),
        "the original must be gone once its pages were taken"
    );
    assert!(
        seen > at_dump + 20,
        "the restored copy did not count on from {at_dump} (at {seen})"
    );
}

#[test]
fn lazy_dump_whose_pages_are_not_taken_fails_and_the_fenced_tree_stays_stopped() {
    let Some(criu) = criu_or_skip() else { return };
    let (_tmp, images, counter, port) = counting();
    let pid = counter.pid();
    let dump = lazy_dump(criu, pid, images, port);
    // A client whose connection is reset before it took anything: the transfer fails. (A
    // clean close counts as the end of the transfer for CRIU, which then kills the tree.)
    let client = connect_when_listening(port);
    reset(client);
    let err = dump
        .join()
        .expect("dump thread")
        .expect_err("an abandoned transfer must fail the dump");
    println!("{err}");
    assert!(alive(pid), "the original must still exist");
    let before = counter.read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state(pid),
        'T',
        "the fence (SIGSTOP) must hold the original"
    );
    assert_eq!(
        counter.read(),
        before,
        "the fenced original went on counting"
    );
    // SAFETY: kill(2) on a pid we started.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    counter.wait_for(|n| n > before + 5, "the original to count on after SIGCONT");
}
