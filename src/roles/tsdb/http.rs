//! The tsdb's HTTP API: Influx writes, JSON-lines import/export and the
//! Prometheus HTTP API, on one listener behind the shared telemetry layer.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::ingest::{self, Precision};
use super::params::Params;
use super::storage::{AppendError, Storage};
use super::{lineproto, query, transfer};
use crate::core::auth::Auth;
use crate::core::httpserve::{FullResponse, respond};

/// What every request handler shares.
pub struct Api {
    pub storage: Arc<Storage>,
    pub auth: Auth,
    pub max_body: usize,
    /// What one PromQL query may load and take, and how many run at once.
    pub queries: super::query::Queries,
    pub limits: lineproto::Limits,
    /// Line-protocol series keys already resolved to ids.
    pub keys: ingest::KeyCache,
}

pub const NAME: &str = "tsdb";

pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Result<FullResponse, Infallible> {
    if let Some(denied) = api.auth.check(&req, NAME) {
        return Ok(denied);
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let resp = match (method.clone(), path.as_str()) {
        (Method::POST, "/write") => write(&api, req, false).await,
        (Method::POST, "/api/v2/write") => write(&api, req, true).await,
        (Method::POST, "/api/v1/write") => remote_write(&api, req).await,
        (Method::POST, "/api/v1/import") => import(&api, req).await,
        (Method::GET | Method::POST, "/api/v1/export") => export(&api, req).await,
        (Method::GET | Method::POST, "/api/v1/query") => with_params(&api, req, "/api/v1/query", query::instant).await,
        (Method::GET | Method::POST, "/api/v1/query_range") => {
            with_params(&api, req, "/api/v1/query_range", query::range).await
        }
        (Method::GET | Method::POST, "/api/v1/series") => with_params(&api, req, "/api/v1/series", query::series).await,
        (Method::GET | Method::POST, "/api/v1/labels") => with_params(&api, req, "/api/v1/labels", query::labels).await,
        (Method::GET, p) if p.starts_with("/api/v1/label/") && p.ends_with("/values") => {
            let name = p.trim_start_matches("/api/v1/label/").trim_end_matches("/values").to_owned();
            with_params(&api, req, "/api/v1/label/{name}/values", move |api, params| {
                let name = name.clone();
                async move { query::label_values(api, params, name).await }
            })
            .await
        }
        (Method::GET, "/api/v1/status/buildinfo") => prom_ok(
            "/api/v1/status/buildinfo",
            json!({"version": "2.42.0", "revision": env!("EDGEBOX_GIT_COMMIT"), "branch": "edgebox",
                   "buildUser": "edgebox", "buildDate": "", "goVersion": format!("edgebox {}", env!("CARGO_PKG_VERSION"))}),
        ),
        // Grafana asks for both; no exemplars or metric metadata are kept
        // (remote_write carries them optionally), so both answer empty, as a
        // Prometheus without any does.
        (Method::GET | Method::POST, "/api/v1/query_exemplars") => prom_ok("/api/v1/query_exemplars", json!([])),
        (Method::GET, "/api/v1/metadata") => prom_ok("/api/v1/metadata", json!({})),
        (Method::GET, "/health" | "/ping") => respond("/health", StatusCode::NO_CONTENT, "text/plain", ""),
        (_, "/write" | "/api/v2/write" | "/api/v1/write" | "/api/v1/import") => {
            respond("", StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n")
        }
        _ => respond("", StatusCode::NOT_FOUND, "text/plain", format!("no endpoint {method} {path}\n")),
    };
    Ok(resp)
}

/// Reads the body, gzip-decoded when the request says so, within the limit.
async fn body(req: Request<Incoming>, max: usize) -> Result<(http::request::Parts, Bytes), FullResponse> {
    let (parts, incoming) = req.into_parts();
    let gzip = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let too_large = || {
        respond("", StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("request body over the {max}-byte limit\n"))
    };
    let raw = match Limited::new(incoming, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(respond("", StatusCode::BAD_REQUEST, "text/plain", format!("reading the body: {e}\n"))),
    };
    if !gzip {
        return Ok((parts, raw));
    }
    use std::io::Read;
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(max as u64 + 1);
    if let Err(e) = decoder.read_to_end(&mut out) {
        return Err(respond("", StatusCode::BAD_REQUEST, "text/plain", format!("gzip body: {e}\n")));
    }
    if out.len() > max {
        return Err(too_large());
    }
    Ok((parts, Bytes::from(out)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `/write` (InfluxDB 1.x) and `/api/v2/write`: 204 when every line was
/// stored, 400 naming the refused lines (the others are stored), 413 over
/// the size limit, 429 over a series limit.
async fn write(api: &Api, req: Request<Incoming>, v2: bool) -> FullResponse {
    let route = if v2 { "/api/v2/write" } else { "/write" };
    let params = Params::parse(req.uri().query(), None);
    let precision = match Precision::parse(params.get("precision"), v2) {
        Ok(p) => p,
        Err(e) => return influx_error(route, StatusCode::BAD_REQUEST, &e),
    };
    let (_, body) = match body(req, api.max_body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let now = now_ms();
    let (outcome, errors) = match ingest::write(&api.storage, &api.keys, &body, precision, now, &api.limits).await {
        Ok(o) => o,
        Err(AppendError::Cardinality(msg)) => return influx_error(route, StatusCode::TOO_MANY_REQUESTS, &msg),
        Err(AppendError::Store(e)) => {
            tracing::error!(error = %format!("{e:#}"), "tsdb write failed");
            return influx_error(route, StatusCode::INTERNAL_SERVER_ERROR, "storage failure; nothing was stored");
        }
    };
    match ingest::partial_write_message(&errors, &outcome) {
        None => respond(route, StatusCode::NO_CONTENT, "text/plain", ""),
        Some(msg) => influx_error(route, StatusCode::BAD_REQUEST, &msg),
    }
}

/// Prometheus remote_write 1.0: 204 when stored; 400 for an undecodable body
/// or refused samples (Prometheus does not retry a 4xx); 429 over a series
/// limit and 500 on a storage failure, which senders retry.
async fn remote_write(api: &Api, req: Request<Incoming>) -> FullResponse {
    let route = "/api/v1/write";
    // remote_write bodies are snappy, never gzip: read them raw.
    let (_, body) = match body(req, api.max_body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let (samples, mut rejected) = match super::remote_write::decode(&body, api.max_body.saturating_mul(8)) {
        Ok(d) => d,
        Err(e) => return respond(route, StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    match api.storage.append(samples, now_ms()).await {
        Ok(outcome) => {
            rejected.extend(outcome.rejected);
            if rejected.is_empty() {
                respond(route, StatusCode::NO_CONTENT, "text/plain", "")
            } else {
                let shown: Vec<String> = rejected.iter().take(10).map(|r| r.1.clone()).collect();
                respond(
                    route,
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("{} sample(s) or series refused: {}\n", rejected.len(), shown.join("; ")),
                )
            }
        }
        Err(AppendError::Cardinality(msg)) => {
            respond(route, StatusCode::TOO_MANY_REQUESTS, "text/plain", format!("{msg}\n"))
        }
        Err(AppendError::Store(e)) => {
            tracing::error!(error = %format!("{e:#}"), "tsdb remote_write failed");
            respond(route, StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "storage failure; nothing was stored\n")
        }
    }
}

fn influx_error(route: &'static str, status: StatusCode, message: &str) -> FullResponse {
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::PAYLOAD_TOO_LARGE => "request too large",
        StatusCode::TOO_MANY_REQUESTS => "too many requests",
        _ => "internal error",
    };
    let mut r = respond(
        route,
        status,
        "application/json",
        json!({"code": code, "message": message, "error": message}).to_string(),
    );
    if let Ok(v) = http::HeaderValue::from_str(&message.chars().take(200).collect::<String>()) {
        r.headers_mut().insert("x-influxdb-error", v);
    }
    r
}

async fn import(api: &Api, req: Request<Incoming>) -> FullResponse {
    let (_, body) = match body(req, api.max_body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    transfer::import(api, &body, now_ms()).await
}

/// The query string and, for POST, the url-encoded body, as parameters.
async fn request_params(api: &Api, req: Request<Incoming>) -> Result<Params, FullResponse> {
    let query = req.uri().query().map(str::to_owned);
    let form = req.method() == Method::POST;
    let (_, body) = body(req, api.max_body).await?;
    Ok(Params::parse(query.as_deref(), form.then_some(&body[..])))
}

async fn export(api: &Api, req: Request<Incoming>) -> FullResponse {
    let route = "/api/v1/export";
    let params = match request_params(api, req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match transfer::export_lines(api, &params).await {
        Ok(lines) => respond(route, StatusCode::OK, "application/x-ndjson", lines),
        Err(e) => prom_error(route, e),
    }
}

/// Runs a Prometheus-API handler with the query string and (for POST) the
/// url-encoded body as parameters.
async fn with_params<F, Fut, T>(api: &Arc<Api>, req: Request<Incoming>, route: &'static str, f: F) -> FullResponse
where
    F: Fn(Arc<Api>, Params) -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
    T: serde::Serialize,
{
    let params = match request_params(api, req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match f(api.clone(), params).await {
        Ok(data) => prom_ok(route, data),
        Err(e) => prom_error(route, e),
    }
}

/// A Prometheus-API failure: its HTTP status and errorType.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind: "bad_data", message: message.into() }
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, kind: "execution", message: message.into() }
    }
    /// Prometheus's answer to a query past its timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, kind: "timeout", message: message.into() }
    }
    pub fn internal(e: anyhow::Error) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: format!("{e:#}") }
    }
}

fn prom_ok(route: &'static str, data: impl serde::Serialize) -> FullResponse {
    #[derive(serde::Serialize)]
    struct Success<T> {
        status: &'static str,
        data: T,
    }
    match serde_json::to_string(&Success { status: "success", data }) {
        Ok(body) => respond(route, StatusCode::OK, "application/json", body),
        Err(e) => prom_error(route, ApiError::internal(e.into())),
    }
}

fn prom_error(route: &'static str, e: ApiError) -> FullResponse {
    respond(
        route,
        e.status,
        "application/json",
        json!({"status": "error", "errorType": e.kind, "error": e.message}).to_string(),
    )
}
