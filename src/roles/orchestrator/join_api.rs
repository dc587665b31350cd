//! Joining and node identity on the API. `POST /v1/join` trades a join
//! token (join.rs) and a certificate request for a node certificate
//! (ca.rs); `POST /v1/nodes/{id}/certificate` renews one over the node's
//! own mutual TLS; `/v1/join-tokens` is the operator's. A caller presenting
//! a node certificate is that node and nothing more: it may register and
//! read itself, keep its heartbeat stream, read its desired state and the
//! blobs it names, and renew its certificate; everything else is 403.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::api::{self, Api, Body, error, full, read_json};
use super::command::{Command, Outcome};
use super::join::{self, Refused};
use super::node::check_id;
use crate::core::httpserve::Peer;

/// What a joining node sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    id: String,
    #[serde(default)]
    machine_id: Option<String>,
    /// PEM certificate request signed by the node's key.
    csr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    csr: String,
}

/// The node a request's client certificate names, when it is one of ours.
pub fn node_of<B>(api: &Api, req: &Request<B>) -> Option<String> {
    let ca = api.ca()?;
    let peer = req.extensions().get::<Peer>()?;
    let id = peer.spiffe_id()?.ok()?;
    ca.node_of(id).map(str::to_owned)
}

/// Whether node `node` may make this request.
pub fn node_may(node: &str, method: &Method, segments: &[&str]) -> bool {
    match (method, segments) {
        (&Method::POST, ["v1", "nodes"]) => true, // the body's id is checked at registration
        (&Method::GET, ["v1", "nodes", id] | ["v1", "nodes", id, "desired"]) => *id == node,
        (&Method::POST, ["v1", "nodes", id, "heartbeats" | "certificate"]) => *id == node,
        (&Method::GET, ["v1", "blobs", _]) => true,
        _ => false,
    }
}

pub fn forbidden(node: &str, method: &Method, path: &str) -> Response<Body> {
    metrics::counter!("edgebox_orchestrator_node_forbidden_total").increment(1);
    error("", StatusCode::FORBIDDEN, format!("node {node}'s certificate does not allow {method} {path}"))
}

fn refused(e: Refused) -> Response<Body> {
    metrics::counter!("edgebox_orchestrator_joins_total", "outcome" => e.reason()).increment(1);
    match e {
        Refused::Store(e) => {
            tracing::error!(error = %format!("{e:#}"), "orchestrator: a join could not be stored");
            error("/v1/join", StatusCode::SERVICE_UNAVAILABLE, "the store could not be written; retry")
        }
        e => {
            tracing::warn!(reason = e.reason(), detail = %e, "orchestrator: join refused");
            error(
                "/v1/join",
                StatusCode::UNAUTHORIZED,
                "join token refused (unknown, expired, spent or not for this node)",
            )
        }
    }
}

/// `POST /v1/join`: `Authorization: Bearer <join token>`, `{"id", "csr"}`.
pub async fn join(api: &Api, req: Request<Incoming>) -> Response<Body> {
    const ROUTE: &str = "/v1/join";
    // The body is read first, whatever the answer (see api::handle).
    let token = crate::core::auth::bearer(&req).map(str::to_owned);
    let j: JoinRequest = match read_json(ROUTE, req, api.max_body, "join").await {
        Ok(j) => j,
        Err(refusal) => return refusal,
    };
    let Some(ca) = api.ca() else {
        return error(
            ROUTE,
            StatusCode::BAD_REQUEST,
            "joining needs the orchestrator on TLS ([orchestrator.tls]); node certificates are used over it",
        );
    };
    let Some(token) = token else {
        return refused(Refused::Malformed);
    };
    if let Err(e) = check_id(&j.id) {
        return error(ROUTE, StatusCode::BAD_REQUEST, e);
    }
    // A node id another machine registered is not handed to a newcomer.
    let owner = api.registry.with_node(&j.id, |n| n.reg.machine_id.clone()).flatten();
    if let Some(m) = owner.filter(|m| j.machine_id.as_ref() != Some(m)) {
        metrics::counter!("edgebox_orchestrator_joins_total", "outcome" => "conflict").increment(1);
        tracing::warn!(node = %j.id, registered_machine = %m, "orchestrator: join for a node another machine holds");
        return error(ROUTE, StatusCode::CONFLICT, format!("node {} is registered by another machine", j.id));
    }
    let redeem = match join::redeem(&token, &j.id) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let token_id = match api.commit(ROUTE, Command::RedeemToken(redeem)).await {
        Ok(Outcome::Redeemed(Ok(id))) => id,
        Ok(Outcome::Redeemed(Err(e))) => return refused(e),
        Ok(other) => return api::unexpected(ROUTE, other),
        Err(refusal) => return refusal,
    };
    match ca.issue(&j.id, &j.csr) {
        Ok(issued) => {
            metrics::counter!("edgebox_orchestrator_joins_total", "outcome" => "joined").increment(1);
            tracing::info!(node = %j.id, token = %token_id, spiffe_id = %issued.spiffe_id, "orchestrator: node joined");
            full(ROUTE, StatusCode::CREATED, json!(issued))
        }
        Err(e) => error(ROUTE, StatusCode::BAD_REQUEST, e),
    }
}

/// `POST /v1/nodes/{id}/certificate`: a node renews its certificate.
pub async fn renew(api: &Api, node: &str, req: Request<Incoming>) -> Response<Body> {
    const ROUTE: &str = "/v1/nodes/{id}/certificate";
    let Some(ca) = api.ca() else {
        return error(ROUTE, StatusCode::BAD_REQUEST, "node certificates need the orchestrator on TLS");
    };
    let r: RenewRequest = match read_json(ROUTE, req, api.max_body, "renewal").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    match ca.issue(node, &r.csr) {
        Ok(issued) => {
            tracing::info!(node, not_after_ms = issued.not_after_ms, "orchestrator: node certificate renewed");
            full(ROUTE, StatusCode::CREATED, json!(issued))
        }
        Err(e) => error(ROUTE, StatusCode::BAD_REQUEST, e),
    }
}

/// `/v1/join-tokens`: make, list and revoke join tokens.
pub async fn tokens(api: &Api, req: Request<Incoming>, segments: &[&str]) -> Response<Body> {
    const ROUTE: &str = "/v1/join-tokens";
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::POST, ["v1", "join-tokens"]) => {
            let r: join::Request = match read_json(ROUTE, req, api.max_body, "join token").await {
                Ok(r) => r,
                Err(refusal) => return refusal,
            };
            let (token, stored) = match join::make(r) {
                Ok(made) => made,
                Err(e) => return error(ROUTE, StatusCode::BAD_REQUEST, e),
            };
            let shown = stored.shown();
            if let Err(refusal) = api.commit(ROUTE, Command::CreateToken { stored }).await {
                return refusal;
            }
            tracing::info!(token = %shown.id, uses = shown.uses_left, expires_ms = shown.expires_ms, "orchestrator: join token made");
            full(
                ROUTE,
                StatusCode::CREATED,
                json!({"token": token, "id": shown.id, "expires_ms": shown.expires_ms, "uses": shown.uses_left, "node": shown.node}),
            )
        }
        (&Method::GET, ["v1", "join-tokens"]) => match join::list(&api.store).await {
            Ok(all) => full(ROUTE, StatusCode::OK, json!({ "tokens": all })),
            Err(e) => error(ROUTE, StatusCode::SERVICE_UNAVAILABLE, format!("reading the tokens: {e:#}")),
        },
        (&Method::DELETE, ["v1", "join-tokens", id]) => {
            const ROUTE: &str = "/v1/join-tokens/{id}";
            match api.commit(ROUTE, Command::RevokeToken { id: id.to_string() }).await {
                Ok(Outcome::Revoked(true)) => full(ROUTE, StatusCode::OK, json!({ "revoked": id })),
                Ok(Outcome::Revoked(false)) => error(ROUTE, StatusCode::NOT_FOUND, format!("no join token {id}")),
                Ok(other) => api::unexpected(ROUTE, other),
                Err(refusal) => refusal,
            }
        }
        _ => error("", StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", req.uri().path())),
    }
}
