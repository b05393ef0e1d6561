//! The local socket a supervisor answers on: an abstract unix socket named after its
//! workload (in the host's network namespace, so only processes of this host reach it; it is
//! dumped and restored with the tree). One request per connection: a length-prefixed value
//! of the shared codec, answered the same way.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use understudy_common::codec;

/// Largest request or answer accepted.
const MAX_MESSAGE: usize = 64 * 1024;

/// The abstract socket name of `workload`'s supervisor.
pub fn socket_name(workload: &str) -> String {
    format!("understudy-supervisor/{workload}")
}

fn address(workload: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(socket_name(workload).as_bytes())
}

/// What the agent asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// How the service is doing.
    Status,
    /// The coordinator renewed the workload's lease for this long from now (`None`: run
    /// without one); answered with the status.
    Renew {
        /// The lease, milliseconds.
        valid_ms: Option<u64>,
    },
}

/// How the service is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Host pid of the supervisor (process 1 of the namespace).
    pub supervisor_pid: i32,
    /// The service's pid as the supervisor sees it (inside the namespace).
    pub service_pid: i32,
    /// The user it runs as.
    pub user: String,
    /// How it ended, once it has.
    pub exit: Option<String>,
    /// Output lost to an unwritable log since the supervisor started: bytes, lines.
    pub dropped: (u64, u64),
    /// Whether the tree is frozen because its lease ran out.
    pub frozen: bool,
    /// Lease left, milliseconds, if one applies.
    pub lease_ms: Option<u64>,
}

/// Listens on `workload`'s socket (non-blocking).
pub fn listen(workload: &str) -> std::io::Result<UnixListener> {
    let l = UnixListener::bind_addr(&address(workload)?)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn write_message<T: Serialize>(s: &mut UnixStream, value: &T) -> Result<(), String> {
    let body = codec::encode(value).map_err(|e| e.to_string())?;
    let len = u32::try_from(body.len()).map_err(|_| "message too large".to_string())?;
    s.write_all(&len.to_le_bytes())
        .and_then(|()| s.write_all(&body))
        .map_err(|e| e.to_string())
}

fn read_message<T: for<'de> Deserialize<'de>>(s: &mut UnixStream) -> Result<T, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(format!("{len} bytes exceed the cap of {MAX_MESSAGE}"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    codec::decode(&body, MAX_MESSAGE).map_err(|e| e.to_string())
}

/// Answers one connection (the supervisor's side), within a second.
pub fn answer(mut conn: UnixStream, status: impl FnOnce(Request) -> Status) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    if let Ok(req) = read_message::<Request>(&mut conn) {
        let _ = write_message(&mut conn, &status(req));
    }
}

/// Asks `workload`'s supervisor on this host (blocking, at most `timeout`).
pub fn ask(workload: &str, req: &Request, timeout: Duration) -> Result<Status, String> {
    let mut s = UnixStream::connect_addr(&address(workload).map_err(|e| e.to_string())?)
        .map_err(|e| format!("supervisor of {workload:?}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write_message(&mut s, req)?;
    read_message(&mut s)
}
