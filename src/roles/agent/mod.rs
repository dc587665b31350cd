//! agent: a device's side of the orchestrator. It registers the node (id,
//! architecture, labels, capacity, machine id; identity.rs), keeps one
//! heartbeat stream open to the orchestrator at the interval it is
//! assigned, and reconnects with jittered backoff when the orchestrator
//! goes away (client.rs is the wire). When the orchestrator names a new
//! desired state it is fetched and applied in this process: role sections
//! and their files, started, reloaded or stopped through the supervisor
//! (desired.rs). The last desired state is kept in the store and applied
//! again at start, so the device keeps running it while offline. Heartbeats
//! carry the topology revision seen, the desired state applied and which
//! deployments failed.

mod cli;
mod client;
pub mod config;
mod desired;
mod identity;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::core::exit::ConfigProblem;
use crate::core::role::{Declared, Role, RoleCtx, RoleEntry, load_with};
use crate::core::tls::ClientTls;
use crate::roles::fleet::DesiredState;
use client::{Conn, Target};
use config::AgentConfig;

pub const ENTRY: RoleEntry = RoleEntry {
    name: "agent",
    summary: "joins an orchestrator: registers this device and keeps its heartbeat stream",
    feature: "agent",
    default_config: config::DEFAULT,
    compliance_config: config::COMPLIANCE,
    migrations: &[],
    reloads: false,
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
            let desire = Desire::start(&ctx, Duration::from_secs(cfg.apply_timeout_s)).await?;
            ctx.status.set_ready(true);
            let max = Duration::from_secs(cfg.reconnect_max_s);
            let mut backoff = Duration::from_millis(250);
            loop {
                let started = std::time::Instant::now();
                let run = session(&target, tls.as_ref(), token.clone(), &registration, &state, &ctx, &desire);
                let outcome = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
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

/// One connection: register, then heartbeat until the stream ends.
async fn session(
    target: &Target,
    tls: Option<&ClientTls>,
    token: Option<String>,
    registration: &serde_json::Value,
    state: &Mutex<serde_json::Value>,
    ctx: &RoleCtx,
    desire: &Desire,
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
    let mut wanted = first["desired"].as_str().map(str::to_owned);
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
                if let Some(w) = &wanted {
                    desire.fetch_if_new(w, &conn, id);
                }
                let (applied, failed) = desire.report(&ctx.managed);
                let line = format!("{}\n", json!({"applied_revision": revision, "desired": applied, "failed": failed}));
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
                if let Some(w) = d["desired"].as_str() {
                    desire.fetch_if_new(w, &conn, id);
                    wanted = Some(w.to_owned());
                }
                let (applied, failed) = desire.report(&ctx.managed);
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s["interval_ms"] = json!(interval);
                s["revision"] = json!(revision);
                s["desired"] = json!(applied);
                s["failed"] = json!(failed);
                ctx.status.set_detail(s.clone());
            }
        }
    }
}

/// The agent's desired-state machinery: the applier task, what it last
/// applied, and whether a fetch is under way.
struct Desire {
    dir: PathBuf,
    /// The next state to apply (fetched, or saved by the last run).
    next: tokio::sync::watch::Sender<Option<DesiredState>>,
    outcome: Arc<Mutex<desired::Outcome>>,
    fetching: Arc<AtomicBool>,
    applier: tokio::task::JoinHandle<()>,
}

impl Desire {
    /// Starts the applier; a desired state saved by the last run is
    /// applied at once, before the orchestrator is reached.
    async fn start(ctx: &RoleCtx, ready_within: Duration) -> anyhow::Result<Desire> {
        let dir = ctx.data_dir.join("agent");
        let saved = desired::load_saved(&ctx.store).await?;
        if let Some(s) = &saved {
            tracing::info!(desired = %s.id, "agent: applying the desired state saved by the last run");
        }
        let (next, mut rx) = tokio::sync::watch::channel(None);
        if saved.is_some() {
            next.send_replace(saved);
        } else {
            rx.mark_unchanged();
        }
        let outcome = Arc::new(Mutex::new(desired::Outcome::default()));
        let (out, store, managed, d) = (outcome.clone(), ctx.store.clone(), ctx.managed.clone(), dir.clone());
        let applier = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(state) = rx.borrow_and_update().clone() else { continue };
                let previous = out.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let done = desired::apply(&state, &previous, &store, &d, &managed, ready_within).await;
                *out.lock().unwrap_or_else(|p| p.into_inner()) = done;
            }
        });
        Ok(Desire { dir, next, outcome, fetching: Arc::new(AtomicBool::new(false)), applier })
    }

    /// Fetches `wanted` in the background unless it is applied, queued or
    /// being fetched; a failed fetch is retried at the next heartbeat.
    fn fetch_if_new(&self, wanted: &str, conn: &Conn, node: &str) {
        let queued = self.next.borrow().as_ref().is_some_and(|s| s.id == wanted);
        let applied = self.outcome.lock().unwrap_or_else(|p| p.into_inner()).id == wanted;
        if queued || applied || self.fetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let (mut conn, node, dir, next, fetching) =
            (conn.clone(), node.to_owned(), self.dir.clone(), self.next.clone(), self.fetching.clone());
        let wanted = wanted.to_owned();
        tokio::spawn(async move {
            match desired::fetch(&mut conn, &node, &dir).await {
                Ok(state) => {
                    tracing::info!(desired = %state.id, "agent: new desired state fetched");
                    next.send_replace(Some(state));
                }
                Err(e) => {
                    metrics::counter!("edgebox_agent_fetch_failures_total").increment(1);
                    tracing::warn!(desired = %wanted, error = %format!("{e:#}"), "agent: desired state not fetched; retrying");
                }
            }
            fetching.store(false, Ordering::Release);
        });
    }

    /// The applied id and the deployments failing now, for a heartbeat.
    fn report(
        &self,
        managed: &crate::core::managed::ManagedRoles,
    ) -> (String, std::collections::BTreeMap<String, String>) {
        let outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let failed = desired::runtime_failures(&outcome, managed);
        (outcome.id, failed)
    }
}
