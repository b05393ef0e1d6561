//! A workload that greets: a Python server holding some memory that it keeps dirtying,
//! answering `hello\n` to every connection, and the client check that it answered.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

/// The server, for `python3 -c GREETER MIB PORT [marker…]`: holds `MIB` MiB of random
/// memory, dirties a page of it every 10 ms, greets every connection on `PORT`. Like any
/// real server it outlives a connection that fails: an epoch dumped while a client was
/// being greeted restores that connection on another host, where its peer is gone. (In a
/// CI run a failover test's restored greeter exited at once, status 1, on every restore of
/// one epoch — an unguarded socket error is the likely reason; its output was not kept,
/// and `failover.rs` now prints it when a failover does not come up.)
pub const GREETER: &str = r#"
import os, socket, sys, threading, time
blob = bytearray(os.urandom(int(sys.argv[1]) << 20))
def dirty():
    i = 0
    while blob:
        blob[(i * 4096) % len(blob)] = i % 256
        i += 1
        time.sleep(0.01)
threading.Thread(target=dirty, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(16)
while True:
    try:
        c, _ = s.accept()
    except OSError:
        time.sleep(0.01)
        continue
    try:
        c.sendall(b"hello\n")
    except OSError:
        pass
    finally:
        c.close()
"#;

/// Whether the greeter at `addr` connected and greeted within `within` (each).
pub fn answers(addr: SocketAddr, within: Duration) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, within) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(within));
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).is_ok() && &buf == b"hello\n"
}
