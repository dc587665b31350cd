//! Roles started, reconfigured and stopped while the appliance runs: the
//! agent applies its orchestrator's desired state through a
//! [`ManagedRoles`] handle, and the supervisor's [`Manager`] owns what runs.
//!
//! The operator's config file stays the operator's: a role it enables (and
//! the admin service and the agent) is never managed, so desired state
//! cannot take over a role configured on the device. A new section for a
//! role that reloads (its table entry says so) and keeps its listeners and
//! files is delivered as a reload, as SIGHUP does; otherwise the role is
//! drained and started again. A start counts
//! as applied once the role says it is ready; one that stops on its own,
//! or is not ready in time, is reported failed (and stays on /v1/roles as
//! failed), so a rollout can pause on it. An invalid section is refused
//! with the key at fault, and whatever ran before keeps running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::core::control::RoleCommands;
use crate::core::role::{CommandPort, Declared, Reload, Role, RoleCtx, Shared, StatusBoard, StatusHandle};

/// What applying one role's section did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Started,
    Reloaded,
    Restarted,
    Unchanged,
    Stopped,
}

/// Per role: what was done, or why it could not be.
pub type Outcomes = BTreeMap<String, Result<Applied, String>>;

struct Request {
    sections: BTreeMap<String, toml::Value>,
    ready_within: Duration,
    reply: oneshot::Sender<Outcomes>,
}

/// A role's handle on the supervisor's managed roles.
#[derive(Clone)]
pub struct ManagedRoles {
    tx: Option<mpsc::Sender<Request>>,
    board: StatusBoard,
}

impl ManagedRoles {
    /// A handle with no supervisor behind it (a role run outside one).
    pub fn unavailable() -> Self {
        Self { tx: None, board: StatusBoard::default() }
    }

    /// Makes the managed roles exactly `sections` (role name → its config
    /// section); roles not named stop. Waits up to `ready_within` for the
    /// roles it starts to be ready.
    pub async fn apply(
        &self,
        sections: BTreeMap<String, toml::Value>,
        ready_within: Duration,
    ) -> anyhow::Result<Outcomes> {
        let tx = self.tx.as_ref().ok_or_else(|| anyhow::anyhow!("no supervisor manages roles here"))?;
        let (reply, answer) = oneshot::channel();
        tx.send(Request { sections, ready_within, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor is shutting down"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the supervisor is shutting down"))
    }

    /// The status of a role now, managed or not.
    pub fn status(&self, name: &str) -> Option<crate::core::role::RoleStatus> {
        self.board.get(name).map(|s| s.snapshot())
    }
}

/// A role built from a new section, under its table name.
type Built = (&'static str, Box<dyn Role>);

struct Running {
    section: toml::Value,
    declared: Declared,
    stop: CancellationToken,
    task: JoinHandle<()>,
    reload: watch::Sender<Reload>,
    status: StatusHandle,
}

/// The supervisor's side: owns the managed roles.
pub struct Manager {
    shared: Shared,
    /// Roles from the config file (and the admin service) with what they claim.
    fixed: Vec<(&'static str, Declared)>,
    board: StatusBoard,
    readiness: Arc<Notify>,
    commands: RoleCommands,
    drain: Duration,
    running: BTreeMap<&'static str, Running>,
    generation: u64,
    rx: mpsc::Receiver<Request>,
}

/// Everything the manager needs from the supervisor.
pub struct ManagerParts {
    pub fixed: Vec<(&'static str, Declared)>,
    pub board: StatusBoard,
    pub readiness: Arc<Notify>,
    pub commands: RoleCommands,
    pub drain: Duration,
}

/// A handle (to put in [`Shared`]) and the channel's receiving end, which
/// [`Manager::new`] takes.
pub fn channel(board: StatusBoard) -> (ManagedRoles, ManagerInbox) {
    let (tx, rx) = mpsc::channel(4);
    (ManagedRoles { tx: Some(tx), board }, ManagerInbox(rx))
}

/// The receiving end of [`channel`].
pub struct ManagerInbox(mpsc::Receiver<Request>);

impl Manager {
    pub fn new(shared: Shared, parts: ManagerParts, inbox: ManagerInbox) -> Self {
        Self {
            shared,
            fixed: parts.fixed,
            board: parts.board,
            readiness: parts.readiness,
            commands: parts.commands,
            drain: parts.drain,
            running: BTreeMap::new(),
            generation: 0,
            rx: inbox.0,
        }
    }

    /// Serves apply requests until shutdown, then drains the managed roles.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let shutdown = self.shared.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                req = self.rx.recv() => {
                    let Some(req) = req else { break };
                    let out = self.apply(req.sections, req.ready_within).await;
                    let _ = req.reply.send(out);
                }
            }
        }
        let names: Vec<&'static str> = self.running.keys().copied().collect();
        for name in names {
            self.stop(name).await;
        }
        Ok(())
    }

    async fn apply(&mut self, sections: BTreeMap<String, toml::Value>, ready_within: Duration) -> Outcomes {
        let mut out = Outcomes::new();
        let mut builds = Vec::new();
        for (name, section) in &sections {
            match self.build(name, section) {
                Ok(Some((name, role))) => builds.push((name, section.clone(), role)),
                Ok(None) => {
                    out.insert(name.clone(), Ok(Applied::Unchanged));
                }
                Err(e) => {
                    out.insert(name.clone(), Err(e));
                }
            }
        }
        let unwanted: Vec<&'static str> = self.running.keys().copied().filter(|n| !sections.contains_key(*n)).collect();
        for name in unwanted {
            self.stop(name).await;
            out.insert(name.to_owned(), Ok(Applied::Stopped));
        }
        let mut started = Vec::new();
        for (name, section, role) in builds {
            let declared = role.declared();
            let healthy = |r: &Running| r.status.snapshot().state != "failed";
            let reloads = crate::roles::find(name).is_some_and(|e| e.reloads);
            if let Some(r) = self.running.get_mut(name)
                && reloads
                && r.declared == declared
                && healthy(r)
            {
                self.generation += 1;
                r.status.note_reload(format!("managed generation {} delivered", self.generation));
                let _ = r.reload.send(Reload::new(self.generation, role));
                r.section = section;
                out.insert(name.to_owned(), Ok(Applied::Reloaded));
                continue;
            }
            if let Err(e) = self.check_claims(name, &declared) {
                out.insert(name.to_owned(), Err(e));
                continue;
            }
            let again = self.running.contains_key(name);
            if again {
                self.stop(name).await;
            }
            self.start(name, section, role, declared);
            started.push((name, if again { Applied::Restarted } else { Applied::Started }));
        }
        for (name, applied) in started {
            out.insert(name.to_owned(), self.wait_ready(name, ready_within).await.map(|()| applied));
        }
        for (name, result) in &out {
            match result {
                Ok(applied) => tracing::info!(role = %name, applied = ?applied, "managed role applied"),
                Err(e) => tracing::warn!(role = %name, error = %e, "managed role not applied"),
            }
            let label = if result.is_ok() { "ok" } else { "failed" };
            metrics::counter!("edgebox_managed_applies_total", "result" => label).increment(1);
        }
        metrics::gauge!("edgebox_managed_roles").set(self.running.len() as f64);
        out
    }

    /// The role built from `section`, or None when it already runs with
    /// exactly that section.
    fn build(&self, name: &str, section: &toml::Value) -> Result<Option<Built>, String> {
        let entry = crate::roles::find(name)
            .ok_or_else(|| format!("no role `{name}` in this binary (built without its feature?)"))?;
        if entry.name == "agent" || self.fixed.iter().any(|(n, _)| *n == entry.name) {
            return Err(format!("role `{name}` is configured on this device; desired state cannot manage it"));
        }
        if let Some(r) = self.running.get(entry.name)
            && r.section == *section
            && r.status.snapshot().state != "failed"
        {
            return Ok(None);
        }
        let role = crate::core::config::load_section(entry, section)?;
        Ok(Some((entry.name, role)))
    }

    /// Refuses a listener or file another running role claims.
    fn check_claims(&self, name: &'static str, declared: &Declared) -> Result<(), String> {
        let others = self
            .fixed
            .iter()
            .map(|(n, d)| (*n, d))
            .chain(self.running.iter().filter(|(n, _)| **n != name).map(|(n, r)| (*n, &r.declared)));
        let mut all: Vec<(&str, &Declared)> = others.collect();
        all.push((name, declared));
        crate::core::role::check_conflicts(&all).map_err(|e| e.to_string())
    }

    fn start(&mut self, name: &'static str, section: toml::Value, role: Box<dyn Role>, declared: Declared) {
        let status = StatusHandle::new(self.readiness.clone());
        status.set_managed();
        status.set_state("starting");
        self.board.insert(name, status.clone());
        let (port, commands) = CommandPort::new();
        self.commands.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), port);
        let (reload, reload_rx) = watch::channel(Reload::default());
        let ctx = RoleCtx::new(name, &self.shared, reload_rx, status.clone(), declared.clone(), commands);
        let stop = ctx.shutdown.clone();
        let (ended, failed) = (stop.clone(), status.clone());
        let span = tracing::info_span!("role", role = name, managed = true);
        let task = tokio::spawn(
            async move {
                let result = role.run(ctx).await;
                match result {
                    Ok(()) if ended.is_cancelled() => {}
                    Ok(()) => failed.set_failed("stopped on its own".into()),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "managed role failed");
                        failed.set_failed(format!("{e:#}"));
                    }
                }
            }
            .instrument(span),
        );
        self.running.insert(name, Running { section, declared, stop, task, reload, status });
    }

    /// Drains a role (up to the shutdown deadline) and forgets it.
    async fn stop(&mut self, name: &'static str) {
        let Some(mut r) = self.running.remove(name) else { return };
        r.status.set_state("draining");
        r.stop.cancel();
        if tokio::time::timeout(self.drain, &mut r.task).await.is_err() {
            tracing::warn!(
                role = name,
                deadline_ms = self.drain.as_millis() as u64,
                "managed role drain deadline passed"
            );
            r.task.abort();
        }
        self.board.remove(name);
        self.commands.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Ok once the role is ready; its error if it stopped first.
    async fn wait_ready(&self, name: &'static str, within: Duration) -> Result<(), String> {
        let Some(status) = self.running.get(name).map(|r| r.status.clone()) else {
            return Err("not running".into());
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = status.snapshot();
            if s.ready {
                return Ok(());
            }
            if let Some(e) = s.error {
                return Err(e);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not ready within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
