//! agent: a device's side of the orchestrator. It registers the node (id,
//! architecture, labels, capacity, machine id; identity.rs), keeps one
//! heartbeat stream open to the orchestrator at the interval it is
//! assigned, and reconnects with jittered backoff when the orchestrator
//! goes away (client.rs is the wire; session.rs one connection). On an
//! https orchestrator it joins with a join token and presents the node
//! certificate it is given from then on (node_cert.rs). When the
//! orchestrator names a new
//! desired state it is fetched and applied in this process: role sections
//! and their files, started, reloaded or stopped through the supervisor
//! (desired.rs, run by applier.rs). The last desired state is kept in the store and applied
//! again at start, so the device keeps running it while offline. Heartbeats
//! carry the topology revision seen, the desired state applied and which
//! deployments failed.

mod applier;
mod cli;
pub mod config;
mod desired;
mod identity;
mod node_cert;
mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;

use crate::core::exit::ConfigProblem;
use crate::core::role::{Declared, Role, RoleCtx, RoleEntry, load_with};
use crate::core::telemetry::MetricDoc;
use crate::core::tls::ClientTls;
use crate::roles::fleet::client::{Moved, Target};
use applier::Desire;
use config::AgentConfig;
use node_cert::NodeCert;
use session::{Link, session};

pub const ENTRY: RoleEntry = RoleEntry {
    name: "agent",
    summary: "joins an orchestrator: registers this device, heartbeats, and runs its desired state",
    feature: "agent",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    reloads: false,
    load: |section| load_with(section, Agent::new),
    metrics: METRICS,
    command: cli::command,
    run_command: cli::run,
};

/// The agent's metrics.
const METRICS: &[MetricDoc] = &[
    MetricDoc::gauge("edgebox_agent_connected", "1 while the agent's heartbeat stream to the orchestrator is open."),
    MetricDoc::counter("edgebox_agent_reconnects_total", "Times the agent reconnected to the orchestrator."),
    MetricDoc::counter("edgebox_agent_heartbeats_total", "Heartbeats the agent sent."),
    MetricDoc::counter("edgebox_agent_fetch_failures_total", "Failed fetches of the desired state (retried)."),
    MetricDoc::counter(
        "edgebox_agent_blob_digest_mismatches_total",
        "Deployment files whose content did not match their digest (refused).",
    ),
    MetricDoc::gauge(
        "edgebox_agent_deployments_failed",
        "Deployments of the current desired state that failed to apply.",
    ),
];

pub struct Agent {
    cfg: AgentConfig,
    /// A token given on the command line (`--token`), over token_file.
    token: Option<String>,
}

impl Agent {
    fn new(cfg: AgentConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Self { cfg, token: None })
    }
}

/// A refusal retrying will not fix (a conflicting identity, a bad token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(String);

impl Role for Agent {
    fn declared(&self) -> Declared {
        Declared::default()
    }

    fn run(self: Box<Self>, ctx: RoleCtx) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (cfg, given_token) = (self.cfg, self.token);
            metrics::gauge!("edgebox_agent_connected").set(0.0);
            if cfg.orchestrator.is_empty() {
                tracing::info!("agent: no agent.orchestrator; idle");
                ctx.status.set_detail(json!({ "orchestrator": null }));
                ctx.status.set_ready(true);
                ctx.shutdown.cancelled().await;
                return Ok(());
            }
            // One orchestrator, or every member of a Raft cluster of them.
            let targets = Target::parse_list(&cfg.orchestrator).map_err(ConfigProblem)?;
            let Some(target) = targets.first().cloned() else {
                return Err(ConfigProblem("agent.orchestrator: no URL".into()).into());
            };
            let inputs = cfg.tls.as_ref().map(|t| t.files()).unwrap_or_default();
            ctx.inputs_ready(&inputs).await?;
            // A bad [agent.tls] is a config error now, not a retry later.
            if let Some(t) = &cfg.tls {
                ClientTls::load(t, &target.host, "agent.tls").map_err(ConfigProblem::from)?;
            }
            let token = match (&cfg.token_file, given_token) {
                (_, Some(t)) => Some(t),
                (Some(p), None) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| ConfigProblem(format!("agent.token_file {}: {e}", p.display())))?
                        .trim()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            let registration = identity::registration(&cfg)?;
            let id = registration["id"].as_str().unwrap_or_default().to_owned();
            let state = Arc::new(Mutex::new(json!({"orchestrator": cfg.orchestrator, "id": id, "connected": false})));
            let desire = Desire::start(&ctx, Duration::from_secs(cfg.apply_timeout_s)).await?;
            ctx.status.set_ready(true);
            let mut at = target;
            let max = Duration::from_secs(cfg.reconnect_max_s);
            let mut backoff = Duration::from_millis(250);
            loop {
                let started = std::time::Instant::now();
                let link = Link {
                    target: &at,
                    tls: cfg.tls.as_ref(),
                    token: token.clone(),
                    node_cert: NodeCert::new(&ctx.data_dir),
                };
                let run = session(&link, &registration, &state, &ctx, &desire);
                let outcome = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    r = run => r,
                };
                metrics::gauge!("edgebox_agent_connected").set(0.0);
                metrics::counter!("edgebox_agent_reconnects_total").increment(1);
                if started.elapsed() > max {
                    backoff = Duration::from_millis(250);
                }
                // A session ends well only to reconnect with a renewed
                // certificate: soon, but never in a tight loop.
                let Err(e) = outcome else {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(crate::core::backoff::jitter(Duration::from_millis(500))) => continue,
                    }
                };
                // A follower names the leader: go there at once.
                if let Some(next) = e.downcast_ref::<Moved>().and_then(|m| Target::parse(&m.0).ok()) {
                    tracing::info!(leader = %m_url(&next), "agent: the orchestrator follows; moving to its leader");
                    at = next;
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(crate::core::backoff::jitter(Duration::from_millis(100))) => continue,
                    }
                }
                // Anything else: the next orchestrator of the list, after a wait.
                if let Some(i) = targets.iter().position(|t| *t == at) {
                    at = targets[(i + 1) % targets.len()].clone();
                }
                let wait = if e.downcast_ref::<Refused>().is_some() { max } else { backoff };
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "agent: not connected to the orchestrator");
                {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s["connected"] = json!(false);
                    s["last_error"] = json!(format!("{e:#}"));
                    ctx.status.set_detail(s.clone());
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(crate::core::backoff::jitter(wait)) => {}
                }
                backoff = (backoff * 2).min(max);
            }
            desire.applier.abort();
            Ok(())
        })
    }
}

/// A target as the URL it was given as.
fn m_url(t: &Target) -> String {
    format!("{}://{}:{}", if t.tls { "https" } else { "http" }, t.host, t.port)
}
