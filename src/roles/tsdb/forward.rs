//! Forwarding to an upstream (Prometheus, VictoriaMetrics, Mimir) over
//! remote_write 1.0, store-and-forward: every accepted sample was queued in
//! `tsdb.forward` in the same transaction that stored it, so the queue
//! survives restarts and offline periods. Batches go out in order, one at a
//! time; a batch leaves the queue only when the upstream took it (2xx) or
//! refused it for good (4xx other than 429, as Prometheus does). Anything
//! else is retried with capped, jittered exponential backoff.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::storage::Storage;
use crate::core::httpclient;

/// Where batches go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    host: String,
    path: String,
}

impl Upstream {
    /// Parses `http://host:port/path`. TLS upstreams are refused with a clear
    /// message rather than sent in the clear.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "tsdb.forward_url {url}: https upstreams are not supported yet; use http:// on a trusted link"
            ));
        }
        let rest =
            url.strip_prefix("http://").ok_or_else(|| format!("tsdb.forward_url {url}: must start with http://"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/api/v1/write"),
        };
        if host.is_empty() || !host.contains(':') {
            return Err(format!("tsdb.forward_url {url}: needs host:port"));
        }
        Ok(Upstream { url: url.to_owned(), host: host.to_owned(), path: path.to_owned() })
    }

    fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.host.to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("{} resolves to no address", self.host))
    }
}

enum Sent {
    Taken,
    Refused(u16, String),
    Retry(String),
}

fn send(upstream: &Upstream, body: &[u8]) -> Sent {
    let headers = [
        ("Content-Encoding", "snappy".to_owned()),
        ("Content-Type", "application/x-protobuf".to_owned()),
        ("X-Prometheus-Remote-Write-Version", "0.1.0".to_owned()),
        ("User-Agent", format!("edgebox/{}", env!("CARGO_PKG_VERSION"))),
    ];
    let reply = upstream.addr().and_then(|a| httpclient::request(a, "POST", &upstream.path, &headers, body));
    match reply {
        Ok(r) if (200..300).contains(&r.status) => Sent::Taken,
        Ok(r) if (400..500).contains(&r.status) && r.status != 429 => {
            Sent::Refused(r.status, String::from_utf8_lossy(&r.body).chars().take(200).collect())
        }
        Ok(r) => Sent::Retry(format!("upstream answered {}", r.status)),
        Err(e) => Sent::Retry(format!("{e:#}")),
    }
}

/// Sends queued batches until shutdown.
pub async fn forward_forever(storage: Arc<Storage>, upstream: Upstream, shutdown: CancellationToken) {
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
        let up = upstream.clone();
        let outcome =
            tokio::task::spawn_blocking(move || send(&up, &body)).await.unwrap_or_else(|e| Sent::Retry(e.to_string()));
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
                tracing::error!(seq, status, reason = %why, upstream = %upstream.url, "upstream refused a batch; dropped");
                let _ = storage.forward_ack(seq).await;
            }
            Sent::Retry(why) => {
                metrics::counter!("edgebox_tsdb_forward_failures_total").increment(1);
                jitter ^= jitter << 13;
                jitter ^= jitter >> 7;
                jitter ^= jitter << 17;
                let wait = backoff.mul_f64(0.5 + (jitter % 1000) as f64 / 1000.0);
                tracing::warn!(seq, reason = %why, retry_in_ms = wait.as_millis() as u64, upstream = %upstream.url, "tsdb forward failed");
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
        assert_eq!((u.host.as_str(), u.path.as_str()), ("127.0.0.1:8428", "/api/v1/write"));
        assert_eq!(Upstream::parse("http://vm:8428").unwrap().path, "/api/v1/write");
        assert!(Upstream::parse("https://vm:8428/x").unwrap_err().contains("https"));
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("http:///x").is_err());
    }
}
