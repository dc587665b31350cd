//! The tower layer every role's HTTP and gRPC server wraps its service in.
//!
//! It opens a server span named and attributed per the current OpenTelemetry
//! semantic conventions (HTTP: http.request.method, http.route, url.path,
//! http.response.status_code, body sizes; gRPC: rpc.system.name, rpc.method,
//! rpc.response.status_code), continues the caller's trace from
//! `traceparent`, and records the matching duration histograms once the
//! response body has been sent (or dropped), so streaming responses are timed
//! whole. Handlers name the route template by putting [`MatchedRoute`] in the
//! response extensions.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::Histogram;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{HandleCache, Lookup};

/// The route template a handler matched, e.g. "/api/v1/query".
#[derive(Debug, Clone, Copy)]
pub struct MatchedRoute(pub &'static str);

/// Wraps a service with server spans and request metrics for `role`. Make
/// one per listener and clone it per connection: clones share the metric
/// handles.
#[derive(Debug, Clone)]
pub struct HttpTelemetryLayer {
    role: &'static str,
    handles: Arc<Handles>,
}

/// A standard method's name without an allocation.
fn method_name(method: &http::Method) -> Cow<'static, str> {
    const STANDARD: [(http::Method, &str); 9] = [
        (http::Method::GET, "GET"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::OPTIONS, "OPTIONS"),
        (http::Method::PATCH, "PATCH"),
        (http::Method::CONNECT, "CONNECT"),
        (http::Method::TRACE, "TRACE"),
    ];
    match STANDARD.iter().find(|(m, _)| m == method) {
        Some((_, name)) => Cow::Borrowed(name),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// (RPC name, status name) as a call has them.
impl Lookup<(String, &'static str)> for (&str, &'static str) {
    fn is(&self, key: &(String, &'static str)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }

    fn to_key(&self) -> (String, &'static str) {
        (self.0.to_owned(), self.1)
    }
}

/// (method, route, status) as a request has them.
impl Lookup<(String, Option<&'static str>, u16)> for (&str, Option<&'static str>, u16) {
    fn is(&self, key: &(String, Option<&'static str>, u16)) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2
    }

    fn to_key(&self) -> (String, Option<&'static str>, u16) {
        (self.0.to_owned(), self.1, self.2)
    }
}

/// The registered histograms by label set (the role is the layer's).
#[derive(Debug, Default)]
struct Handles {
    /// (method, route, status) → duration, request size, response size.
    http: HandleCache<(String, Option<&'static str>, u16), [Histogram; 3]>,
    /// (RPC name, status name) → call duration.
    grpc: HandleCache<(String, &'static str), Histogram>,
}

impl HttpTelemetryLayer {
    pub fn new(role: &'static str) -> Self {
        Self { role, handles: Arc::default() }
    }
}

impl<S> tower::Layer<S> for HttpTelemetryLayer {
    type Service = HttpTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpTelemetry { inner, role: self.role, handles: self.handles.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct HttpTelemetry<S> {
    inner: S,
    role: &'static str,
    handles: Arc<Handles>,
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl<S, B, RB> tower::Service<Request<B>> for HttpTelemetry<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body,
{
    type Response = Response<TelemetryBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        let path = req.uri().path();
        // For gRPC the "method" is the full RPC name, e.g. pkg.Service/Call.
        let method = if grpc { Cow::Owned(path.trim_start_matches('/').to_owned()) } else { method_name(req.method()) };
        let request_size = content_length(req.headers());
        let span = if grpc {
            tracing::info_span!(
                "grpc",
                otel.name = %method,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system.name = "grpc",
                rpc.method = %method,
                rpc.response.status_code = Empty,
                edgebox.role = self.role,
            )
        } else {
            tracing::info_span!(
                "http",
                otel.name = %method,
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = %method,
                url.path = %path,
                url.scheme = "http",
                network.protocol.version = version(req.version()),
                http.route = Empty,
                http.response.status_code = Empty,
                http.request.body.size = request_size as i64,
                http.response.body.size = Empty,
                edgebox.role = self.role,
            )
        };
        if !span.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
            let _ = span.set_parent(parent);
        }
        let (role, handles) = (self.role, self.handles.clone());
        let fut = self.inner.call(req).instrument(span.clone());
        Box::pin(async move {
            let response = fut.await?;
            let route = response.extensions().get::<MatchedRoute>().map(|r| r.0);
            let status = response.status().as_u16();
            let grpc_status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(route) = route.filter(|_| !grpc && !span.is_disabled()) {
                span.record("http.route", route);
                // The OTel span already started (its parent came from the
                // request), so rename it through the OTel API, not a field.
                span.context().span().update_name(format!("{method} {route}"));
            }
            let finish = Finish {
                span,
                started,
                role,
                handles,
                grpc,
                method,
                route,
                status,
                grpc_status,
                request_size,
                sent: 0,
            };
            Ok(response.map(|body| TelemetryBody { inner: body, finish: Some(finish) }))
        })
    }
}

/// The target of the per-request spans (the log formatter leaves them out).
pub const SPAN_TARGET: &str = module_path!();

fn content_length(headers: &HeaderMap) -> u64 {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// What is recorded once the response is over.
struct Finish {
    span: Span,
    started: Instant,
    role: &'static str,
    handles: Arc<Handles>,
    grpc: bool,
    /// The request method for HTTP, the full RPC name for gRPC.
    method: Cow<'static, str>,
    route: Option<&'static str>,
    status: u16,
    grpc_status: Option<String>,
    request_size: u64,
    sent: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        if self.grpc {
            // No grpc-status at all means the stream ended abnormally.
            let code = self.grpc_status.clone().unwrap_or_else(|| "2".into());
            let name = grpc_code_name(&code);
            self.span.record("rpc.response.status_code", name);
            if code != "0" {
                self.span.record("otel.status_code", "ERROR");
            }
            let role = self.role;
            let key = (self.method.as_ref(), name);
            self.handles.grpc.with(
                &key,
                |(method, name)| {
                    let labels = [
                        ("rpc_system_name", "grpc".to_owned()),
                        ("rpc_method", method.clone()),
                        ("rpc_response_status_code", (*name).to_owned()),
                        ("edgebox_role", role.to_owned()),
                    ];
                    metrics::histogram!("rpc_server_call_duration_seconds", &labels)
                },
                |duration| duration.record(seconds),
            );
            return;
        }
        self.span.record("http.response.status_code", i64::from(self.status));
        self.span.record("http.response.body.size", self.sent as i64);
        if self.status >= 500 {
            self.span.record("otel.status_code", "ERROR");
        }
        let role = self.role;
        let key = (self.method.as_ref(), self.route, self.status);
        let (request_size, sent) = (self.request_size as f64, self.sent as f64);
        self.handles.http.with(
            &key,
            |(method, route, status)| {
                let labels = [
                    ("http_request_method", method.clone()),
                    ("http_route", route.unwrap_or("").to_owned()),
                    ("http_response_status_code", status.to_string()),
                    ("edgebox_role", role.to_owned()),
                ];
                [
                    metrics::histogram!("http_server_request_duration_seconds", &labels),
                    metrics::histogram!("http_server_request_body_size_bytes", &labels),
                    metrics::histogram!("http_server_response_body_size_bytes", &labels),
                ]
            },
            |[duration, request, response]| {
                duration.record(seconds);
                request.record(request_size);
                response.record(sent);
            },
        );
    }
}

fn grpc_code_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

pin_project_lite::pin_project! {
    /// The response body, counted as it goes out; finishing it (or dropping
    /// it early) closes the span and records the metrics.
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }
}

impl<B: Body> Body for TelemetryBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(f) = this.finish.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        f.sent += bytes::Buf::remaining(data) as u64;
                    }
                    if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                        f.grpc_status = status.to_str().ok().map(str::to_owned);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.finish.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn render_after<F: std::future::Future<Output = ()>>(fut: F) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(fut);
        });
        handle.render()
    }

    #[test]
    fn http_requests_are_measured_by_route_once_the_body_is_sent() {
        let out = render_after(async {
            let svc = tower::service_fn(|_req: Request<Full<Bytes>>| async {
                let mut r = Response::new(Full::new(Bytes::from_static(b"hello")));
                r.extensions_mut().insert(MatchedRoute("/items/{id}"));
                Ok::<_, Infallible>(r)
            });
            let mut svc = HttpTelemetryLayer::new("test").layer(svc);
            let req = Request::get("/items/7").body(Full::new(Bytes::new())).unwrap();
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        });
        assert!(out.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/items/{id}\",http_response_status_code=\"200\",edgebox_role=\"test\"} 1"), "{out}");
        assert!(out.contains("http_server_response_body_size_bytes_sum{http_request_method=\"GET\",http_route=\"/items/{id}\",http_response_status_code=\"200\",edgebox_role=\"test\"} 5"), "{out}");
    }

    #[test]
    fn grpc_calls_take_their_status_from_the_trailers() {
        let out = render_after(async {
            let svc = tower::service_fn(|_req: Request<Full<Bytes>>| async {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "5".parse().unwrap());
                let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                    vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))), Ok(Frame::trailers(trailers))];
                Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(frames))))
            });
            let mut svc = HttpTelemetryLayer::new("test").layer(svc);
            let req = Request::post("/pkg.Things/Get")
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            resp.into_body().collect().await.unwrap();
        });
        assert!(out.contains("rpc_server_call_duration_seconds_count{rpc_system_name=\"grpc\",rpc_method=\"pkg.Things/Get\",rpc_response_status_code=\"NOT_FOUND\",edgebox_role=\"test\"} 1"), "{out}");
    }

    #[test]
    fn a_response_dropped_midway_is_still_recorded() {
        let out = render_after(async {
            let svc = tower::service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"never read"))))
            });
            let mut svc = HttpTelemetryLayer::new("test").layer(svc);
            let req = Request::get("/x").body(Full::new(Bytes::new())).unwrap();
            drop(svc.ready().await.unwrap().call(req).await.unwrap());
        });
        assert!(out.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"\",http_response_status_code=\"200\",edgebox_role=\"test\"} 1"), "{out}");
    }
}
