//! The desired-state half of the API: deployments and their rollouts, and
//! the blobs they carry. `PUT /v1/deployments/{name}` stores a version,
//! `GET /v1/deployments[/{name}]` shows each with its rollout's progress,
//! `POST /v1/deployments/{name}/resume` resumes a paused rollout, `DELETE`
//! removes one; `POST /v1/blobs` and `GET /v1/blobs/{digest}` store and
//! serve files by SHA-256. (Nodes read their own desired state at
//! `GET /v1/nodes/{id}/desired`, api.rs.)

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::api::{Api, Body, error, full, read_body, read_json};
use super::blobs;
use super::deployment::{Deployment, Spec, check_name};
use super::rollout::{Progress, Put, PutError};
use crate::core::telemetry::MatchedRoute;
use crate::roles::fleet;

fn view(d: &Deployment, p: &Progress) -> serde_json::Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    v["progress"] = json!(p);
    v
}

pub async fn handle(api: &Api, req: Request<Incoming>, segments: &[&str]) -> Response<Body> {
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::GET, ["v1", "deployments"]) => {
            let all: Vec<_> = api.rollouts.list(&api.registry, &api.detector).iter().map(|(d, p)| view(d, p)).collect();
            full("/v1/deployments", StatusCode::OK, json!({ "deployments": all }))
        }
        (&Method::PUT, ["v1", "deployments", name]) => put(api, name, req).await,
        (&Method::GET, ["v1", "deployments", name]) => match api.rollouts.get(name, &api.registry, &api.detector) {
            Some((d, p)) => full("/v1/deployments/{name}", StatusCode::OK, view(&d, &p)),
            None => error("/v1/deployments/{name}", StatusCode::NOT_FOUND, format!("no deployment {name}")),
        },
        (&Method::DELETE, ["v1", "deployments", name]) => match api.rollouts.delete(name).await {
            Ok(true) => full("/v1/deployments/{name}", StatusCode::OK, json!({ "deleted": name })),
            Ok(false) => error("/v1/deployments/{name}", StatusCode::NOT_FOUND, format!("no deployment {name}")),
            Err(e) => unavailable("/v1/deployments/{name}", e),
        },
        (&Method::POST, ["v1", "deployments", name, "resume"]) => {
            const ROUTE: &str = "/v1/deployments/{name}/resume";
            match api.rollouts.resume(name, &api.registry, &api.detector).await {
                Ok(Some(d)) => full(ROUTE, StatusCode::OK, serde_json::to_value(&d).unwrap_or_default()),
                Ok(None) => error(ROUTE, StatusCode::NOT_FOUND, format!("no deployment {name}")),
                Err(e) => unavailable(ROUTE, e),
            }
        }
        (&Method::POST, ["v1", "blobs"]) => {
            const ROUTE: &str = "/v1/blobs";
            let body = match read_body(ROUTE, req, api.max_blob).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            let size = body.len();
            match blobs::put(&api.store, body.to_vec()).await {
                Ok(digest) => full(ROUTE, StatusCode::CREATED, json!({ "digest": digest, "bytes": size })),
                Err(e) => unavailable(ROUTE, e),
            }
        }
        (&Method::GET, ["v1", "blobs", digest]) => {
            const ROUTE: &str = "/v1/blobs/{digest}";
            if let Err(e) = fleet::parse_digest(digest) {
                return error(ROUTE, StatusCode::BAD_REQUEST, e);
            }
            match blobs::get(&api.store, digest).await {
                Ok(Some(bytes)) => {
                    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
                    resp.headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
                    resp.extensions_mut().insert(MatchedRoute(ROUTE));
                    resp
                }
                Ok(None) => error(ROUTE, StatusCode::NOT_FOUND, format!("no blob {digest}")),
                Err(e) => unavailable(ROUTE, e),
            }
        }
        _ => {
            let path = req.uri().path();
            error("", StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"))
        }
    }
}

async fn put(api: &Api, name: &str, req: Request<Incoming>) -> Response<Body> {
    const ROUTE: &str = "/v1/deployments/{name}";
    let spec: Result<Spec, _> = read_json(ROUTE, req, api.max_body, "deployment").await;
    if let Err(e) = check_name(name) {
        return error(ROUTE, StatusCode::BAD_REQUEST, e);
    }
    let spec = match spec {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    match api.rollouts.put(name, spec).await {
        Ok(Put::Created(d)) => full(ROUTE, StatusCode::CREATED, serde_json::to_value(&d).unwrap_or_default()),
        Ok(Put::Updated(d) | Put::Unchanged(d)) => {
            full(ROUTE, StatusCode::OK, serde_json::to_value(&d).unwrap_or_default())
        }
        Err(PutError::Invalid(e)) => error(ROUTE, StatusCode::BAD_REQUEST, e),
        Err(PutError::Store(e)) => unavailable(ROUTE, e),
    }
}

fn unavailable(route: &'static str, e: anyhow::Error) -> Response<Body> {
    tracing::error!(error = %format!("{e:#}"), route, "orchestrator: the store refused a write");
    error(route, StatusCode::SERVICE_UNAVAILABLE, "the store could not be written; retry")
}
