//! One request through the gateway, in the order that refuses cheaply and
//! early: who is calling (401), which operation (404, 405), may they (403,
//! or a logged shadow denial), the body within its limit (413, 408), the
//! parameters and body against the document (400, 415), then the upstream
//! (stable or canary) with hop-by-hop headers dropped, the caller's ID, the
//! colour header and traceparent passed on, and the answer streamed back
//! (502, 504 when it fails). Every request is counted, timed and logged
//! with its caller's SPIFFE ID.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
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
use crate::core::telemetry::HandleCache;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type GatewayBody = BoxBody<Bytes, BoxError>;

/// The header upstreams read the authenticated caller from; a caller's own
/// copy is dropped.
static CALLER_HEADER: HeaderName = HeaderName::from_static("x-edgebox-caller");

/// What the access log and metrics say of one request.
struct Outcome {
    service: String,
    route: String,
    side: &'static str,
    caller: String,
    /// The caller as the request metrics label it (metrics_caller).
    caller_label: String,
}

/// Serves one request with the state in service.
pub async fn handle(current: Arc<Current>, req: Request<Incoming>) -> Result<Response<GatewayBody>, Infallible> {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut outcome = Outcome {
        service: "-".into(),
        route: "-".into(),
        side: "-",
        caller: "anonymous".into(),
        caller_label: "anonymous".into(),
    };
    // One state for the whole request, its access line included.
    let state = current.get();
    let resp = match &state {
        Some(state) => match serve(state, req, &mut outcome).await {
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
            route: &outcome.route,
            service: &outcome.service,
            upstream: outcome.side,
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        });
    }
    let key = (outcome.service, outcome.route, outcome.side, outcome.caller_label, status);
    let (requests, duration) = match &state {
        Some(state) => state.metrics.get(key, register),
        None => register(&key),
    };
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
    Ok(resp)
}

/// The request metrics, by (service, route, upstream side, caller label,
/// status code).
pub type RequestMetrics = HandleCache<(String, String, &'static str, String, u16), (Counter, Histogram)>;

fn register(
    (service, route, side, caller, status): &(String, String, &'static str, String, u16),
) -> (Counter, Histogram) {
    let requests = metrics::counter!("edgebox_gateway_requests_total", "service" => service.clone(),
        "route" => route.clone(), "upstream" => *side, "caller" => caller.clone(), "code" => status.to_string());
    let duration = metrics::histogram!("edgebox_gateway_request_duration_seconds", "service" => service.clone(),
        "route" => route.clone(), "upstream" => *side);
    (requests, duration)
}

fn refuse(problem: &Problem, outcome: &Outcome) -> Response<GatewayBody> {
    metrics::counter!("edgebox_gateway_rejections_total", "service" => outcome.service.clone(), "reason" => problem.reason)
        .increment(1);
    problem.response().map(|b| b.map_err(|never| match never {}).boxed())
}

async fn serve(state: &State, req: Request<Incoming>, outcome: &mut Outcome) -> Result<Response<GatewayBody>, Problem> {
    let (mut parts, body) = req.into_parts();
    let peer = parts.extensions.get::<Peer>();
    let (caller, proof) = identify(peer, &parts.headers, state.jwt.as_ref(), state.cfg.allow_anonymous)?;
    if let Some(id) = &caller {
        outcome.caller = id.to_string();
        outcome.caller_label = match state.cfg.metrics_caller {
            MetricsCaller::Id => outcome.caller.clone(),
            MetricsCaller::TrustDomain => id.trust_domain.clone(),
            MetricsCaller::None => "-".to_owned(),
        };
    }
    let (svc, matched) = state.route(parts.uri.path()).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "not_found", format!("no operation has the path {:?}", parts.uri.path()))
    })?;
    outcome.service = svc.name.clone();
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
    outcome.route = op.route.clone();
    match decide(caller.as_ref(), op.allow.as_deref(), op.shadow) {
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
    let side = canary::pick(svc, &parts.headers, &state.colour, caller.as_ref());
    outcome.side = side.as_str();
    let upstream = match (side, &svc.canary) {
        (Side::Canary, Some(c)) => &c.upstream,
        _ => &svc.stable,
    };
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
    let incoming = std::mem::take(&mut parts.headers);
    let caller_id = caller.as_ref().map(|_| outcome.caller.as_str());
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
    Ok(Response::from_parts(head, body.map_err(|e| Box::new(e) as BoxError).boxed()))
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
            Some(prior) => format!("{prior}, {}", peer.addr.ip()),
            None => peer.addr.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
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
    }
}
