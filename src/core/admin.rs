//! The admin listener: /metrics, /healthz, /readyz, /v1/roles.
//!
//! It is the core's own service and the first thing the role compliance test
//! runs on. Read-only: nothing here changes the appliance. It is
//! unauthenticated only when the config says so, and the config refuses that
//! on a non-loopback address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::core::auth::Auth;
use crate::core::config::AdminConfig;
use crate::core::exit::ConfigProblem;
use crate::core::httpserve::{FullResponse, respond, serve};
use crate::core::role::{Declared, ListenerDecl, Role, RoleCtx, StatusBoard};
use crate::core::telemetry::ProcessMetrics;
use crate::core::tls::{ServerTls, ServerTlsConfig};

/// The name the admin service runs under (its span, metrics and status).
pub const NAME: &str = "admin";

/// Everything the admin service reports on.
pub struct AdminService {
    listen: SocketAddr,
    auth: Auth,
    tls: Option<ServerTlsConfig>,
    prometheus: PrometheusHandle,
    roles: StatusBoard,
    process: ProcessMetrics,
    facts: serde_json::Value,
}

impl AdminService {
    pub fn new(
        cfg: &AdminConfig,
        prometheus: PrometheusHandle,
        roles: StatusBoard,
        process: ProcessMetrics,
        facts: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let auth = Auth::load(cfg.auth, cfg.token_file.as_ref(), "admin.token_file")?;
        Ok(Self { listen: cfg.listen, auth, tls: cfg.tls.clone(), prometheus, roles, process, facts })
    }
}

impl Role for AdminService {
    fn declared(&self) -> Declared {
        Declared { listeners: vec![ListenerDecl { name: "http", addr: self.listen }], files: vec![] }
    }

    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            // TLS files may come from certguard on its first start.
            ctx.inputs_ready(&self.tls.as_ref().map(|t| t.files()).unwrap_or_default()).await?;
            let tls =
                self.tls.as_ref().map(|t| ServerTls::load(t, "admin.tls")).transpose().map_err(ConfigProblem::from)?;
            let listener = ctx.bind("http").await?;
            tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "admin listening");
            ctx.status.set_ready(true);
            let state = Arc::new(*self);
            let handler = move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.handle(req)) }
            };
            serve(NAME, listener, tls, handler, ctx.shutdown.clone(), Duration::from_secs(2)).await;
            Ok(())
        })
    }
}

impl AdminService {
    fn handle(&self, req: Request<Incoming>) -> FullResponse {
        metrics::counter!("edgebox_admin_requests_total").increment(1);
        if let Some(denied) = self.auth.check(&req, NAME) {
            return denied;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return respond("", StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET and HEAD\n");
        }
        match req.uri().path() {
            "/metrics" => {
                self.process.sample();
                respond("/metrics", StatusCode::OK, "text/plain; version=0.0.4", self.prometheus.render())
            }
            "/healthz" => respond("/healthz", StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => {
                let waiting: Vec<&str> =
                    self.roles.snapshot().into_iter().filter(|(_, s)| !s.ready).map(|(n, _)| n).collect();
                if waiting.is_empty() {
                    respond("/readyz", StatusCode::OK, "text/plain", "ready\n")
                } else {
                    respond(
                        "/readyz",
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {}\n", waiting.join(", ")),
                    )
                }
            }
            "/v1/roles" => {
                let roles: serde_json::Map<String, serde_json::Value> = self
                    .roles
                    .snapshot()
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), serde_json::to_value(s).unwrap_or_default()))
                    .collect();
                let body = json!({ "edgebox": self.facts, "roles": roles });
                respond("/v1/roles", StatusCode::OK, "application/json", body.to_string())
            }
            _ => respond("", StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}
