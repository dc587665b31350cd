//! One request through the gateway, in the order that refuses cheaply and
//! early: who is calling (401), which operation (404, 405), may they (403,
//! or a logged shadow denial), the body within its limit (413, 408), the
//! parameters and body against the document (400, 415), then the upstream
//! (stable or canary) with hop-by-hop headers dropped, the caller's ID, the
//! colour header and traceparent passed on, and the answer streamed back
//! (502, 504 when it fails). Every request is counted, timed and logged
//! with its caller's SPIFFE ID.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use metrics::{Counter, Histogram};

use super::canary::{self, Side};
use super::config::MetricsCaller;
use super::identity::{Proof, identify};
use super::policy::{Decision, decide};
use super::problem::Problem;
use super::state::{Current, State};
use super::upstream::UpstreamError;
use super::validate;
use crate::core::httpserve::Peer;
use crate::core::telemetry::{HandleCache, Lookup};
use crate::core::tls::spiffe::SpiffeId;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type GatewayBody = BoxBody<Bytes, BoxError>;

/// The header upstreams read the authenticated caller from; a caller's own
/// copy is dropped.
static CALLER_HEADER: HeaderName = HeaderName::from_static("x-edgebox-caller");

/// What the access log and metrics say of one request, borrowed from the
/// state in service and the connection: nothing here is allocated for a
/// request whose caller came with the connection.
struct Outcome<'a> {
    service: &'a str,
    route: &'a str,
    side: &'static str,
    caller: Cow<'a, str>,
    /// The caller as the request metrics label it (metrics_caller).
    caller_label: Cow<'a, str>,
}

/// Serves one request with the state in service.
pub async fn handle(current: Arc<Current>, mut req: Request<Incoming>) -> Result<Response<GatewayBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let peer = req.extensions_mut().remove::<Peer>();
    // One state for the whole request, its access line included.
    let state = current.get();
    let mut outcome = Outcome {
        service: "-",
        route: "-",
        side: "-",
        caller: Cow::Borrowed("anonymous"),
        caller_label: Cow::Borrowed("anonymous"),
    };
    let path = req.uri().path().to_owned();
    let resp = match &state {
        Some(state) => match serve(state, peer.as_ref(), req, &mut outcome).await {
            Ok(resp) => resp,
            Err(problem) => refuse(&problem, &outcome),
        },
        None => refuse(&Problem::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the gateway is starting"), &outcome),
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = &state {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        state.access.write(&super::access::Entry {
            ts,
            caller: &outcome.caller,
            method: method.as_str(),
            path: &path,
            route: outcome.route,
            service: outcome.service,
            upstream: outcome.side,
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        });
    }
    let key = (outcome.service, outcome.route, outcome.side, outcome.caller_label.as_ref(), status);
    let record = |(requests, duration): &(Counter, Histogram)| {
        requests.increment(1);
        duration.record(elapsed.as_secs_f64());
    };
    match &state {
        Some(state) => state.metrics.with(&key, register, record),
        None => record(&register(&key.to_key())),
    }
    Ok(resp)
}

/// The request metrics' label set: service, route, upstream side, caller
/// label, status code.
type MetricsKey = (String, String, &'static str, String, u16);

/// The request metrics, by label set.
pub type RequestMetrics = HandleCache<MetricsKey, (Counter, Histogram)>;

impl Lookup<MetricsKey> for (&str, &str, &'static str, &str, u16) {
    fn is(&self, k: &MetricsKey) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2 && self.3 == k.3 && self.4 == k.4
    }

    fn to_key(&self) -> MetricsKey {
        (self.0.to_owned(), self.1.to_owned(), self.2, self.3.to_owned(), self.4)
    }
}

fn register((service, route, side, caller, status): &MetricsKey) -> (Counter, Histogram) {
    let requests = metrics::counter!("edgebox_gateway_requests_total", "service" => service.clone(),
        "route" => route.clone(), "upstream" => *side, "caller" => caller.clone(), "code" => status.to_string());
    let duration = metrics::histogram!("edgebox_gateway_request_duration_seconds", "service" => service.clone(),
        "route" => route.clone(), "upstream" => *side);
    (requests, duration)
}

fn refuse(problem: &Problem, outcome: &Outcome<'_>) -> Response<GatewayBody> {
    metrics::counter!("edgebox_gateway_rejections_total", "service" => outcome.service.to_owned(), "reason" => problem.reason)
        .increment(1);
    problem.response().map(|b| b.map_err(|never| match never {}).boxed())
}

async fn serve<'a>(
    state: &'a State,
    peer: Option<&'a Peer>,
    req: Request<Incoming>,
    outcome: &mut Outcome<'a>,
) -> Result<Response<GatewayBody>, Problem> {
    let (mut parts, body) = req.into_parts();
    let (caller, proof) = identify(peer, &parts.headers, state.jwt.as_ref(), state.cfg.allow_anonymous)?;
    if let Some(id) = &caller {
        let (text, domain) = match id {
            Cow::Borrowed(id) => (Cow::Borrowed(id.as_str()), Cow::Borrowed(id.trust_domain())),
            Cow::Owned(id) => (Cow::Owned(id.as_str().to_owned()), Cow::Owned(id.trust_domain().to_owned())),
        };
        outcome.caller_label = match state.cfg.metrics_caller {
            MetricsCaller::Id => text.clone(),
            MetricsCaller::TrustDomain => domain,
            MetricsCaller::None => Cow::Borrowed("-"),
        };
        outcome.caller = text;
    }
    let (svc, matched) = state.route(parts.uri.path()).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "not_found", format!("no operation has the path {:?}", parts.uri.path()))
    })?;
    outcome.service = &svc.name;
    let op = matched.route.operation(&parts.method).ok_or_else(|| Problem {
        allow: Some(matched.route.allowed()),
        ..Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} {} is not an operation (allowed: {})",
                parts.method,
                matched.route.template,
                matched.route.allowed()
            ),
        )
    })?;
    outcome.route = &op.route;
    match decide(caller.as_deref(), op.allow.as_deref(), op.shadow) {
        Decision::Allow => {}
        Decision::Deny(why) => {
            return Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", format!("{}: {why}", op.id)));
        }
        Decision::ShadowDeny(why) => {
            metrics::counter!("edgebox_gateway_shadow_denials_total", "service" => svc.name.clone(), "route" => op.route.clone())
                .increment(1);
            tracing::warn!(caller = %outcome.caller, operation = %op.id, service = %svc.name, reason = why, "gateway shadow policy would deny this request");
        }
    }
    let body = read_body(body, state.cfg.max_body_bytes, Duration::from_secs(state.cfg.body_timeout_s)).await?;
    validate::check(op, &matched.params, parts.uri.query(), &parts.headers, &body)?;
    let side = canary::pick(svc, &parts.headers, &state.colour, caller.as_deref());
    outcome.side = side.as_str();
    let upstream = match (side, &svc.canary) {
        (Side::Canary, Some(c)) => &c.upstream,
        _ => &svc.stable,
    };
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    // The path and query as the client sent them, shared, not copied.
    *out.uri_mut() = parts.uri.path_and_query().cloned().map_or_else(Uri::default, Uri::from);
    let incoming = std::mem::take(&mut parts.headers);
    let caller_id = caller.as_deref().map(SpiffeId::as_str);
    *out.headers_mut() = forwarded_headers(incoming, peer, caller_id, proof, state.cfg.tls.is_some());
    // An HTTP/1 client sends one request at a time: its connection can own
    // the upstream connections it uses.
    let local = peer.filter(|_| parts.version < http::Version::HTTP_2).map(|p| &p.local);
    // The caller learns which service failed, not where it lives: the
    // upstream's address and error go to the log.
    let resp = upstream.send(out, local).await.map_err(|e| {
        tracing::warn!(service = %svc.name, upstream = outcome.side, error = %e, "gateway upstream request failed");
        match e {
            UpstreamError::Timeout(..) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("service {:?} did not answer in time", svc.name),
            ),
            UpstreamError::Failed(..) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("service {:?} is unavailable", svc.name),
            ),
        }
    })?;
    let (mut head, body) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    Ok(Response::from_parts(head, body.boxed()))
}

/// The request body, whole, within the size limit and the time limit.
async fn read_body(body: Incoming, limit: usize, deadline: Duration) -> Result<Bytes, Problem> {
    // Most requests have none: no timer for those.
    if http_body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )),
        Ok(Err(e)) => Err(Problem::new(StatusCode::BAD_REQUEST, "bad_body", format!("reading the request body: {e}"))),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {deadline:?}"),
        )),
    }
}

/// Headers as the upstream gets them: hop-by-hop ones, Host, a consumed
/// JWT-SVID and any caller-supplied x-edgebox-caller dropped; the
/// authenticated caller (`caller`, its SPIFFE ID) and the X-Forwarded-* set
/// added.
fn forwarded_headers(
    incoming: HeaderMap,
    peer: Option<&Peer>,
    caller: Option<&str>,
    proof: Proof,
    tls: bool,
) -> HeaderMap {
    let mut h = incoming;
    strip_hop_by_hop(&mut h);
    let host = h.remove(http::header::HOST);
    h.remove(&CALLER_HEADER);
    if proof == Proof::Jwt {
        h.remove(http::header::AUTHORIZATION);
    }
    if let Some(id) = caller.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(CALLER_HEADER.clone(), id);
    }
    if let Some(peer) = peer {
        let forwarded_for = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", peer.addr.ip())),
            None => {
                // Formatted on the stack: one allocation, the value's own.
                let mut buf = std::io::Cursor::new([0u8; 48]);
                match write!(buf, "{}", peer.addr.ip()) {
                    Ok(()) => HeaderValue::from_bytes(&buf.get_ref()[..buf.position() as usize]),
                    Err(_) => HeaderValue::from_str(&peer.addr.ip().to_string()),
                }
            }
        };
        if let Ok(v) = forwarded_for {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if tls { "https" } else { "http" }));
    if let Some(host) = host {
        h.insert(X_FORWARDED_HOST.clone(), host);
    }
    h
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop-by-hop headers (RFC 9110 §7.6.1, and the older ones still seen).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Drops the hop-by-hop headers, and those the Connection header names.
/// Most messages have none, which one pass over their names tells.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(|name| HOP_BY_HOP.contains(&name.as_str())) {
        return;
    }
    let named: Vec<String> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in named {
        h.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn upstreams_get_the_caller_and_forwarding_headers_without_hop_by_hop_ones() {
        let peer = Peer::new("192.0.2.7:4711".parse().unwrap(), None);
        let incoming = headers(&[
            ("host", "api.example"),
            ("connection", "keep-alive, X-Private"),
            ("x-private", "dropped: the Connection header names it"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("authorization", "Bearer jwt"),
            ("x-edgebox-caller", "spiffe://edge.example/forged"),
            ("x-forwarded-for", "198.51.100.1"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ]);
        let out = forwarded_headers(incoming, Some(&peer), Some("spiffe://edge.example/node/1"), Proof::Jwt, true);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["traceparent", "x-edgebox-caller", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]
        );
        assert_eq!(out[&CALLER_HEADER], "spiffe://edge.example/node/1");
        assert_eq!(out[&X_FORWARDED_FOR], "198.51.100.1, 192.0.2.7");
        assert_eq!(out[&X_FORWARDED_HOST], "api.example");
        assert_eq!(out[&X_FORWARDED_PROTO], "https");

        // Without hop-by-hop headers nothing but those named goes; an
        // X.509 caller's Authorization header is the upstream's business.
        let plain = headers(&[("authorization", "Basic eA=="), ("content-type", "application/json")]);
        let out = forwarded_headers(plain, None, None, Proof::Svid, false);
        assert_eq!(out["authorization"], "Basic eA==");
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out[&X_FORWARDED_PROTO], "http");
        assert!(!out.contains_key(&CALLER_HEADER) && !out.contains_key(&X_FORWARDED_FOR));

        // A first hop, over IPv4 and the longest IPv6 text.
        for (addr, ip) in [
            ("192.0.2.7:4711", "192.0.2.7"),
            ("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ] {
            let peer = Peer::new(addr.parse().unwrap(), None);
            let out = forwarded_headers(HeaderMap::new(), Some(&peer), None, Proof::Anonymous, true);
            assert_eq!(out[&X_FORWARDED_FOR], ip);
        }
    }
}
