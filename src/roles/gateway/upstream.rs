//! One upstream service endpoint: HTTP/1.1 or HTTP/2 (plain, or TLS
//! presenting the gateway's SVID, re-read when it rotates) over connections
//! an HTTP/1.1 client's connection owns (owned.rs) or from a shared pool, a
//! per-attempt timeout, retries of idempotent methods after connection
//! failures, and the health that passive outcomes and active checks keep.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::Service;

use super::canary::Side;
use super::config::ServiceConfig;
use super::owned::{self, Failure, Owned, UpstreamBody};
use crate::core::httpserve::ConnLocal;
use crate::core::tls::{ClientTls, ClientTlsConfig};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an upstream takes traffic: consecutive failures (requests or
/// checks) past a threshold take it out; a passing check puts it back.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    failures: AtomicU32,
    threshold: AtomicU32,
}

impl Health {
    pub fn new(threshold: u32) -> Health {
        Health { healthy: AtomicBool::new(true), failures: AtomicU32::new(0), threshold: AtomicU32::new(threshold) }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_threshold(&self, n: u32) {
        self.threshold.store(n.max(1), Ordering::Relaxed);
    }

    /// Records one outcome; returns the new state when it changed.
    pub fn record(&self, ok: bool) -> Option<bool> {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            return (!self.healthy.swap(true, Ordering::Relaxed)).then_some(true);
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold.load(Ordering::Relaxed) && self.healthy.swap(false, Ordering::Relaxed) {
            return Some(false);
        }
        None
    }
}

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {url} did not answer within {0:?}", url = .1)]
    Timeout(Duration, String),
    #[error("upstream {1}: {0}")]
    Failed(String, String),
}

/// A client for one upstream URL.
pub struct Upstream {
    /// scheme://authority, and the path prefix requests are appended to.
    authority: Uri,
    prefix: String,
    /// The Host header requests carry (the pool sets its own).
    host: HeaderValue,
    pub url: String,
    client: Client<Connector, Full<Bytes>>,
    /// Connects owned connections; None for HTTP/2 upstreams (pool only).
    connector: Option<Connector>,
    /// Owned connections: how many are open, the idle ones.
    owned: Arc<owned::Shared>,
    timeout: Duration,
    retries: u32,
    pub health: Arc<Health>,
}

impl Upstream {
    /// Builds the client for `url`, the service's `side`, with the service's
    /// settings; `health` is kept across reloads by the caller.
    pub fn new(url: &str, svc: &ServiceConfig, side: Side, health: Arc<Health>) -> anyhow::Result<Upstream> {
        let uri: Uri = url.parse().with_context(|| format!("gateway.services.{}: upstream {url:?}", svc.name))?;
        let authority = Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("http"))
            .authority(uri.authority().map(|a| a.as_str()).unwrap_or_default())
            .path_and_query("/")
            .build()?;
        let host = uri.host().unwrap_or_default();
        let key = format!("gateway.services.{}.upstream_tls", svc.name);
        let tls = ClientTls::load(svc.upstream_tls.as_ref().unwrap_or(&ClientTlsConfig::default()), host, &key)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*tls.config()).clone()).https_or_http();
        let connector = match svc.http2 {
            true => builder.enable_all_versions().wrap_connector(http),
            false => builder.enable_http1().wrap_connector(http),
        };
        let owned_connector = (!svc.http2).then(|| connector.clone());
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_timer(TokioTimer::new()).timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
        if svc.http2 && uri.scheme_str() == Some("http") {
            client.http2_only(true);
        }
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = match uri.port_u16().filter(|p| *p != default_port) {
            Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
            None => HeaderValue::from_str(host),
        }
        .with_context(|| format!("gateway.services.{}: upstream {url:?} host", svc.name))?;
        Ok(Upstream {
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            host,
            url: url.to_owned(),
            client: client.build(connector),
            connector: owned_connector,
            owned: Arc::new(owned::Shared::new(
                url,
                metrics::gauge!(
                    "edgebox_gateway_upstream_owned_connections",
                    "service" => svc.name.clone(),
                    "upstream" => side.as_str()
                ),
            )),
            timeout: Duration::from_millis(svc.timeout_ms),
            retries: svc.retries,
            health,
        })
    }

    /// Sends a request (its URI: path and query only) and returns the
    /// answer's head and streaming body. With the client connection's
    /// `local` slot (HTTP/1.1 clients) it goes over a connection that client
    /// owns, else over the pool. Idempotent methods are retried after a
    /// connection failure or a timeout; anything else is tried once.
    pub async fn send(
        &self,
        req: Request<Bytes>,
        local: Option<&ConnLocal>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        let path = self.path(&parts.uri)?;
        let local = local.filter(|_| self.connector.is_some());
        let attempts = if parts.method.is_idempotent() { 1 + self.retries } else { 1 };
        let mut last = None;
        for attempt in 0..attempts {
            // The pool takes its requests whole: the last attempt takes the
            // headers, earlier ones copy them. Owned connections borrow them.
            let pooled = local.is_none().then(|| match attempt + 1 == attempts {
                true => std::mem::take(&mut parts.headers),
                false => parts.headers.clone(),
            });
            let exchange = async {
                match (local, pooled) {
                    (Some(local), _) => self.send_owned(&parts.method, &path, &parts.headers, &body, local).await,
                    (None, headers) => {
                        let req = self.pooled_request(&parts.method, path.clone(), headers.unwrap_or_default(), &body);
                        self.send_pooled(req?).await
                    }
                }
            };
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(resp)) => {
                    self.health.record(resp.status().as_u16() < 500);
                    return Ok(resp);
                }
                Ok(Err(detail)) => {
                    tracing::debug!(upstream = %self.url, attempt, error = %detail, "upstream request failed");
                    last = Some(UpstreamError::Failed(detail, self.url.clone()));
                }
                Err(_) => last = Some(UpstreamError::Timeout(self.timeout, self.url.clone())),
            }
            self.health.record(false);
        }
        Err(last.unwrap_or_else(|| UpstreamError::Failed("no attempt made".into(), self.url.clone())))
    }

    /// A request as the pool takes it: an absolute URI.
    fn pooled_request(
        &self,
        method: &Method,
        path: PathAndQuery,
        headers: HeaderMap,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = method.clone();
        *req.uri_mut() = self.absolute(path).map_err(|e| e.to_string())?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    async fn send_pooled(&self, req: Request<Full<Bytes>>) -> Result<Response<UpstreamBody>, String> {
        match self.client.request(req).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::Pooled)),
            Err(e) => Err(error_chain(&e)),
        }
    }

    /// Over the client connection's parked connection to this upstream, or
    /// a new one it will own (the pool when this upstream has too many).
    async fn send_owned(
        &self,
        method: &Method,
        path: &PathAndQuery,
        headers: &HeaderMap,
        body: &Bytes,
        local: &ConnLocal,
    ) -> Result<Response<UpstreamBody>, String> {
        let target = path.as_str();
        if let Some(mut parked) = owned::unpark(local, &self.owned)
            && parked.ready().await
        {
            match parked.send(method, target, &self.host, headers, body).await {
                Ok((head, state)) => return Ok(head.map(|()| UpstreamBody::owned(state, parked, local.clone()))),
                // Closed by the upstream as the request went: it was not
                // sent, so a new connection may carry it whatever its method.
                Err(Failure::Unsent(_)) => {}
                Err(Failure::Failed(detail)) => return Err(detail),
            }
        }
        let (Some(slot), Some(connector)) = (owned::Slot::take(&self.owned), &self.connector) else {
            return self.send_pooled(self.pooled_request(method, path.clone(), headers.clone(), body)?).await;
        };
        // Boxed: connecting is rare, and its future would make every
        // request's larger.
        let mut fresh = Box::pin(self.connect(connector, slot)).await?;
        match fresh.send(method, target, &self.host, headers, body).await {
            Ok((head, state)) => Ok(head.map(|()| UpstreamBody::owned(state, fresh, local.clone()))),
            Err(Failure::Unsent(detail) | Failure::Failed(detail)) => Err(detail),
        }
    }

    /// A new connection to the upstream, to be owned.
    async fn connect(&self, connector: &Connector, slot: owned::Slot) -> Result<Owned, String> {
        let mut connector = connector.clone();
        poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| error_chain(&*e))?;
        let io = connector.call(self.authority.clone()).await.map_err(|e| error_chain(&*e))?;
        Ok(Owned::open(TokioIo::new(io), slot))
    }

    /// The path and query a request has upstream: the upstream's path
    /// prefix, then the request's.
    fn path(&self, uri: &Uri) -> Result<PathAndQuery, UpstreamError> {
        match (uri.path_and_query(), self.prefix.is_empty()) {
            (Some(pq), true) => Ok(pq.clone()),
            (pq, _) => format!("{}{}", self.prefix, pq.map_or("/", |p| p.as_str()))
                .parse()
                .map_err(|e| UpstreamError::Failed(format!("bad URI for {uri}: {e}"), self.url.clone())),
        }
    }

    /// The absolute URI of an upstream path, as the pool wants it.
    fn absolute(&self, path: PathAndQuery) -> Result<Uri, UpstreamError> {
        let mut parts = self.authority.clone().into_parts();
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).map_err(|e| UpstreamError::Failed(format!("bad URI: {e}"), self.url.clone()))
    }

    /// The upstream URI for a request's path and query.
    fn target(&self, uri: &Uri) -> Result<Uri, UpstreamError> {
        self.absolute(self.path(uri)?)
    }

    /// One active health check: GET `path` must answer below 500 within
    /// 5 s (no retry; the outcome is the caller's to record).
    pub async fn check(&self, path: &str) -> bool {
        let Ok(uri) = path.parse::<Uri>().map_err(drop).and_then(|u| self.target(&u).map_err(drop)) else {
            return false;
        };
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        let answer = tokio::time::timeout(self.timeout.min(Duration::from_secs(5)), self.client.request(req)).await;
        matches!(answer, Ok(Ok(resp)) if resp.status().as_u16() < 500)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Idle owned connections hold the shared part: let them go.
        self.owned.close();
    }
}

/// An error and its causes, joined: hyper's own message alone is vague.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let svc: ServiceConfig =
            toml::from_str(&format!("name = \"s\"\nopenapi_file = \"api.yaml\"\nupstream = \"{url}\"")).unwrap();
        Upstream::new(url, &svc, Side::Stable, Arc::new(Health::new(3))).unwrap()
    }

    #[test]
    fn requests_go_to_the_upstream_under_its_path_prefix_with_their_query() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let bare = upstream("http://10.0.0.1:8080");
        assert_eq!(bare.target(&uri("/pets/7?limit=2")).unwrap(), "http://10.0.0.1:8080/pets/7?limit=2");
        let prefixed = upstream("https://api.internal:8443/v2/");
        assert_eq!(prefixed.target(&uri("/pets/7?limit=2")).unwrap(), "https://api.internal:8443/v2/pets/7?limit=2");
        assert_eq!(prefixed.target(&uri("/")).unwrap(), "https://api.internal:8443/v2/");
    }
}
