//! Forwarding to an upstream (Prometheus, VictoriaMetrics, Mimir) over
//! remote_write 1.0, store-and-forward: every accepted sample was queued in
//! `tsdb.forward` in the same transaction that stored it, so the queue
//! survives restarts and offline periods. Batches go out in order, one at a
//! time; a batch leaves the queue only when the upstream took it (2xx) or
//! refused its content for good (4xx, as Prometheus does). Answers that
//! blame the sender's setup rather than the batch (401, 403, 404, 407: wrong
//! credentials or URL) and 429 keep the batch, unlike Prometheus: a device
//! offline for days must not lose its backlog to a password being rotated.
//! Anything not taken is retried with capped, jittered exponential backoff.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use tokio_util::sync::CancellationToken;

use super::config::TsdbConfig;
use super::storage::Storage;
use crate::core::exit::ConfigProblem;
use crate::core::httpclient::{self, Endpoint};
use crate::core::tls::ClientTls;

/// Where batches go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    /// host:port, for the socket and the Host header.
    host: String,
    path: String,
    https: bool,
}

impl Upstream {
    /// Parses `http[s]://host[:port][/path]`; the port defaults to 80 or
    /// 443, the path to /api/v1/write.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("tsdb.forward_url {url}: must start with http:// or https://"));
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/api/v1/write"),
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!(
                "tsdb.forward_url {url}: needs a host (credentials go in forward_username/forward_password_file)"
            ));
        }
        let has_port = host.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
        let host = if has_port { host.to_owned() } else { format!("{host}:{}", if https { 443 } else { 80 }) };
        Ok(Upstream { url: url.to_owned(), host, path: path.to_owned(), https })
    }

    /// The host without the port: the name TLS checks.
    fn hostname(&self) -> &str {
        self.host.rsplit_once(':').map_or(&self.host, |(h, _)| h)
    }
}

/// An upstream with what each request carries: TLS, credentials, headers.
pub struct Sender {
    pub upstream: Upstream,
    tls: Option<ClientTls>,
    headers: Vec<(String, String)>,
}

impl Sender {
    /// Reads the TLS material and credentials the config names; None when
    /// forwarding is off.
    pub fn load(cfg: &TsdbConfig) -> anyhow::Result<Option<Sender>> {
        let Some(url) = &cfg.forward_url else { return Ok(None) };
        let upstream = Upstream::parse(url).map_err(ConfigProblem)?;
        let tls = upstream
            .https
            .then(|| ClientTls::load(&cfg.forward_tls, upstream.hostname(), "tsdb.forward_tls"))
            .transpose()
            .map_err(ConfigProblem::from)?;
        let mut headers = vec![
            ("Content-Encoding".to_owned(), "snappy".to_owned()),
            ("Content-Type".to_owned(), "application/x-protobuf".to_owned()),
            ("X-Prometheus-Remote-Write-Version".to_owned(), "0.1.0".to_owned()),
            ("User-Agent".to_owned(), format!("edgebox/{}", env!("CARGO_PKG_VERSION"))),
        ];
        if let Some(path) = &cfg.forward_token_file {
            headers.push(("Authorization".to_owned(), format!("Bearer {}", secret(path, "tsdb.forward_token_file")?)));
        }
        if let (Some(user), Some(path)) = (&cfg.forward_username, &cfg.forward_password_file) {
            let password = secret(path, "tsdb.forward_password_file")?;
            headers.push((
                "Authorization".to_owned(),
                format!("Basic {}", BASE64_STANDARD.encode(format!("{user}:{password}"))),
            ));
        }
        headers.extend(cfg.forward_headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Some(Sender { upstream, tls, headers }))
    }

    fn send(&self, body: &[u8]) -> Sent {
        let headers: Vec<(&str, String)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let reply =
            self.endpoint().and_then(|to| httpclient::request(&to, "POST", &self.upstream.path, &headers, body));
        match reply {
            Ok(r) if (200..300).contains(&r.status) => Sent::Taken,
            Ok(r) if (400..500).contains(&r.status) && ![401, 403, 404, 407, 429].contains(&r.status) => {
                Sent::Refused(r.status, String::from_utf8_lossy(&r.body).chars().take(200).collect())
            }
            Ok(r) => Sent::Retry(format!(
                "upstream answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>().trim()
            )),
            Err(e) => Sent::Retry(format!("{e:#}")),
        }
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let host = &self.upstream.host;
        let addr = host.to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("{host} resolves to no address"))?;
        Ok(Endpoint { addr, host: host.clone(), tls: self.tls.clone() })
    }
}

/// A credential file's content, trimmed; never logged.
fn secret(path: &std::path::Path, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigProblem(format!("{key} {}: {e}", path.display())))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigProblem(format!("{key} {}: empty", path.display())).into());
    }
    Ok(text.to_owned())
}

enum Sent {
    Taken,
    Refused(u16, String),
    Retry(String),
}

/// Sends queued batches until shutdown.
pub async fn forward_forever(storage: Arc<Storage>, sender: Sender, shutdown: CancellationToken) {
    let sender = Arc::new(sender);
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut backoff = MIN_BACKOFF;
    let mut jitter = 0x9E37_79B9u64;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if let Ok(n) = storage.forward_backlog().await {
            metrics::gauge!("edgebox_tsdb_forward_backlog_batches").set(n as f64);
        }
        let next = match storage.forward_peek().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "tsdb forward queue unreadable; retrying");
                None
            }
        };
        let Some((seq, body)) = next else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = storage.forward_queued.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        let to = sender.clone();
        let outcome =
            tokio::task::spawn_blocking(move || to.send(&body)).await.unwrap_or_else(|e| Sent::Retry(e.to_string()));
        match outcome {
            Sent::Taken => {
                metrics::counter!("edgebox_tsdb_forward_batches_sent_total").increment(1);
                backoff = MIN_BACKOFF;
                if let Err(e) = storage.forward_ack(seq).await {
                    tracing::warn!(error = %format!("{e:#}"), seq, "tsdb forward: cannot remove a sent batch");
                }
            }
            Sent::Refused(status, why) => {
                metrics::counter!("edgebox_tsdb_forward_batches_dropped_total").increment(1);
                tracing::error!(seq, status, reason = %why, upstream = %sender.upstream.url, "upstream refused a batch; dropped");
                let _ = storage.forward_ack(seq).await;
            }
            Sent::Retry(why) => {
                metrics::counter!("edgebox_tsdb_forward_failures_total").increment(1);
                jitter ^= jitter << 13;
                jitter ^= jitter >> 7;
                jitter ^= jitter << 17;
                let wait = backoff.mul_f64(0.5 + (jitter % 1000) as f64 / 1000.0);
                tracing::warn!(seq, reason = %why, retry_in_ms = wait.as_millis() as u64, upstream = %sender.upstream.url, "tsdb forward failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Upstream;

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://127.0.0.1:8428/api/v1/write").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str(), u.https), ("127.0.0.1:8428", "/api/v1/write", false));
        assert_eq!(Upstream::parse("http://vm:8428").unwrap().path, "/api/v1/write");
        let u = Upstream::parse("https://central.example/prom/push").unwrap();
        assert_eq!((u.host.as_str(), u.hostname(), u.https), ("central.example:443", "central.example", true));
        let u = Upstream::parse("https://[::1]:9443").unwrap();
        assert_eq!((u.host.as_str(), u.hostname()), ("[::1]:9443", "[::1]"));
        assert_eq!(Upstream::parse("http://[::1]/x").unwrap().host, "[::1]:80");
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("http:///x").is_err());
        assert!(Upstream::parse("https://user:pw@host/x").unwrap_err().contains("forward_username"));
    }
}
