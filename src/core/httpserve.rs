//! Serving HTTP/1.1 and HTTP/2 on a listener, for the admin service and every
//! role: one accept loop, TLS when configured, the telemetry layer, a header-read timeout against
//! slowloris clients, and a graceful drain on shutdown. Each request carries
//! its connection's [`Peer`] (address, client certificate chain, and a
//! slot for state the handler keeps between the connection's requests) as
//! an extension; responses may stream (a proxy passes bodies through).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::core::telemetry::{HttpTelemetryLayer, MatchedRoute};
use crate::core::tls::ServerTls;
use crate::core::tls::spiffe::{Rejection, SpiffeId};

/// A complete response with a byte body.
pub type FullResponse = Response<Full<Bytes>>;

/// Builds a response for a matched route (the route feeds http.route).
pub fn respond(
    route: &'static str,
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> FullResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(ct) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    resp.extensions_mut().insert(MatchedRoute(route));
    resp
}

/// Who is at the other end of a request's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// The client's certificate chain, leaf first, when it presented one.
    pub certs: Option<std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>>,
    /// The leaf's SPIFFE ID, read once per connection.
    svid: std::sync::Arc<std::sync::OnceLock<Result<SpiffeId, Rejection>>>,
    /// What the handler keeps for this connection between its requests.
    pub local: ConnLocal,
}

impl Peer {
    pub fn new(
        addr: std::net::SocketAddr,
        certs: Option<std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>>,
    ) -> Peer {
        Peer { addr, certs, svid: Default::default(), local: ConnLocal::default() }
    }

    /// The SPIFFE ID of the client's certificate (read at the first ask,
    /// then remembered for the connection); None without a certificate.
    pub fn spiffe_id(&self) -> Option<Result<&SpiffeId, &Rejection>> {
        let leaf = self.certs.as_ref()?.first()?;
        Some(self.svid.get_or_init(|| SpiffeId::of_svid(leaf)).as_ref())
    }
}

/// One value a handler keeps for a connection between its requests (the
/// gateway parks its upstream connections here, so the next request on the
/// connection finds them without a shared pool). Requests on an HTTP/1
/// connection come one at a time; concurrent HTTP/2 requests find the slot
/// empty while another holds its value, and do without.
#[derive(Clone, Default)]
pub struct ConnLocal(std::sync::Arc<std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>>);

impl ConnLocal {
    /// Takes the value out if it is a `T`; the slot is empty until `put`.
    pub fn take<T: Send + 'static>(&self) -> Option<Box<T>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take()?.downcast::<T>() {
            Ok(v) => Some(v),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }

    /// Puts a value (back) for the connection's next request.
    pub fn put<T: Send + 'static>(&self, value: Box<T>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }
}

impl std::fmt::Debug for ConnLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnLocal")
    }
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener`, over TLS when `tls` is set, until
/// `shutdown` fires, then lets open requests finish for up to `drain`.
pub async fn serve<H, F, B>(
    role: &'static str,
    listener: TcpListener,
    tls: Option<ServerTls>,
    handler: H,
    shutdown: CancellationToken,
    drain: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let telemetry = HttpTelemetryLayer::new(role);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(role, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, watcher, tls, handler) = (builder.clone(), graceful.watcher(), tls.clone(), handler.clone());
        let telemetry = telemetry.clone();
        let service = move |peer: Peer| {
            let service = tower::ServiceBuilder::new().layer(telemetry).service(tower::service_fn(
                move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    handler(req)
                },
            ));
            TowerToHyperService::new(service)
        };
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let service = service(Peer::new(peer, None));
                    watcher
                        .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned())
                        .await
                }
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                        let service = service(Peer::new(peer, certs));
                        watcher
                            .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned())
                            .await
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("edgebox_tls_handshake_failures_total", "role" => role).increment(1);
                        tracing::debug!(role, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics::counter!("edgebox_tls_handshake_failures_total", "role" => role).increment(1);
                        tracing::debug!(role, %peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(role, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(role, "open connections did not drain in time");
    }
}
