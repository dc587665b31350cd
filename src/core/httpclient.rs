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
    parse_reply(&raw).with_context(|| format!("the answer from {addr}"))
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

/// Parses a whole HTTP/1.1 answer (status line, headers, a plain or
/// chunked body). Public for the fuzz target: it reads what remote peers send.
pub fn parse_reply(raw: &[u8]) -> anyhow::Result<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("malformed HTTP answer: no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("malformed HTTP status line")?;
    let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned));
    let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
    let body = &raw[split + 4..];
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok())
        && body.len() < len
    {
        anyhow::bail!("truncated body: {} of {len} bytes", body.len());
    }
    Ok(Reply { status, body })
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").context("malformed chunked body")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end])?.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("truncated chunk")?);
        b = b.get(size + 2..).context("truncated chunk")?;
    }
}
