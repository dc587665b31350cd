//! orchestrator: the registry and supervisor of a fleet of edge devices.
//! Nodes register over a JSON API (api.rs; node.rs says what a valid one
//! is) into the store (registry.rs, with the topology revision and an
//! event feed); agents keep one heartbeat stream each open to it
//! (heartbeat.rs, which also spreads the fleet's heartbeats over a
//! budget), and a phi-accrual detector marks silent nodes suspect, then
//! dead (liveness.rs). This file wires them together and sweeps the
//! detector; bench.rs (`edgebox orchestrator bench`) drives simulated
//! agents against it, and fuzz.rs feeds what clients send to the fuzzer.
//!
//! Desired state is deployments (deployment.rs, selector.rs) rolled out
//! node by node (rollout.rs) with their files as blobs (blobs.rs), on the
//! API in deploy_api.rs. On TLS, devices join with a join token (join.rs)
//! and get a node certificate with a SPIFFE ID from the node CA (ca.rs);
//! join_api.rs decides what a node may ask. The agent role (roles/agent)
//! is the other end. Not yet: Raft replication (README).

mod api;
mod bench;
mod blobs;
mod ca;
mod cli;
pub mod config;
mod deploy_api;
mod deployment;
pub mod fuzz;
mod heartbeat;
mod join;
mod join_api;
mod liveness;
mod node;
mod registry;
mod rollout;
mod selector;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::core::auth::Auth;
use crate::core::exit::ConfigProblem;
use crate::core::httpserve::serve;
use crate::core::role::{Declared, ListenerDecl, Role, RoleCtx, RoleEntry, load_with};
use crate::core::tls::ServerTls;
use config::OrchestratorConfig;

pub const ENTRY: RoleEntry = RoleEntry {
    name: "orchestrator",
    summary: "device registry: node API, heartbeat streams, failure detection, deployments and rollouts, node identity",
    feature: "orchestrator",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    reloads: false,
    load: |section| load_with(section, Orchestrator::new),
    command: cli::command,
    run_command: cli::run,
};

/// How often the detector looks at every node.
const SWEEP: Duration = Duration::from_millis(250);
/// Sweeps per rollout step (one a second, when something changed).
const ROLLOUT_EVERY: u64 = 4;

pub struct Orchestrator {
    cfg: OrchestratorConfig,
}

impl Orchestrator {
    fn new(cfg: OrchestratorConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self { cfg })
    }
}

impl Role for Orchestrator {
    fn declared(&self) -> Declared {
        Declared { listeners: vec![ListenerDecl { name: "http", addr: self.cfg.listen }], files: vec![] }
    }

    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let cfg = self.cfg;
            let auth = Auth::load(cfg.auth, cfg.token_file.as_ref(), "orchestrator.token_file")?;
            let inputs = cfg.tls.as_ref().map(|t| t.files()).unwrap_or_default();
            ctx.inputs_ready(&inputs).await?;
            // On TLS, the node CA's certificate is the listener's trust
            // bundle for the nodes' SPIFFE IDs; certificates stay optional
            // (devices still joining, operators with a bearer token).
            let bundle = ctx.data_dir.join("orchestrator").join("node-ca.pem");
            let ca = match &cfg.tls {
                Some(_) => Some(ca::NodeCa::open(&ctx.store, &cfg.trust_domain, cfg.node_cert_ttl_s, &bundle).await?),
                None => None,
            };
            let tls = cfg
                .tls
                .as_ref()
                .map(|t| {
                    let mut t = t.clone();
                    t.spiffe_bundles.insert(cfg.trust_domain.clone(), bundle.clone());
                    t.client_cert_optional = true;
                    ServerTls::load(&t, "orchestrator.tls")
                })
                .transpose()
                .map_err(ConfigProblem::from)?;
            let limits = node::Limits { max_labels: cfg.max_labels, max_label_bytes: cfg.max_label_bytes };
            let registry = registry::Registry::open(ctx.store.clone(), limits).await?;
            let policy = api::IntervalPolicy {
                budget_per_s: cfg.heartbeat_budget_per_s,
                min_ms: cfg.min_heartbeat_interval_ms,
                max_ms: cfg.max_heartbeat_interval_ms,
            };
            let interval = heartbeat::interval_ms(registry.len(), policy.budget_per_s, policy.min_ms, policy.max_ms);
            let (interval_tx, interval_rx) = tokio::sync::watch::channel(interval);
            let detector = liveness::Detector::new(cfg.phi_suspect, cfg.phi_dead);
            // Every known node gets one interval's grace from now.
            let now = Instant::now();
            for n in registry.all() {
                detector.watch(&n.reg.id, interval, now);
            }
            metrics::gauge!("edgebox_orchestrator_heartbeat_interval_seconds").set(interval as f64 / 1000.0);
            tracing::info!(
                nodes = registry.len(),
                revision = registry.revision(),
                interval_ms = interval,
                "orchestrator: registry loaded"
            );
            let rollouts = rollout::Rollouts::open(ctx.store.clone()).await?;
            let api = Arc::new(api::Api {
                registry,
                ca,
                rollouts,
                store: ctx.store.clone(),
                max_blob: cfg.max_blob_bytes,
                detector,
                auth,
                max_body: cfg.max_body_bytes,
                policy,
                interval: interval_rx,
                interval_tx,
            });
            let listener = ctx.bind("http").await?;
            tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "orchestrator listening");
            let sweeper = tokio::spawn(sweep_forever(api.clone(), ctx.status.clone(), ctx.shutdown.clone()));
            ctx.status.set_ready(true);
            let handler = move |req| api::handle(api.clone(), req);
            serve(api::NAME, listener, tls, handler, ctx.shutdown.clone(), Duration::from_secs(5)).await;
            sweeper.abort();
            Ok(())
        })
    }
}

/// Marks silent nodes and keeps the per-health gauges and the role's
/// detail on /v1/roles (nodes per health, revision, interval).
async fn sweep_forever(
    api: Arc<api::Api>,
    status: crate::core::role::StatusHandle,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sweeps in 0u64.. {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if sweeps % ROLLOUT_EVERY == 0
            && let Err(e) = api.rollouts.step(&api.registry, &api.detector).await
        {
            tracing::error!(error = %format!("{e:#}"), "orchestrator: a rollout step could not be stored");
            api.rollouts.touch();
        }
        for t in api.detector.sweep(Instant::now()) {
            api.transition(&t);
        }
        let mut nodes = serde_json::Map::new();
        for (health, n) in api.detector.counts() {
            metrics::gauge!("edgebox_orchestrator_nodes", "health" => health.as_str()).set(n as f64);
            nodes.insert(health.as_str().to_owned(), n.into());
        }
        let revision = api.registry.revision();
        metrics::gauge!("edgebox_orchestrator_revision").set(revision as f64);
        status.set_detail(
            serde_json::json!({"nodes": nodes, "revision": revision, "interval_ms": *api.interval.borrow()}),
        );
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rollout;
