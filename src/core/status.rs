//! What every running role reports of itself (ready or not, its
//! listeners, its last reload, its own detail), and the board the admin
//! service reads it from: /readyz and /v1/roles. Roles the agent starts at
//! runtime join the board and leave it when stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

/// A role's live status, shown on /readyz and /v1/roles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RoleStatus {
    pub ready: bool,
    /// Bound listeners by name, with the real port when 0 was asked for.
    pub listeners: BTreeMap<String, SocketAddr>,
    /// The last reload generation the role saw, and what it said of it.
    pub last_reload: Option<String>,
    pub state: &'static str,
    /// What the role reports of its own work (certguard: its certificates).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    /// Started by the agent from desired state, not from the config file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub managed: bool,
    /// Why the role stopped, when it stopped on its own (managed roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared, cheap-to-clone handle on one role's status. Handles made from
/// one [`tokio::sync::Notify`] wake its waiters on every readiness change.
#[derive(Clone, Default)]
pub struct StatusHandle {
    status: Arc<Mutex<RoleStatus>>,
    changed: Arc<tokio::sync::Notify>,
}

impl StatusHandle {
    /// A handle that signals `changed` when readiness changes.
    pub fn new(changed: Arc<tokio::sync::Notify>) -> Self {
        Self { status: Arc::default(), changed }
    }

    pub fn set_ready(&self, ready: bool) {
        {
            let mut s = self.lock();
            s.ready = ready;
            s.state = if ready { "ready" } else { "starting" };
        }
        self.changed.notify_waiters();
    }
    pub fn set_state(&self, state: &'static str) {
        let mut s = self.lock();
        s.state = state;
        if state != "ready" {
            s.ready = false;
        }
    }
    pub fn note_reload(&self, text: String) {
        self.lock().last_reload = Some(text);
    }
    /// Marks a managed role that ended on its own, with why.
    pub fn set_failed(&self, error: String) {
        let mut s = self.lock();
        s.state = "failed";
        s.ready = false;
        s.error = Some(error);
    }
    pub fn set_managed(&self) {
        self.lock().managed = true;
    }
    pub fn set_detail(&self, detail: serde_json::Value) {
        self.lock().detail = detail;
    }
    pub fn add_listener(&self, name: &str, addr: SocketAddr) {
        self.lock().listeners.insert(name.to_owned(), addr);
    }
    pub fn snapshot(&self) -> RoleStatus {
        self.lock().clone()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, RoleStatus> {
        // A poisoned lock only means a panic elsewhere; the status is still
        // plain data and safe to read.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every role's status by name, in start order; shared by the supervisor
/// (which adds and removes managed roles) and the admin service.
#[derive(Clone, Default)]
pub struct StatusBoard {
    roles: Arc<RwLock<Vec<(&'static str, StatusHandle)>>>,
}

impl StatusBoard {
    pub fn new(roles: Vec<(&'static str, StatusHandle)>) -> Self {
        Self { roles: Arc::new(RwLock::new(roles)) }
    }

    /// Adds (or replaces) a role's handle.
    pub fn insert(&self, name: &'static str, status: StatusHandle) {
        let mut roles = self.roles.write().unwrap_or_else(|p| p.into_inner());
        match roles.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = status,
            None => roles.push((name, status)),
        }
    }

    pub fn remove(&self, name: &str) {
        self.roles.write().unwrap_or_else(|p| p.into_inner()).retain(|(n, _)| *n != name);
    }

    /// Every role's name and status now.
    pub fn snapshot(&self) -> Vec<(&'static str, RoleStatus)> {
        self.roles.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(n, s)| (*n, s.snapshot())).collect()
    }

    pub fn get(&self, name: &str) -> Option<StatusHandle> {
        self.roles.read().unwrap_or_else(|p| p.into_inner()).iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone())
    }
}
