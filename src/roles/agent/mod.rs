//! agent: a device's side of the orchestrator. It registers the node (id,
//! architecture, labels, capacity, machine id; identity.rs), keeps one
//! heartbeat stream open to the orchestrator at the interval it is
//! assigned, and reconnects with jittered backoff when the orchestrator
//! goes away (client.rs is the wire). Desired state (roles, config, wasm
//! modules and policies to apply) is the orchestrator's next step; the
//! agent reports the topology revision it has seen.

mod cli;
mod client;
pub mod config;
mod identity;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::core::exit::ConfigProblem;
use crate::core::role::{Declared, Role, RoleCtx, RoleEntry, load_with};
use crate::core::tls::ClientTls;
use client::{Conn, Target};
use config::AgentConfig;

pub const ENTRY: RoleEntry = RoleEntry {
    name: "agent",
    summary: "joins an orchestrator: registers this device and keeps its heartbeat stream",
    feature: "agent",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    load: |section| load_with(section, Agent::new),
    command: cli::command,
    run_command: cli::run,
};

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
struct Refused(String);

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
            let target = Target::parse(&cfg.orchestrator).map_err(ConfigProblem)?;
            let inputs = cfg.tls.as_ref().map(|t| t.files()).unwrap_or_default();
            ctx.inputs_ready(&inputs).await?;
            let tls = match (&cfg.tls, target.tls) {
                (Some(t), _) => Some(ClientTls::load(t, &target.host, "agent.tls").map_err(ConfigProblem::from)?),
                (None, true) => {
                    Some(ClientTls::load(&Default::default(), &target.host, "agent.tls").map_err(ConfigProblem::from)?)
                }
                (None, false) => None,
            };
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
            ctx.status.set_ready(true);
            let max = Duration::from_secs(cfg.reconnect_max_s);
            let mut backoff = Duration::from_millis(250);
            loop {
                let started = std::time::Instant::now();
                let run = session(&target, tls.as_ref(), token.clone(), &registration, &state, &ctx);
                let outcome = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    r = run => r,
                };
                metrics::gauge!("edgebox_agent_connected").set(0.0);
                metrics::counter!("edgebox_agent_reconnects_total").increment(1);
                if started.elapsed() > max {
                    backoff = Duration::from_millis(250);
                }
                let e = outcome.err().unwrap_or_else(|| anyhow::anyhow!("the orchestrator ended the stream"));
                let wait = if e.downcast_ref::<Refused>().is_some() { max } else { backoff };
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "agent: not connected to the orchestrator");
                {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s["connected"] = json!(false);
                    s["last_error"] = json!(format!("{e:#}"));
                    ctx.status.set_detail(s.clone());
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(crate::core::backoff::jitter(wait)) => {}
                }
                backoff = (backoff * 2).min(max);
            }
        })
    }
}

/// One connection: register, then heartbeat until the stream ends.
async fn session(
    target: &Target,
    tls: Option<&ClientTls>,
    token: Option<String>,
    registration: &serde_json::Value,
    state: &Mutex<serde_json::Value>,
    ctx: &RoleCtx,
) -> anyhow::Result<()> {
    let mut conn = Conn::open(target, tls, token).await?;
    let (status, answer) = conn.register(registration).await.context("registering")?;
    match status {
        200 | 201 => {}
        400 | 401 | 403 | 409 => {
            return Err(Refused(format!("registration refused ({status}): {}", answer["error"])).into());
        }
        _ => anyhow::bail!("registration answered {status}: {}", answer["error"]),
    }
    let id = registration["id"].as_str().unwrap_or_default();
    let (beats, mut directives) = conn.stream(id).await?;
    let mut buf = Vec::new();
    let first = client::next_line(&mut directives, &mut buf).await?.context("the stream closed at once")?;
    // A zero interval would make the ticker panic: refused like a missing one.
    let mut interval =
        first["interval_ms"].as_u64().filter(|&i| i > 0).context("no usable interval in the first directive")?;
    let mut revision = first["revision"].as_u64().unwrap_or(0);
    tracing::info!(node = id, interval_ms = interval, revision, "agent: registered and heartbeating");
    metrics::gauge!("edgebox_agent_connected").set(1.0);
    {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s["connected"] = json!(true);
        s["interval_ms"] = json!(interval);
        s["revision"] = json!(revision);
        ctx.status.set_detail(s.clone());
    }
    let mut tick = tokio::time::interval(Duration::from_millis(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let line = format!("{}\n", json!({"applied_revision": revision}));
                beats.send(Bytes::from(line)).await.map_err(|_| anyhow::anyhow!("the heartbeat stream closed"))?;
                metrics::counter!("edgebox_agent_heartbeats_total").increment(1);
            }
            line = client::next_line(&mut directives, &mut buf) => {
                let Some(d) = line? else { anyhow::bail!("the orchestrator closed the stream") };
                if let Some(e) = d["error"].as_str() {
                    anyhow::bail!("the orchestrator closed the stream: {e}");
                }
                if let Some(i) = d["interval_ms"].as_u64().filter(|&i| i != interval && i > 0) {
                    interval = i;
                    tick = tokio::time::interval(Duration::from_millis(interval));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tracing::info!(interval_ms = interval, "agent: heartbeat interval reassigned");
                }
                revision = d["revision"].as_u64().unwrap_or(revision);
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s["interval_ms"] = json!(interval);
                s["revision"] = json!(revision);
                ctx.status.set_detail(s.clone());
            }
        }
    }
}
