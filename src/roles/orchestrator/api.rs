//! The orchestrator's HTTP API (JSON): register, list, read and remove
//! nodes, the topology grouped by site, zone and architecture with who has
//! converged, a long-polled event feed, and the agents' heartbeat streams
//! (heartbeat.rs). Errors answer `{"error": "…"}` naming what was wrong.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::command::{Command, Outcome};
use super::deploy_api;
use super::heartbeat;
use super::join_api;
use super::liveness::{Detector, Health, Transition};
use super::node::{Node, Registration, check_id};
use super::registry::{Registered, Registry};
use super::replica::Replica;
use super::rollout::Rollouts;
use crate::core::auth::Auth;
use crate::core::telemetry::MatchedRoute;

pub const NAME: &str = "orchestrator";
/// Largest Raft call between members (an append can carry blobs).
const RAFT_MAX_BODY: usize = 512 << 20;
/// Most nodes in one page of GET /v1/nodes.
const MAX_PAGE: usize = 1000;
/// Longest long-poll of GET /v1/events.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How intervals are assigned.
#[derive(Debug, Clone, Copy)]
pub struct IntervalPolicy {
    pub budget_per_s: u32,
    pub min_ms: u64,
    pub max_ms: u64,
}

pub struct Api {
    pub registry: Arc<Registry>,
    /// The node CA, when the listener is on TLS (nodes join and use mTLS);
    /// set once it is committed (on a Raft cluster, after the first
    /// leader is elected).
    pub ca: std::sync::OnceLock<super::ca::NodeCa>,
    pub rollouts: Arc<Rollouts>,
    /// Where writes go: this store alone, or the Raft cluster.
    pub replica: Replica,
    pub store: crate::core::store::Store,
    pub max_blob: usize,
    pub detector: Detector,
    pub auth: Auth,
    pub max_body: usize,
    pub policy: IntervalPolicy,
    /// The heartbeat interval every node is assigned now.
    pub interval: watch::Receiver<u64>,
    pub interval_tx: watch::Sender<u64>,
}

impl Api {
    pub fn ca(&self) -> Option<&super::ca::NodeCa> {
        self.ca.get()
    }

    /// Commits a write; its outcome, or the answer when it could not be
    /// committed (503: the store failed, or no Raft leader was reachable).
    pub async fn commit(&self, route: &'static str, cmd: Command) -> Result<Outcome, Response<Body>> {
        let kind = cmd.kind();
        self.replica.commit(cmd).await.map_err(|e| {
            tracing::error!(command = kind, error = %format!("{e:#}"), route, "orchestrator: a write was not committed");
            error(route, StatusCode::SERVICE_UNAVAILABLE, format!("the write was not committed ({e}); retry"))
        })
    }

    /// Recomputes the interval after the fleet grew or shrank; histories
    /// restart when it moved (a step of the ladder, a tenth).
    pub fn fleet_changed(&self) {
        let p = self.policy;
        let next = heartbeat::interval_ms(self.registry.len(), p.budget_per_s, p.min_ms, p.max_ms);
        let now = *self.interval.borrow();
        if next != now {
            self.interval_tx.send_replace(next);
            self.detector.reassign(next);
            metrics::gauge!("edgebox_orchestrator_heartbeat_interval_seconds").set(next as f64 / 1000.0);
            tracing::info!(
                interval_ms = next,
                nodes = self.registry.len(),
                "orchestrator: heartbeat interval reassigned"
            );
        }
    }

    /// This orchestrator just became the leader (or started alone): every
    /// node gets one interval's grace from now, the interval follows the
    /// fleet, and rollouts are looked at.
    pub fn lead(&self, now: Instant) {
        let interval = *self.interval.borrow();
        self.registry.for_each(|n| {
            self.detector.forget(&n.reg.id);
            self.detector.watch(&n.reg.id, interval, now);
        });
        self.fleet_changed();
        self.rollouts.touch();
        if self.replica.status().is_some() {
            tracing::info!(nodes = self.registry.len(), "orchestrator: leading the raft cluster");
        }
    }

    /// Watches nodes registered or removed through other members (a Raft
    /// cluster applies them here without this member's API seeing them).
    pub fn reconcile(&self, now: Instant) {
        if self.detector.len() == self.registry.len() {
            return;
        }
        let interval = *self.interval.borrow();
        self.registry.for_each(|n| self.detector.watch(&n.reg.id, interval, now));
        for id in self.detector.ids() {
            if self.registry.with_node(&id, |_| ()).is_none() {
                self.detector.forget(&id);
            }
        }
        self.fleet_changed();
    }

    /// A heartbeat from `id`; false when the node is not registered.
    pub fn heartbeat(&self, id: &str, applied_revision: Option<u64>, now: Instant) -> bool {
        let mut beat = self.detector.heartbeat(id, applied_revision, now);
        if beat.is_none() && self.registry.with_node(id, |_| ()).is_some() {
            self.detector.watch(id, *self.interval.borrow(), now);
            beat = self.detector.heartbeat(id, applied_revision, now);
        }
        match beat {
            None => false,
            Some(t) => {
                if let Some(t) = t {
                    self.transition(&t);
                }
                true
            }
        }
    }

    /// Publishes a health change: event, metric, log.
    pub fn transition(&self, t: &Transition) {
        metrics::counter!("edgebox_orchestrator_health_changes_total", "to" => t.to.as_str()).increment(1);
        match t.to {
            Health::Dead | Health::Suspect => {
                tracing::warn!(node = %t.id, from = t.from.as_str(), to = t.to.as_str(), "orchestrator: node health")
            }
            _ => tracing::info!(node = %t.id, from = t.from.as_str(), to = t.to.as_str(), "orchestrator: node health"),
        }
        self.registry.health_changed(&t.id, t.to);
        self.rollouts.touch();
    }

    fn view(&self, n: &Node) -> Value {
        let (health, applied) = self.detector.health(&n.reg.id).unwrap_or((Health::Unknown, 0));
        let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
        v["health"] = json!(health);
        v["applied_revision"] = json!(applied);
        v["liveness"] = json!(self.detector.liveness(&n.reg.id, Instant::now()));
        let report = self.rollouts.report_of(&n.reg.id).unwrap_or_default();
        v["desired"] = json!({
            "wanted": self.rollouts.desired_id(&self.registry, &n.reg.id),
            "applied": report.applied,
            "failed": report.failed,
        });
        v
    }
}

pub(super) fn full(route: &'static str, status: StatusCode, body: Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.extensions_mut().insert(MatchedRoute(route));
    resp
}

pub(super) fn error(route: &'static str, status: StatusCode, what: impl std::fmt::Display) -> Response<Body> {
    full(route, status, json!({"error": what.to_string()}))
}

/// A commit answered with another command's outcome: a bug, said as one.
pub(super) fn unexpected(route: &'static str, outcome: Outcome) -> Response<Body> {
    tracing::error!(route, ?outcome, "orchestrator: a write's outcome does not fit its command");
    error(route, StatusCode::INTERNAL_SERVER_ERROR, "the write's outcome does not fit its command")
}

/// Sends a request that needs the leader's live view (heartbeats, health,
/// rollout progress) to the leader: 307 to the same path there.
fn to_leader(leader: &str, path_and_query: &str) -> Response<Body> {
    let location = format!("{}{path_and_query}", leader.trim_end_matches('/'));
    let mut resp = full(
        "",
        StatusCode::TEMPORARY_REDIRECT,
        json!({"error": format!("this member follows; the leader is {leader}"), "leader": leader}),
    );
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    metrics::counter!("edgebox_orchestrator_raft_redirects_total").increment(1);
    resp
}

/// Whether a request needs the leader's live view rather than the store
/// every member holds: heartbeat streams, anything showing health or
/// rollout progress, and resuming a rollout (which counts failures).
fn needs_leader(method: &Method, segments: &[&str]) -> bool {
    matches!(
        (method, segments),
        (&Method::POST, ["v1", "nodes", _, "heartbeats"] | ["v1", "deployments", _, "resume"])
            | (&Method::GET, ["v1", "nodes", ..] | ["v1", "topology"] | ["v1", "events"] | ["v1", "deployments", ..])
    )
}

pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    // Who is asking: a joining device (its join token is checked by the
    // join), a node (its certificate), or an operator (the listener's auth).
    let node = join_api::node_of(&api, &req);
    if method == Method::POST && segments == ["v1", "join"] {
        return Ok(join_api::join(&api, req).await);
    }
    // A refusal reads the (bounded) body first: answering before the
    // client finished sending makes HTTP/2 clients see a reset stream.
    match &node {
        Some(n) if !join_api::node_may(n, &method, &segments) => {
            let _ = read_body("", req, api.max_body).await;
            return Ok(join_api::forbidden(n, &method, &path));
        }
        Some(_) => {}
        None => {
            if let Some(denied) = api.auth.check(&req, NAME) {
                let _ = read_body("", req, api.max_body).await;
                return Ok(denied.map(|b| b.boxed_unsync()));
            }
        }
    }
    if node.is_none()
        && method == Method::POST
        && let ["raft", call] = segments.as_slice()
    {
        return Ok(match read_body("/raft/{call}", req, RAFT_MAX_BODY).await {
            Ok(body) => super::replica::rpc::handle(&api.replica, call, &body).await,
            Err(refused) => refused,
        });
    }
    if needs_leader(&method, &segments)
        && let Some(leader) = api.replica.leader_url()
    {
        // A heartbeat stream's body never ends: answer without waiting for it.
        if !matches!(segments.as_slice(), ["v1", "nodes", _, "heartbeats"]) {
            let _ = read_body("", req, api.max_body).await;
        }
        let pq = format!("{path}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        return Ok(to_leader(&leader, &pq));
    }
    Ok(match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "raft"]) => match api.replica.status() {
            Some(s) => full("/v1/raft", StatusCode::OK, s),
            None => {
                error("/v1/raft", StatusCode::NOT_FOUND, "this orchestrator is not a raft member ([orchestrator.raft])")
            }
        },
        (&Method::POST, ["v1", "nodes"]) => register(&api, req, node.as_deref()).await,
        (&Method::POST, ["v1", "nodes", id, "certificate"]) => match &node {
            Some(n) => join_api::renew(&api, n, req).await,
            None => {
                let _ = read_body("", req, api.max_body).await;
                error(
                    "/v1/nodes/{id}/certificate",
                    StatusCode::FORBIDDEN,
                    format!("only node {id} renews its certificate, over its own mutual TLS"),
                )
            }
        },
        (_, ["v1", "join-tokens", ..]) => join_api::tokens(&api, req, &segments).await,
        (&Method::GET, ["v1", "nodes"]) => list(&api, req.uri().query()),
        (&Method::GET, ["v1", "nodes", id]) => match api.registry.get(id) {
            Some(n) => full("/v1/nodes/{id}", StatusCode::OK, api.view(&n)),
            None => error("/v1/nodes/{id}", StatusCode::NOT_FOUND, format!("no node {id}")),
        },
        (&Method::DELETE, ["v1", "nodes", id]) => remove(&api, id).await,
        (&Method::POST, ["v1", "nodes", id, "heartbeats"]) => heartbeats(&api, id, req),
        (&Method::GET, ["v1", "nodes", id, "desired"]) => match api.rollouts.desired(&api.registry, id) {
            Some(d) => full("/v1/nodes/{id}/desired", StatusCode::OK, json!(d)),
            None => error("/v1/nodes/{id}/desired", StatusCode::NOT_FOUND, format!("no node {id}")),
        },
        (_, ["v1", "deployments" | "blobs", ..]) => deploy_api::handle(&api, req, &segments).await,
        (&Method::GET, ["v1", "topology"]) => topology(&api),
        (&Method::GET, ["v1", "events"]) => events(&api, req.uri().query()).await,
        (&Method::GET, ["health"]) => full("/health", StatusCode::OK, json!({"nodes": api.registry.len()})),
        (_, ["v1", "nodes", ..] | ["v1", "topology" | "events" | "join"]) => {
            error("", StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"))
        }
        _ => error("", StatusCode::NOT_FOUND, format!("no endpoint {method} {path}")),
    })
}

/// The request body, up to `limit` bytes; or the answer refusing it.
pub(super) async fn read_body(
    route: &'static str,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(error(route, StatusCode::PAYLOAD_TOO_LARGE, format!("body over {limit} bytes")))
        }
        Err(e) => Err(error(route, StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
    }
}

/// The request body as JSON of type `T`, up to `limit` bytes (an empty
/// body reads as `{}`); or the answer refusing it, naming `what`.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    route: &'static str,
    req: Request<Incoming>,
    limit: usize,
    what: &str,
) -> Result<T, Response<Body>> {
    let body = read_body(route, req, limit).await?;
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    serde_json::from_slice(body).map_err(|e| error(route, StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

/// Registers a node; `only`: the node a node certificate names, which may
/// register itself and no other.
async fn register(api: &Api, req: Request<Incoming>, only: Option<&str>) -> Response<Body> {
    const ROUTE: &str = "/v1/nodes";
    let reg: Registration = match read_json(ROUTE, req, api.max_body, "registration").await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    if let Some(n) = only.filter(|n| *n != reg.id) {
        return join_api::forbidden(n, &Method::POST, &format!("/v1/nodes (for node {})", reg.id));
    }
    if let Err(e) = api.registry.check(&reg) {
        metrics::counter!("edgebox_orchestrator_registrations_total", "outcome" => "invalid").increment(1);
        return error(ROUTE, StatusCode::BAD_REQUEST, e);
    }
    let outcome = match api.commit(ROUTE, Command::Register { reg, now_ms: super::registry::now_ms() }).await {
        Ok(Outcome::Registered(r)) => r,
        Ok(other) => return unexpected(ROUTE, other),
        Err(refused) => {
            metrics::counter!("edgebox_orchestrator_registrations_total", "outcome" => "failed").increment(1);
            return refused;
        }
    };
    let label = match &outcome {
        Ok(Registered::Created(_)) => "created",
        Ok(Registered::Updated(_)) => "updated",
        Ok(Registered::Unchanged(_)) => "unchanged",
        Err(_) => "conflict",
    };
    metrics::counter!("edgebox_orchestrator_registrations_total", "outcome" => label).increment(1);
    match outcome {
        Ok(Registered::Created(n)) => {
            api.detector.watch(&n.reg.id, *api.interval.borrow(), Instant::now());
            api.fleet_changed();
            full(ROUTE, StatusCode::CREATED, api.view(&n))
        }
        Ok(Registered::Updated(n) | Registered::Unchanged(n)) => full(ROUTE, StatusCode::OK, api.view(&n)),
        Err(e) => error(ROUTE, StatusCode::CONFLICT, e),
    }
}

async fn remove(api: &Api, id: &str) -> Response<Body> {
    const ROUTE: &str = "/v1/nodes/{id}";
    match api.commit(ROUTE, Command::Remove { id: id.to_owned() }).await {
        Ok(Outcome::Removed(Some(revision))) => {
            api.detector.forget(id);
            api.fleet_changed();
            full(ROUTE, StatusCode::OK, json!({"deleted": id, "revision": revision}))
        }
        Ok(Outcome::Removed(None)) => error(ROUTE, StatusCode::NOT_FOUND, format!("no node {id}")),
        Ok(other) => unexpected(ROUTE, other),
        Err(refused) => refused,
    }
}

fn heartbeats(api: &Arc<Api>, id: &str, req: Request<Incoming>) -> Response<Body> {
    const ROUTE: &str = "/v1/nodes/{id}/heartbeats";
    if api.registry.get(id).is_none() {
        return error(ROUTE, StatusCode::NOT_FOUND, format!("no node {id}: register it first"));
    }
    let body = heartbeat::session(api.clone(), id.to_owned(), req.into_body());
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
    resp.extensions_mut().insert(MatchedRoute(ROUTE));
    resp
}

/// The query string as name → values.
fn params(query: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}

/// What `GET /v1/nodes` selects: label equalities, architecture, health,
/// the page size and the cursor.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    pub labels: Vec<(String, String)>,
    pub arch: Option<String>,
    pub health: Option<Health>,
    pub limit: usize,
    pub after: Option<String>,
}

impl Filter {
    /// `label=site=plant-3&arch=arm64&health=ready&limit=100&after=ID`
    pub fn parse(query: Option<&str>) -> Result<Filter, String> {
        let p = params(query);
        let one = |k: &str| p.get(k).and_then(|v| v.last()).cloned();
        let mut labels = Vec::new();
        for sel in p.get("label").into_iter().flatten() {
            match sel.split_once('=') {
                Some((k, v)) if !k.is_empty() => labels.push((k.to_owned(), v.to_owned())),
                _ => return Err(format!("label selector {sel:?}: expected key=value")),
            }
        }
        let health = match one("health") {
            None => None,
            Some(h) => Some(
                Health::ALL
                    .into_iter()
                    .find(|x| x.as_str() == h)
                    .ok_or_else(|| format!("health {h:?}: one of unknown, ready, suspect, dead"))?,
            ),
        };
        let limit = match one("limit").map(|l| l.parse::<usize>()) {
            None => 100,
            Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
            Some(_) => return Err(format!("limit: a number from 1 to {MAX_PAGE}")),
        };
        let after = one("after");
        if let Some(a) = &after {
            check_id(a).map_err(|e| format!("after: {e}"))?;
        }
        Ok(Filter { labels, arch: one("arch"), health, limit, after })
    }
}

fn list(api: &Api, query: Option<&str>) -> Response<Body> {
    const ROUTE: &str = "/v1/nodes";
    let f = match Filter::parse(query) {
        Ok(f) => f,
        Err(e) => return error(ROUTE, StatusCode::BAD_REQUEST, e),
    };
    let (nodes, more) = api.registry.page(f.after.as_deref(), f.limit, |n| {
        f.arch.as_ref().is_none_or(|a| &n.reg.arch == a)
            && f.labels.iter().all(|(k, v)| n.reg.labels.get(k) == Some(v))
            && f.health.is_none_or(|h| api.detector.health(&n.reg.id).map(|x| x.0) == Some(h))
    });
    let next = more.then(|| nodes.last().map(|n| n.reg.id.clone())).flatten();
    let items: Vec<Value> = nodes.iter().map(|n| api.view(n)).collect();
    full(ROUTE, StatusCode::OK, json!({"nodes": items, "next": next, "revision": api.registry.revision()}))
}

/// Nodes grouped by their `site` and `zone` labels and architecture, with
/// how many have applied the current revision and which lag.
fn topology(api: &Api) -> Response<Body> {
    /// One site/zone/arch group: nodes, how many converged, some laggards.
    #[derive(Default)]
    struct Group {
        nodes: usize,
        converged: usize,
        lagging: Vec<String>,
    }
    let revision = api.registry.revision();
    let mut groups: BTreeMap<[String; 3], Group> = BTreeMap::new();
    for n in api.registry.all() {
        let label = |k: &str| n.reg.labels.get(k).cloned().unwrap_or_default();
        let g = groups.entry([label("site"), label("zone"), n.reg.arch.clone()]).or_default();
        g.nodes += 1;
        let applied = api.detector.health(&n.reg.id).map_or(0, |h| h.1);
        if applied >= revision {
            g.converged += 1;
        } else if g.lagging.len() < 20 {
            g.lagging.push(n.reg.id.clone());
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|([site, zone, arch], g)| {
            json!({"site": site, "zone": zone, "arch": arch, "nodes": g.nodes, "converged": g.converged, "lagging": g.lagging})
        })
        .collect();
    full("/v1/topology", StatusCode::OK, json!({"revision": revision, "groups": groups}))
}

/// `GET /v1/events?since=N&wait_s=30`: events after N, waiting up to
/// wait_s for one; 410 when N is out of reach (list again, then watch
/// from the `newest` given).
async fn events(api: &Api, query: Option<&str>) -> Response<Body> {
    const ROUTE: &str = "/v1/events";
    let p = params(query);
    let num = |k: &str, default: u64| -> Result<u64, String> {
        match p.get(k).and_then(|v| v.last()) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| format!("{k} {s:?}: not a number")),
        }
    };
    let (since, wait) = match (num("since", api.registry.last_seq()), num("wait_s", 30)) {
        (Ok(since), Ok(wait)) => (since, Duration::from_secs(wait).min(MAX_WAIT)),
        (Err(e), _) | (_, Err(e)) => return error(ROUTE, StatusCode::BAD_REQUEST, e),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = api.registry.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match api.registry.events_since(since, 1000) {
            Err(newest) => {
                return full(
                    ROUTE,
                    StatusCode::GONE,
                    json!({"error": format!("events after {since} are no longer kept; list again and watch from newest"), "newest": newest}),
                );
            }
            Ok((events, next)) if !events.is_empty() || tokio::time::Instant::now() >= deadline => {
                return full(ROUTE, StatusCode::OK, json!({"events": events, "next": next}));
            }
            Ok(_) => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return full(ROUTE, StatusCode::OK, json!({"events": [], "next": since}));
        }
    }
}
