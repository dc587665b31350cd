//! The client side of the orchestrator's wire: its address, one HTTP/2
//! connection to it (cleartext h2c or TLS with ALPN h2, through the core's
//! client TLS), JSON requests, and the agent's heartbeat stream. Agents use
//! it to reach the orchestrator; Raft members use it to reach each other.

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::core::tls::ClientTls;

/// Where the orchestrator is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            _ => return Err(format!("{url:?}: expected http://host:port or https://host:port")),
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse().map_err(|_| format!("{url:?}: port {p:?} is not a number"))?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() || authority.contains('/') {
            return Err(format!("{url:?}: expected http://host:port with no path"));
        }
        Ok(Target { tls, host: host.trim_start_matches('[').trim_end_matches(']').to_owned(), port })
    }
}

/// An orchestrator that follows another (a Raft member that is not the
/// leader) sent the request to the leader at this URL.
#[derive(Debug, thiserror::Error)]
#[error("this orchestrator follows; the leader is {0}")]
pub struct Moved(pub String);

impl Target {
    /// Every orchestrator in a comma-separated list of URLs.
    pub fn parse_list(urls: &str) -> Result<Vec<Target>, String> {
        urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(Target::parse).collect()
    }
}

/// The leader a 307 answer names, as `Moved`.
pub fn moved(status: u16, answer: &Value) -> Option<Moved> {
    (status == 307).then(|| answer["leader"].as_str().map(|l| Moved(l.to_owned()))).flatten()
}

type Body = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// One HTTP/2 connection to the orchestrator (clones share it).
#[derive(Clone)]
pub struct Conn {
    send: hyper::client::conn::http2::SendRequest<Body>,
    /// `http` or `https`, and host:port, for the request URIs.
    scheme: &'static str,
    authority: String,
    token: Option<String>,
}

fn once(b: Bytes) -> Body {
    StreamBody::new(Box::pin(futures_util::stream::once(async move { Ok(Frame::data(b)) })))
}

impl Conn {
    pub async fn open(t: &Target, tls: Option<&ClientTls>, token: Option<String>) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .with_context(|| format!("connecting to {}:{}", t.host, t.port))?;
        let _ = tcp.set_nodelay(true);
        let send = match (t.tls, tls) {
            (true, Some(tls)) => {
                let mut cfg = (*tls.config()).clone();
                cfg.alpn_protocols = vec![b"h2".to_vec()];
                let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
                    .connect(tls.server_name(), tcp)
                    .await
                    .context("TLS handshake with the orchestrator")?;
                let (send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                send
            }
            (true, None) => anyhow::bail!("an https orchestrator needs its TLS settings"),
            (false, _) => {
                let (send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                send
            }
        };
        let scheme = if t.tls { "https" } else { "http" };
        Ok(Conn { send, scheme, authority: format!("{}:{}", t.host, t.port), token })
    }

    fn request(&self, method: http::Method, path: &str) -> http::request::Builder {
        let mut b = Request::builder().method(method).uri(format!("{}://{}{path}", self.scheme, self.authority));
        if let Some(t) = &self.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b
    }

    /// POSTs a JSON body to `path`; the status and the JSON answer.
    pub async fn post_json(&mut self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let (status, bytes) = self.post(path, Bytes::from(body.to_string()), 1 << 20).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// POSTs JSON bytes to `path`: the status and up to `limit` bytes of
    /// answer.
    pub async fn post(&mut self, path: &str, body: Bytes, limit: usize) -> anyhow::Result<(u16, Bytes)> {
        let req = self
            .request(http::Method::POST, path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(once(body))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("POST {path}: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// GETs `path`: the status and up to `limit` bytes of body.
    pub async fn get(&mut self, path: &str, limit: usize) -> anyhow::Result<(u16, Bytes)> {
        let req = self.request(http::Method::GET, path).body(StreamBody::new(
            Box::pin(futures_util::stream::empty()) as futures_util::stream::BoxStream<'static, _>,
        ))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// Opens the heartbeat stream: lines sent on the returned sender go up;
    /// the directives come back on the body.
    pub async fn stream(&mut self, id: &str) -> anyhow::Result<(mpsc::Sender<Bytes>, Incoming)> {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|l| (Ok::<_, Infallible>(Frame::data(l)), rx))
        });
        let req = self
            .request(http::Method::POST, &format!("/v1/nodes/{id}/heartbeats"))
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .body(StreamBody::new(Box::pin(body) as futures_util::stream::BoxStream<'static, _>))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        if resp.status() != 200 {
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            if let Some(m) = moved(status.as_u16(), &serde_json::from_slice(&bytes).unwrap_or(Value::Null)) {
                return Err(m.into());
            }
            anyhow::bail!(
                "the orchestrator refused the heartbeat stream: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok((tx, resp.into_body()))
    }
}

/// The next JSON line of a directive body; `None` at its end.
pub async fn next_line(body: &mut Incoming, buf: &mut Vec<u8>) -> anyhow::Result<Option<Value>> {
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            return Ok(Some(serde_json::from_slice(&line).context("a directive line that is not JSON")?));
        }
        anyhow::ensure!(buf.len() <= 64 * 1024, "a directive line over 64 KiB");
        let Some(frame) = body.frame().await else { return Ok(None) };
        if let Ok(d) = frame.context("reading the directives")?.into_data() {
            buf.extend_from_slice(&d);
        }
    }
}

#[cfg(test)]
#[test]
fn orchestrator_urls_parse_or_say_why_not() {
    assert_eq!(Target::parse("http://10.0.0.5:8080"), Ok(Target { tls: false, host: "10.0.0.5".into(), port: 8080 }));
    assert_eq!(Target::parse("https://orch.example"), Ok(Target { tls: true, host: "orch.example".into(), port: 443 }));
    assert_eq!(Target::parse("http://[::1]:8080/"), Ok(Target { tls: false, host: "::1".into(), port: 8080 }));
    assert!(Target::parse("orch:8080").is_err());
    assert!(Target::parse("http://orch:80x").is_err());
    assert!(Target::parse("http://orch:8080/v1").is_err());
}

#[cfg(test)]
#[test]
fn a_cluster_is_a_list_of_urls_and_a_follower_names_its_leader() {
    let all = Target::parse_list("http://10.0.0.1:8080, http://10.0.0.2:8080,").unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].host, "10.0.0.2");
    assert!(Target::parse_list("http://a:1,b:2").is_err());
    let answer = serde_json::json!({"error": "follows", "leader": "http://10.0.0.3:8080"});
    assert_eq!(moved(307, &answer).map(|m| m.0), Some("http://10.0.0.3:8080".to_owned()));
    assert!(moved(503, &answer).is_none());
    assert!(moved(307, &serde_json::json!({"error": "x"})).is_none());
}
