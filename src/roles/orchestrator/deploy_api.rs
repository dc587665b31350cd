//! The desired-state half of the API: deployments and their rollouts, and
//! the blobs they carry. `PUT /v1/deployments/{name}` stores a version,
//! `GET /v1/deployments[/{name}]` shows each with its rollout's progress,
//! `POST /v1/deployments/{name}/resume` resumes a paused rollout, `DELETE`
//! removes one; `POST /v1/blobs` and `GET /v1/blobs/{digest}` store and
//! serve files by SHA-256, `DELETE /v1/blobs/{digest}` removes one no
//! deployment names. (Nodes read their own desired state at
//! `GET /v1/nodes/{id}/desired`, api.rs.)

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::api::{self, Api, Body, error, full, read_body, read_json};
use super::blobs;
use super::command::{Command, Outcome};
use super::deployment::{Deployment, Spec, check_name};
use super::registry::now_ms;
use super::rollout::{Progress, Put, Rollouts};
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
        (&Method::DELETE, ["v1", "deployments", name]) => {
            const ROUTE: &str = "/v1/deployments/{name}";
            match api.commit(ROUTE, Command::DeleteDeployment { name: name.to_string() }).await {
                Ok(Outcome::Deleted(true)) => full(ROUTE, StatusCode::OK, json!({ "deleted": name })),
                Ok(Outcome::Deleted(false)) => error(ROUTE, StatusCode::NOT_FOUND, format!("no deployment {name}")),
                Ok(other) => api::unexpected(ROUTE, other),
                Err(refused) => refused,
            }
        }
        (&Method::POST, ["v1", "deployments", name, "resume"]) => {
            const ROUTE: &str = "/v1/deployments/{name}/resume";
            // Failures are counted from the agents' reports, which the
            // leader holds (api.rs sends this request there).
            let Some(accepted_failures) = api.rollouts.failures(name, &api.registry, &api.detector) else {
                return error(ROUTE, StatusCode::NOT_FOUND, format!("no deployment {name}"));
            };
            match api.commit(ROUTE, Command::Resume { name: name.to_string(), accepted_failures }).await {
                Ok(Outcome::Resumed(Some(d))) => {
                    tracing::info!(deployment = %name, accepted_failures, "orchestrator: rollout resumed");
                    full(ROUTE, StatusCode::OK, serde_json::to_value(&d).unwrap_or_default())
                }
                Ok(Outcome::Resumed(None)) => error(ROUTE, StatusCode::NOT_FOUND, format!("no deployment {name}")),
                Ok(other) => api::unexpected(ROUTE, other),
                Err(refused) => refused,
            }
        }
        (&Method::POST, ["v1", "blobs"]) => {
            const ROUTE: &str = "/v1/blobs";
            let body = match read_body(ROUTE, req, api.max_blob).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            let size = body.len();
            let digest = fleet::digest_of(&body);
            match api.commit(ROUTE, Command::PutBlob { digest: digest.clone(), bytes: body.to_vec() }).await {
                Ok(_) => {
                    metrics::counter!("edgebox_orchestrator_blobs_stored_total").increment(1);
                    full(ROUTE, StatusCode::CREATED, json!({ "digest": digest, "bytes": size }))
                }
                Err(refused) => refused,
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
                Err(e) => error(ROUTE, StatusCode::SERVICE_UNAVAILABLE, format!("reading the blob: {e:#}")),
            }
        }
        (&Method::DELETE, ["v1", "blobs", digest]) => {
            const ROUTE: &str = "/v1/blobs/{digest}";
            if let Err(e) = fleet::parse_digest(digest) {
                return error(ROUTE, StatusCode::BAD_REQUEST, e);
            }
            match api.commit(ROUTE, Command::DeleteBlob { digest: digest.to_string() }).await {
                Ok(Outcome::BlobDeleted(Ok(true))) => {
                    metrics::counter!("edgebox_orchestrator_blobs_deleted_total").increment(1);
                    full(ROUTE, StatusCode::OK, json!({ "deleted": digest }))
                }
                Ok(Outcome::BlobDeleted(Ok(false))) => error(ROUTE, StatusCode::NOT_FOUND, format!("no blob {digest}")),
                Ok(Outcome::BlobDeleted(Err(users))) => full(
                    ROUTE,
                    StatusCode::CONFLICT,
                    json!({
                        "error": format!("blob {digest} is a file of deployment(s) {}: delete them or put versions without it, and let their rollouts finish", users.join(", ")),
                        "deployments": users,
                    }),
                ),
                Ok(other) => api::unexpected(ROUTE, other),
                Err(refused) => refused,
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
    if let Err(e) = Rollouts::check(&spec) {
        return error(ROUTE, StatusCode::BAD_REQUEST, e);
    }
    let cmd = Command::PutDeployment { name: name.to_owned(), spec: Box::new(spec), now_ms: now_ms() };
    match api.commit(ROUTE, cmd).await {
        Ok(Outcome::Put(Ok(Put::Created(d)))) => {
            full(ROUTE, StatusCode::CREATED, serde_json::to_value(&d).unwrap_or_default())
        }
        Ok(Outcome::Put(Ok(Put::Updated(d) | Put::Unchanged(d)))) => {
            full(ROUTE, StatusCode::OK, serde_json::to_value(&d).unwrap_or_default())
        }
        Ok(Outcome::Put(Err(e))) => error(ROUTE, StatusCode::BAD_REQUEST, e),
        Ok(other) => api::unexpected(ROUTE, other),
        Err(refused) => refused,
    }
}
