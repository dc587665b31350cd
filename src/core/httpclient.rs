//! A minimal blocking HTTP/1.1 client, plain or TLS, for CLI commands that
//! talk to a running role on this machine (`edgebox tsdb write`, `edgebox
//! tsdb query`) and for forwarding to an upstream. One request per
//! connection, `Connection: close`, bounded by timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

use crate::core::auth::AuthMode;
use crate::core::exit::ConfigProblem;
use crate::core::h1codec;
use crate::core::tls::{ClientTls, ServerTlsConfig, pinned_client};

/// A response: status code and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where a request goes: the socket address, the Host header, and TLS when
/// the URL is https.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    pub tls: Option<ClientTls>,
}

impl Endpoint {
    /// A plain-text endpoint named by its address. A listener on an
    /// unspecified address (0.0.0.0, ::) is reached through loopback.
    pub fn plain(addr: SocketAddr) -> Endpoint {
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        Endpoint { addr, host: addr.to_string(), tls: None }
    }

    /// The same endpoint over TLS.
    pub fn with_tls(self, tls: Option<ClientTls>) -> Endpoint {
        Endpoint { tls, ..self }
    }
}

/// A listener of this appliance as its config describes it, for the CLI:
/// the endpoint (TLS pinned to the configured certificate) and the headers
/// that authenticate to it. `section` names the config section in errors.
pub fn local(
    section: &str,
    listen: SocketAddr,
    auth: AuthMode,
    token_file: Option<&std::path::Path>,
    tls: Option<&ServerTlsConfig>,
) -> anyhow::Result<(Endpoint, Vec<(&'static str, String)>)> {
    let mut headers = Vec::new();
    if auth == AuthMode::Bearer {
        let path = token_file.unwrap_or(std::path::Path::new(""));
        let token = std::fs::read_to_string(path)
            .map_err(|e| ConfigProblem(format!("{section}.token_file {}: {e}", path.display())))?;
        headers.push(("Authorization", format!("Bearer {}", token.trim())));
    }
    let tls = match tls {
        Some(t) if t.requires_client_certs() => {
            return Err(ConfigProblem(format!(
                "{section}.tls.client_ca_file: the listener takes only clients with a certificate, and the CLI has \
                 none; use the HTTP API with one (e.g. curl --cert)"
            ))
            .into());
        }
        Some(t) => Some(pinned_client(t, &format!("{section}.tls"))?),
        None => None,
    };
    Ok((Endpoint::plain(listen).with_tls(tls), headers))
}

/// Sends one request.
pub fn request(
    to: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<Reply> {
    let addr = to.addr;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {addr}; is the role running?"))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        to.host,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let raw = match &to.tls {
        Some(tls) => {
            let mut s = tls.connect(s).with_context(|| format!("TLS to {addr}"))?;
            exchange(&mut s, &head, body).with_context(|| format!("TLS exchange with {addr}"))?
        }
        None => {
            let mut s = s;
            exchange(&mut s, &head, body).with_context(|| format!("exchange with {addr}"))?
        }
    };
    parse_reply(&raw, method).with_context(|| format!("the answer from {addr}"))
}

/// Writes the request and reads until the server closes. A TLS peer that
/// closes without close_notify is accepted: the body length is checked
/// against Content-Length instead.
fn exchange(s: &mut (impl Read + Write), head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

/// Parses a whole HTTP/1.1 answer to a `method` request, as
/// [`h1codec`](crate::core::h1codec) frames it. Public for the fuzz target:
/// it reads what remote peers send.
pub fn parse_reply(raw: &[u8], method: &str) -> anyhow::Result<Reply> {
    let method = http::Method::from_bytes(method.as_bytes()).with_context(|| format!("HTTP method {method:?}"))?;
    let (head, body, _) = h1codec::decode_in_pieces(raw, &method, raw.len().max(1))?;
    Ok(Reply { status: head.response.status().as_u16(), body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_framed_by_the_shared_codec() {
        let reply =
            parse_reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET").unwrap();
        assert_eq!((reply.status, &reply.body[..]), (200, &b"ok"[..]));
        // Connection: close, no length: the body runs to the end.
        let reply = parse_reply(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\nno such", "POST").unwrap();
        assert_eq!((reply.status, &reply.body[..]), (404, &b"no such"[..]));
        let reply = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", "HEAD").unwrap();
        assert!(reply.body.is_empty());
        let cut = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort", "GET").err().unwrap();
        assert!(format!("{cut:#}").contains("closed the connection in the middle"), "{cut:#}");
        let garbage = parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n", "GET").err().unwrap();
        assert!(format!("{garbage:#}").contains("malformed answer head"), "{garbage:#}");
    }
}
