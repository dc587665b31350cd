//! The agent's desired-state machinery: the applier task (which applies
//! each new desired state in turn, and at start the one the last run
//! saved), what it last applied, and the fetch of a new one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::desired;
use crate::core::managed::ManagedRoles;
use crate::core::role::RoleCtx;
use crate::roles::fleet::DesiredState;
use crate::roles::fleet::client::Conn;

/// The agent's desired-state machinery: the applier task, what it last
/// applied, and whether a fetch is under way.
pub struct Desire {
    dir: PathBuf,
    /// The next state to apply (fetched, or saved by the last run).
    next: tokio::sync::watch::Sender<Option<DesiredState>>,
    outcome: Arc<Mutex<desired::Outcome>>,
    fetching: Arc<AtomicBool>,
    pub applier: tokio::task::JoinHandle<()>,
}

impl Desire {
    /// Starts the applier; a desired state saved by the last run is
    /// applied at once, before the orchestrator is reached.
    pub async fn start(ctx: &RoleCtx, ready_within: Duration) -> anyhow::Result<Desire> {
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
    pub fn fetch_if_new(&self, wanted: &str, conn: &Conn, node: &str) {
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
    pub fn report(&self, managed: &ManagedRoles) -> (String, BTreeMap<String, String>) {
        let outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let failed = desired::runtime_failures(&outcome, managed);
        (outcome.id, failed)
    }
}
