//! A loopback HTTP server for the CLI's unit tests: it answers each connection with the
//! next of a list of canned answers, then stops accepting.

/// Serves raw HTTP answers on a loopback port, one connection each, in order; returns its
/// base URL. Status 0 reads the request and closes the connection without an answer (a
/// coordinator killed while it was asked). Once the answers run out, connections are
/// refused.
pub(super) fn serve<B: AsRef<str> + Send + 'static>(answers: Vec<(u16, B)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            if status == 0 {
                continue;
            }
            let body = body.as_ref();
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut conn, reply.as_bytes());
        }
    });
    format!("http://{addr}")
}
