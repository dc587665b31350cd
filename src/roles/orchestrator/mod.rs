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
//! is the other end. Every write is a command (command.rs) that replica/
//! applies to this store alone or, on a Raft cluster, through the log.

mod api;
mod bench;
mod blobs;
mod ca;
mod cli;
mod command;
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
mod replica;
mod rollout;
mod selector;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::core::auth::Auth;
use crate::core::exit::ConfigProblem;
use crate::core::httpserve::serve;
use crate::core::role::{Declared, ListenerDecl, Role, RoleCtx, RoleEntry, load_with};
use crate::core::telemetry::MetricDoc;
use crate::core::tls::ServerTls;
use config::OrchestratorConfig;

pub const ENTRY: RoleEntry = RoleEntry {
    name: "orchestrator",
    summary: "device registry: node API, heartbeat streams, failure detection, deployments and rollouts, node identity, Raft HA",
    feature: "orchestrator",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    reloads: false,
    load: |section| load_with(section, Orchestrator::new),
    metrics: METRICS,
    command: cli::command,
    run_command: cli::run,
};

/// The orchestrator's metrics.
const METRICS: &[MetricDoc] = &[
    MetricDoc::gauge("edgebox_orchestrator_nodes", "Registered nodes, by health: alive, suspect or dead."),
    MetricDoc::counter("edgebox_orchestrator_health_changes_total", "Node health transitions, by the health entered."),
    MetricDoc::counter(
        "edgebox_orchestrator_registrations_total",
        "Registration requests, by outcome (created, updated, unchanged, conflict, invalid, failed).",
    ),
    MetricDoc::counter(
        "edgebox_orchestrator_joins_total",
        "Join requests with a token, by outcome: joined, conflict, or why it was refused.",
    ),
    MetricDoc::counter(
        "edgebox_orchestrator_node_forbidden_total",
        "Requests refused because the node's certificate does not allow them.",
    ),
    MetricDoc::counter("edgebox_orchestrator_certificates_issued_total", "Node certificates issued by the fleet CA."),
    MetricDoc::gauge("edgebox_orchestrator_streams", "Open heartbeat streams."),
    MetricDoc::counter("edgebox_orchestrator_heartbeats_total", "Heartbeats received."),
    MetricDoc::counter(
        "edgebox_orchestrator_heartbeats_dropped_total",
        "Heartbeats ignored for arriving faster than the assigned interval.",
    ),
    MetricDoc::gauge(
        "edgebox_orchestrator_heartbeat_interval_seconds",
        "Heartbeat interval assigned to nodes, adapted to the fleet's size.",
    ),
    MetricDoc::gauge("edgebox_orchestrator_revision", "Revision of the registry and desired state."),
    MetricDoc::counter("edgebox_orchestrator_deployment_versions_total", "Deployment versions created."),
    MetricDoc::counter("edgebox_orchestrator_rollout_phases_total", "Rollout phase changes, by the phase entered."),
    MetricDoc::histogram("edgebox_orchestrator_rollout_step_seconds", "Time to plan one rollout step."),
    MetricDoc::counter("edgebox_orchestrator_blobs_stored_total", "Deployment blobs uploaded."),
    MetricDoc::counter("edgebox_orchestrator_blobs_deleted_total", "Deployment blobs deleted."),
    MetricDoc::gauge("edgebox_orchestrator_raft_leader", "1 while this replica leads the Raft group."),
    MetricDoc::gauge("edgebox_orchestrator_raft_term", "Current Raft term."),
    MetricDoc::gauge("edgebox_orchestrator_raft_applied_index", "Index of the last Raft log entry applied."),
    MetricDoc::counter(
        "edgebox_orchestrator_raft_applied_total",
        "Raft log entries applied, by command and whether it repeated an applied one.",
    ),
    MetricDoc::counter(
        "edgebox_orchestrator_raft_rpcs_total",
        "Raft RPCs received, by call: append, vote or snapshot.",
    ),
    MetricDoc::counter("edgebox_orchestrator_raft_forwarded_total", "Writes a follower forwarded to the leader."),
    MetricDoc::counter("edgebox_orchestrator_raft_redirects_total", "Requests answered with a redirect to the leader."),
];

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
            let limits = node::Limits { max_labels: cfg.max_labels, max_label_bytes: cfg.max_label_bytes };
            let registry = Arc::new(registry::Registry::open(ctx.store.clone(), limits).await?);
            let rollouts = Arc::new(rollout::Rollouts::open(ctx.store.clone()).await?);
            let memory = command::Memory { registry: registry.clone(), rollouts: rollouts.clone() };
            let replica = match &cfg.raft {
                None => replica::Replica::Single { store: ctx.store.clone(), memory },
                Some(r) => {
                    let dialer = member_dialer(&cfg, r).map_err(ConfigProblem)?;
                    replica::Replica::start(r, ctx.store.clone(), memory, dialer).await?
                }
            };
            // On TLS, the node CA's certificate is the listener's trust
            // bundle for the nodes' SPIFFE IDs; certificates stay optional
            // (devices still joining, operators with a bearer token). Alone,
            // the CA is committed now; on a Raft cluster once a leader is
            // elected (the listener must serve first: members call it), its
            // certificate replacing this start's offer in the bundle file.
            let bundle = ctx.data_dir.join("orchestrator").join("node-ca.pem");
            let offered = match &cfg.tls {
                Some(_) => Some(ca::make_root(&cfg.trust_domain)?),
                None => None,
            };
            let ca_now = match (&offered, &replica) {
                (Some(o), replica::Replica::Single { .. }) => {
                    Some(open_ca(&replica, o.clone(), &cfg.trust_domain, cfg.node_cert_ttl_s, &bundle).await?)
                }
                (Some(o), replica::Replica::Raft(_)) => {
                    if !bundle.exists() {
                        ca::write_bundle(&bundle, o.cert_pem())?;
                    }
                    None
                }
                (None, _) => None,
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
            let policy = api::IntervalPolicy {
                budget_per_s: cfg.heartbeat_budget_per_s,
                min_ms: cfg.min_heartbeat_interval_ms,
                max_ms: cfg.max_heartbeat_interval_ms,
            };
            let interval = heartbeat::interval_ms(registry.len(), policy.budget_per_s, policy.min_ms, policy.max_ms);
            let (interval_tx, interval_rx) = tokio::sync::watch::channel(interval);
            let detector = liveness::Detector::new(cfg.phi_suspect, cfg.phi_dead);
            metrics::gauge!("edgebox_orchestrator_heartbeat_interval_seconds").set(interval as f64 / 1000.0);
            tracing::info!(
                nodes = registry.len(),
                revision = registry.revision(),
                interval_ms = interval,
                "orchestrator: registry loaded"
            );
            let api = Arc::new(api::Api {
                registry,
                ca: std::sync::OnceLock::new(),
                rollouts,
                replica,
                store: ctx.store.clone(),
                max_blob: cfg.max_blob_bytes,
                detector,
                auth,
                max_body: cfg.max_body_bytes,
                policy,
                interval: interval_rx,
                interval_tx,
            });
            if let Some(ca) = ca_now {
                let _ = api.ca.set(ca);
            }
            let listener = ctx.bind("http").await?;
            tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "orchestrator listening");
            let sweeper = tokio::spawn(sweep_forever(api.clone(), ctx.status.clone(), ctx.shutdown.clone()));
            let ca_task = match (offered, api.ca.get().is_none()) {
                (Some(o), true) => {
                    let (api, td, ttl) = (api.clone(), cfg.trust_domain.clone(), cfg.node_cert_ttl_s);
                    Some(tokio::spawn(async move {
                        match open_ca(&api.replica, o, &td, ttl, &bundle).await {
                            Ok(ca) => {
                                let _ = api.ca.set(ca);
                            }
                            Err(e) => {
                                tracing::error!(error = %format!("{e:#}"), "orchestrator: the node CA is unavailable")
                            }
                        }
                    }))
                }
                _ => None,
            };
            ctx.status.set_ready(true);
            let handler = {
                let api = api.clone();
                move |req| api::handle(api.clone(), req)
            };
            serve(api::NAME, listener, tls, handler, ctx.shutdown.clone(), Duration::from_secs(5)).await;
            sweeper.abort();
            if let Some(t) = ca_task {
                t.abort();
            }
            api.replica.shutdown().await;
            Ok(())
        })
    }
}

/// Commits this start's offered CA (the first one committed stays) and
/// loads the CA that stayed; waits for a Raft leader as long as it takes.
async fn open_ca(
    replica: &replica::Replica,
    offered: ca::Stored,
    trust_domain: &str,
    ttl_s: u64,
    bundle: &std::path::Path,
) -> anyhow::Result<ca::NodeCa> {
    let stored = loop {
        match replica.commit(command::Command::InitCa { offered: offered.clone() }).await {
            Ok(command::Outcome::Ca(stored)) => break stored,
            Ok(other) => anyhow::bail!("committing the node CA: unexpected outcome {other:?}"),
            Err(replica::CommitError::NoLeader) => continue,
            Err(e) => return Err(anyhow::Error::from(e).context("committing the node CA")),
        }
    };
    ca::NodeCa::load(stored, trust_domain, ttl_s, bundle)
}

/// How this member dials the others: TLS checked against `raft.ca_file`,
/// or pinned to the certificate this member presents (all members then
/// present the same one); the bearer token when the listener wants one.
fn member_dialer(cfg: &OrchestratorConfig, r: &config::RaftConfig) -> Result<replica::network::Dialer, String> {
    let token = match &cfg.token_file {
        Some(p) if cfg.auth == crate::core::auth::AuthMode::Bearer => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("orchestrator.token_file {}: {e}", p.display()))?
                .trim()
                .to_owned(),
        ),
        _ => None,
    };
    let tls = match (&cfg.tls, &r.ca_file) {
        (_, Some(ca)) => Some(replica::network::MemberTls::Ca(crate::core::tls::ClientTlsConfig {
            ca_file: Some(ca.clone()),
            ..Default::default()
        })),
        (Some(t), None) => Some(replica::network::MemberTls::Pinned(
            crate::core::tls::pinned_client(t, "orchestrator.tls").map_err(|e| e.to_string())?,
        )),
        (None, None) => None,
    };
    Ok(replica::network::Dialer { tls, token })
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
    let mut leading = false;
    for sweeps in 0u64.. {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Only the leader detects failures and steps rollouts (alone,
        // this orchestrator always leads). A new leader gives every node
        // one interval's grace, as a restart does.
        let leader = api.replica.is_leader();
        if leader && !leading {
            api.lead(Instant::now());
        }
        leading = leader;
        if !leader {
            set_detail(&api, &status);
            continue;
        }
        api.reconcile(Instant::now());
        if sweeps % ROLLOUT_EVERY == 0 {
            let commit = |cmd| async { api.replica.commit(cmd).await.map(|_| ()).map_err(anyhow::Error::from) };
            if let Err(e) = api.rollouts.step(&api.registry, &api.detector, commit).await {
                tracing::error!(error = %format!("{e:#}"), "orchestrator: a rollout step could not be stored");
                api.rollouts.touch();
            }
        }
        for t in api.detector.sweep(Instant::now()) {
            api.transition(&t);
        }
        set_detail(&api, &status);
    }
}

/// The per-health gauges and the role's detail on /v1/roles.
fn set_detail(api: &api::Api, status: &crate::core::role::StatusHandle) {
    {
        let mut nodes = serde_json::Map::new();
        for (health, n) in api.detector.counts() {
            metrics::gauge!("edgebox_orchestrator_nodes", "health" => health.as_str()).set(n as f64);
            nodes.insert(health.as_str().to_owned(), n.into());
        }
        let revision = api.registry.revision();
        metrics::gauge!("edgebox_orchestrator_revision").set(revision as f64);
        let mut detail =
            serde_json::json!({"nodes": nodes, "revision": revision, "interval_ms": *api.interval.borrow()});
        if let Some(r) = api.replica.status() {
            metrics::gauge!("edgebox_orchestrator_raft_leader").set(if api.replica.is_leader() { 1.0 } else { 0.0 });
            metrics::gauge!("edgebox_orchestrator_raft_term").set(r["term"].as_f64().unwrap_or(0.0));
            metrics::gauge!("edgebox_orchestrator_raft_applied_index").set(r["last_applied"].as_f64().unwrap_or(0.0));
            detail["raft"] = r;
        }
        status.set_detail(detail);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rollout;
