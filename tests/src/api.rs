//! Raw HTTPS to the coordinators' operator API, for what the CLI does not send: single
//! timed requests in the benchmarks, long polls, hostile bodies. Each request is one TLS
//! connection with the client certificate of a role (or none) from the cluster's client
//! files.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use understudy_common::tls::https::https_client_config;
use understudy_common::tls::Role;

/// A client of the operator API with one identity.
#[derive(Clone, Debug)]
pub struct ApiClient {
    config: Arc<rustls::ClientConfig>,
}

impl ApiClient {
    /// A client trusting the CA in `dir/ca.crt` and presenting `dir/ROLE.crt` (none when
    /// `role` is `None`).
    pub fn new(dir: &Path, role: Option<Role>) -> Self {
        Self::checking(
            dir,
            role,
            Role::Coordinator,
            understudy_common::tls::COORDINATOR_SAN,
        )
    }

    /// Like [`ApiClient::new`], for a server whose certificate is of `server_role` for
    /// `server_name` (an agent's `/metrics` over HTTPS).
    pub fn checking(dir: &Path, role: Option<Role>, server_role: Role, server_name: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let identity = role.map(|r| {
            let cert = std::fs::read(dir.join(format!("{r}.crt"))).unwrap();
            let key = std::fs::read(dir.join(format!("{r}.key"))).unwrap();
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            (chain, PrivateKeyDer::from_pem_slice(&key).unwrap())
        });
        ApiClient {
            config: https_client_config(roots, identity, server_role, server_name).unwrap(),
        }
    }

    /// A TLS connection to the API at `addr`.
    pub fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
        let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        Ok(StreamOwned::new(conn, tcp))
    }

    /// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) and returns the
    /// whole answer.
    pub fn exchange(&self, addr: SocketAddr, request: &[u8]) -> Result<String, String> {
        let mut s = self.connect(addr, Duration::from_secs(2))?;
        s.write_all(request).map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => resp.extend_from_slice(&buf[..n]),
                // A server that closes without TLS close_notify after its answer.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof && !resp.is_empty() => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(String::from_utf8_lossy(&resp).into_owned())
    }

    /// `method path` with `body` (JSON); the status and the answer's body.
    pub fn send(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = self.exchange(addr, req.as_bytes())?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {resp:?}"))?;
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.to_owned()))
    }

    /// GET `path`; the body of a 200 answer.
    pub fn get(&self, addr: SocketAddr, path: &str) -> Result<String, String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let resp = self.exchange(addr, req.as_bytes())?;
        let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head.lines().next().unwrap_or_default().to_owned());
        }
        Ok(body.to_owned())
    }
}
