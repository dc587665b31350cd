//! gateway: a zero-trust reverse proxy. Callers prove a SPIFFE identity
//! (an X.509-SVID at the TLS handshake, core::tls::spiffe, or a JWT-SVID,
//! identity.rs); OpenAPI 3.1 documents say which operations exist and what
//! their requests look like (openapi.rs, validate.rs) and who may call them
//! (policy.rs); requests go to each service's stable or canary upstream
//! (canary.rs, upstream.rs) through one pipeline (proxy.rs). Documents,
//! policies and keys reload atomically on SIGUSR1/SIGHUP and when their
//! files change (state.rs); certificates and bundles reload by themselves.

mod access;
mod bench;
mod canary;
mod cli;
pub mod config;
pub mod fuzz;
mod identity;
mod openapi;
mod owned;
mod policy;
mod problem;
mod proxy;
mod state;
mod upstream;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::core::exit::ConfigProblem;
use crate::core::httpserve::serve;
use crate::core::role::{Declared, ListenerDecl, Role, RoleCtx, RoleEntry, load_with};
use crate::core::telemetry::MetricDoc;
use crate::core::tls::{FileStamp, ServerTls, file_stamp};
use config::GatewayConfig;
use state::{Current, HealthBook, State};

pub const ENTRY: RoleEntry = RoleEntry {
    name: "gateway",
    summary: "zero-trust reverse proxy: SPIFFE identity, OpenAPI 3.1 validation and policy, canary routing",
    feature: "gateway",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    reloads: true,
    load: |section| load_with(section, Gateway::new),
    metrics: METRICS,
    command: cli::command,
    run_command: cli::run,
};

/// The gateway's metrics.
const METRICS: &[MetricDoc] = &[
    MetricDoc::counter(
        "edgebox_gateway_requests_total",
        "Requests answered, by service, route, upstream side (stable or canary), caller SPIFFE ID and status code.",
    ),
    MetricDoc::histogram(
        "edgebox_gateway_request_duration_seconds",
        "Time from a request's head to its answer's head, by service, route and upstream side.",
    ),
    MetricDoc::counter(
        "edgebox_gateway_rejections_total",
        "Requests the gateway answered itself (no route, invalid, unauthenticated, denied, upstream failed), by service and reason.",
    ),
    MetricDoc::counter(
        "edgebox_gateway_shadow_denials_total",
        "Requests a shadow (log-only) policy would have denied, by service and route.",
    ),
    MetricDoc::gauge("edgebox_gateway_services", "Services the gateway routes to."),
    MetricDoc::gauge(
        "edgebox_gateway_upstream_healthy",
        "1 while an upstream passes its health checks, by service and side (stable or canary).",
    ),
    MetricDoc::gauge(
        "edgebox_gateway_upstream_owned_connections",
        "HTTP/1.1 upstream connections held by client connections (busy, parked or idle), by service and side.",
    ),
    MetricDoc::counter(
        "edgebox_gateway_reloads_total",
        "Reloads of certificates, bundles, documents and policies, by result: applied or refused.",
    ),
    MetricDoc::counter("edgebox_gateway_access_log_errors_total", "Access log lines that could not be written."),
];

/// How often the files behind the state are checked for a change.
const WATCH: Duration = Duration::from_secs(1);

/// How long open requests may finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub struct Gateway {
    cfg: GatewayConfig,
}

impl Gateway {
    fn new(cfg: GatewayConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self { cfg })
    }
}

impl Role for Gateway {
    fn declared(&self) -> Declared {
        let listeners = match self.cfg.services.is_empty() {
            true => vec![],
            false => vec![ListenerDecl { name: "https", addr: self.cfg.listen }],
        };
        Declared { listeners, files: vec![] }
    }

    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut cfg = self.cfg;
            metrics::gauge!("edgebox_gateway_services").set(cfg.services.len() as f64);
            if cfg.services.is_empty() {
                tracing::info!("gateway: no [[gateway.services]]; nothing to route, not listening");
                ctx.status.set_detail(serde_json::json!({ "services": [] }));
                ctx.status.set_ready(true);
                ctx.shutdown.cancelled().await;
                return Ok(());
            }
            ctx.inputs_ready(&cfg.inputs()).await?;
            let health = Arc::new(HealthBook::default());
            let current = Arc::new(Current::default());
            let mut stamps = input_stamps(&cfg);
            current.set(build(&cfg, &health).await.map_err(|e| ConfigProblem(format!("{e:#}")))?);
            let tls =
                cfg.tls.as_ref().map(|t| ServerTls::load(t, "gateway.tls")).transpose().map_err(ConfigProblem::from)?;
            let listener = ctx.bind("https").await?;
            tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), services = cfg.services.len(), "gateway listening");
            let handler = {
                let current = current.clone();
                move |req| proxy::handle(current.clone(), req)
            };
            let server = tokio::spawn(serve("gateway", listener, tls, handler, ctx.shutdown.clone(), DRAIN));
            tokio::spawn(canary::check_forever(current.clone(), ctx.shutdown.clone()));
            tokio::spawn(flush_forever(current.clone(), ctx.shutdown.clone()));
            report(&ctx, &current);
            ctx.status.set_ready(true);
            let mut reload = ctx.reload.clone();
            let mut watch = tokio::time::interval(WATCH);
            loop {
                let why = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    Ok(()) = reload.changed() => {
                        let delivered = reload.borrow_and_update().clone();
                        if let Some(new) = delivered.take::<Gateway>() {
                            if (new.cfg.listen, &new.cfg.tls) != (cfg.listen, &cfg.tls) {
                                tracing::warn!("gateway: listen and [gateway.tls] changes apply at the next start");
                            }
                            cfg = GatewayConfig { listen: cfg.listen, tls: cfg.tls.clone(), ..new.cfg };
                        }
                        format!("reload generation {}", delivered.generation)
                    }
                    _ = watch.tick() => {
                        let now = input_stamps(&cfg);
                        if now == stamps { continue; }
                        "a document, policy or key file changed".to_owned()
                    }
                };
                stamps = input_stamps(&cfg);
                match build(&cfg, &health).await {
                    Ok(state) => {
                        current.set(state);
                        tracing::info!(reason = %why, "gateway: services reloaded");
                        ctx.status.note_reload(format!("{why}: applied"));
                        metrics::counter!("edgebox_gateway_reloads_total", "result" => "applied").increment(1);
                        report(&ctx, &current);
                    }
                    Err(e) => {
                        tracing::error!(reason = %why, error = %format!("{e:#}"), "gateway: new services refused; the previous ones keep serving");
                        ctx.status.note_reload(format!("{why}: refused: {e:#}"));
                        metrics::counter!("edgebox_gateway_reloads_total", "result" => "refused").increment(1);
                    }
                }
            }
            let _ = server.await;
            if let Some(state) = current.get() {
                state.access.flush();
            }
            Ok(())
        })
    }
}

/// Flushes a file access log every 250 ms.
async fn flush_forever(current: Arc<Current>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(state) = current.get() {
            state.access.flush();
        }
    }
}

/// Builds a state off the runtime (file reads, schema compilation).
async fn build(cfg: &GatewayConfig, health: &Arc<HealthBook>) -> anyhow::Result<State> {
    let (cfg, health) = (cfg.clone(), health.clone());
    tokio::task::spawn_blocking(move || State::build(&cfg, &health)).await?
}

/// What the files behind the state look like now (TLS files excepted:
/// listeners and clients re-read those themselves).
fn input_stamps(cfg: &GatewayConfig) -> Vec<FileStamp> {
    let tls: Vec<PathBuf> = cfg.tls.iter().flat_map(|t| t.files()).map(PathBuf::from).collect();
    cfg.inputs().into_iter().filter(|p| !tls.iter().any(|t| t == p)).map(file_stamp).collect()
}

/// Services, routes and upstream health on /v1/roles.
fn report(ctx: &RoleCtx, current: &Current) {
    let Some(state) = current.get() else { return };
    metrics::gauge!("edgebox_gateway_services").set(state.services.len() as f64);
    let services: Vec<serde_json::Value> = state
        .services
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "operations": s.api.routes.iter().map(|r| r.operations.len()).sum::<usize>(),
                "stable": { "url": s.stable.url, "healthy": s.stable.health.is_healthy() },
                "canary": s.canary.as_ref().map(|c| serde_json::json!({ "url": c.upstream.url, "healthy": c.upstream.health.is_healthy(), "percent": c.cfg.percent })),
            })
        })
        .collect();
    ctx.status.set_detail(serde_json::json!({ "services": services }));
}

#[cfg(test)]
mod testjwt;
#[cfg(test)]
mod tests;
