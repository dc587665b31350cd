//! The node registry: every registered node in the store (table
//! `orchestrator.nodes`, one JSON value per id) and in memory, the topology
//! revision (table `orchestrator.meta`), which increases with every
//! registration, update and removal, and the event log watchers read.
//!
//! Writes are commands (command.rs) applied inside a store transaction by
//! `apply_register` and `apply_remove`, on this orchestrator alone or on
//! every Raft member (replica/); each reads the stored node and the
//! revision inside its transaction, so conflicts and revisions are decided
//! by the store, not by memory. `after_*` then brings memory along. A
//! registration is acknowledged only once it is in the store (fsync'd).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, RwLock};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::liveness::Health;
use super::node::{Limits, Node, Registration};
use crate::core::store::Store;

pub(super) const NODES: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.nodes");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("orchestrator.meta");
const REVISION: &str = "revision";
/// Events kept for watchers; one further behind must list again.
const EVENTS_KEPT: usize = 16_384;

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Registered {
    Created(Node),
    Updated(Node),
    /// The same registration again (an agent reconnecting): nothing changed.
    Unchanged(Node),
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub seq: u64,
    /// The topology revision after it.
    pub revision: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    pub ts_ms: u64,
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    events: VecDeque<Event>,
}

pub struct Registry {
    store: Store,
    limits: Limits,
    nodes: RwLock<(BTreeMap<String, Node>, u64)>,
    log: Mutex<Log>,
    /// Wakes long-polling watchers.
    pub changed: Notify,
}

/// Every stored node and the revision.
async fn load(store: &Store) -> anyhow::Result<(BTreeMap<String, Node>, u64)> {
    store
        .read(|txn| {
            let mut nodes = BTreeMap::new();
            let revision = match txn.open_table(META) {
                Ok(meta) => meta.get(REVISION)?.map_or(0, |v| v.value()),
                Err(_) => 0,
            };
            if let Ok(table) = txn.open_table(NODES) {
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    let node: Node = serde_json::from_str(v.value())
                        .map_err(|e| anyhow::anyhow!("store table orchestrator.nodes: node {:?}: {e}", k.value()))?;
                    nodes.insert(k.value().to_owned(), node);
                }
            }
            Ok((nodes, revision))
        })
        .await
}

/// Registers (or updates) a node inside a write transaction: conflicts
/// and the revision are decided by what is stored. Runs the same on every
/// Raft member; `now` comes with the command.
pub fn apply_register(
    txn: &WriteTransaction,
    reg: &Registration,
    now: u64,
) -> anyhow::Result<Result<Registered, String>> {
    let mut nodes = txn.open_table(NODES)?;
    let mut meta = txn.open_table(META)?;
    let existing: Option<Node> = match nodes.get(reg.id.as_str())? {
        Some(v) => Some(serde_json::from_str(v.value())?),
        None => None,
    };
    if let Some(e) = &existing {
        if let Some(c) = reg.conflict(&e.reg) {
            return Ok(Err(c));
        }
        if e.reg == *reg {
            return Ok(Ok(Registered::Unchanged(e.clone())));
        }
    }
    let revision = meta.get(REVISION)?.map_or(0, |v| v.value()) + 1;
    meta.insert(REVISION, revision)?;
    let node = Node {
        reg: reg.clone(),
        registered_ms: existing.as_ref().map_or(now, |e| e.registered_ms),
        updated_ms: now,
        revision,
    };
    nodes.insert(reg.id.as_str(), serde_json::to_string(&node)?.as_str())?;
    Ok(Ok(if existing.is_some() { Registered::Updated(node) } else { Registered::Created(node) }))
}

/// Removes a node inside a write transaction: the new revision, or None
/// when there was no such node.
pub fn apply_remove(txn: &WriteTransaction, id: &str) -> anyhow::Result<Option<u64>> {
    let mut nodes = txn.open_table(NODES)?;
    let mut meta = txn.open_table(META)?;
    if nodes.remove(id)?.is_none() {
        return Ok(None);
    }
    let revision = meta.get(REVISION)?.map_or(0, |v| v.value()) + 1;
    meta.insert(REVISION, revision)?;
    Ok(Some(revision))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// Loads every stored node.
    pub async fn open(store: Store, limits: Limits) -> anyhow::Result<Registry> {
        let loaded = load(&store).await?;
        Ok(Registry { store, limits, nodes: RwLock::new(loaded), log: Mutex::default(), changed: Notify::new() })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (BTreeMap<String, Node>, u64)> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.read().1
    }

    pub fn len(&self) -> usize {
        self.read().0.len()
    }

    pub fn get(&self, id: &str) -> Option<Node> {
        self.read().0.get(id).cloned()
    }

    /// Nodes in id order after `after`, those `keep` accepts, up to `limit`.
    pub fn page(&self, after: Option<&str>, limit: usize, keep: impl Fn(&Node) -> bool) -> (Vec<Node>, bool) {
        let guard = self.read();
        let range = match after {
            Some(a) => guard.0.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => guard.0.range::<str, _>(..),
        };
        let mut out = Vec::new();
        for (_, n) in range.filter(|(_, n)| keep(n)) {
            if out.len() == limit {
                return (out, true);
            }
            out.push(n.clone());
        }
        (out, false)
    }

    /// Runs `f` on the node, if registered, without copying it.
    pub fn with_node<T>(&self, id: &str, f: impl FnOnce(&Node) -> T) -> Option<T> {
        self.read().0.get(id).map(f)
    }

    /// Runs `f` on every node in id order, without copying them.
    pub fn for_each(&self, mut f: impl FnMut(&Node)) {
        self.read().0.values().for_each(&mut f);
    }

    /// Every node, for grouping.
    pub fn all(&self) -> Vec<Node> {
        self.read().0.values().cloned().collect()
    }

    /// Checks a registration before it is committed.
    pub fn check(&self, reg: &Registration) -> Result<(), String> {
        reg.check(self.limits)
    }

    /// What a committed command did to the registry, applied to memory.
    pub fn after_register(&self, outcome: &Registered) {
        match outcome {
            Registered::Created(n) => self.applied(n.clone(), "registered"),
            Registered::Updated(n) => self.applied(n.clone(), "updated"),
            Registered::Unchanged(_) => {}
        }
    }

    /// A committed removal, applied to memory.
    pub fn after_remove(&self, id: &str, revision: u64) {
        {
            let mut g = self.nodes.write().unwrap_or_else(|p| p.into_inner());
            g.0.remove(id);
            g.1 = g.1.max(revision);
        }
        self.event(Event {
            seq: 0,
            revision,
            kind: "deleted",
            id: id.to_owned(),
            node: None,
            health: None,
            ts_ms: now_ms(),
        });
    }

    /// Replaces memory with what the store holds (after a Raft snapshot
    /// was installed under it).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let loaded = load(&self.store).await?;
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        self.changed.notify_waiters();
        Ok(())
    }

    fn applied(&self, node: Node, kind: &'static str) {
        let revision = node.revision;
        {
            let mut g = self.nodes.write().unwrap_or_else(|p| p.into_inner());
            // Group-committed writes may land here out of order.
            if g.0.get(&node.reg.id).is_none_or(|n| n.revision < revision) {
                g.0.insert(node.reg.id.clone(), node.clone());
            }
            g.1 = g.1.max(revision);
        }
        let id = node.reg.id.clone();
        self.event(Event { seq: 0, revision, kind, id, node: Some(node), health: None, ts_ms: now_ms() });
    }

    /// Records a health change (no new revision: health is not topology).
    pub fn health_changed(&self, id: &str, health: Health) {
        let revision = self.revision();
        self.event(Event {
            seq: 0,
            revision,
            kind: "health",
            id: id.to_owned(),
            node: None,
            health: Some(health),
            ts_ms: now_ms(),
        });
    }

    fn event(&self, mut e: Event) {
        {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.next_seq += 1;
            e.seq = log.next_seq;
            if log.events.len() == EVENTS_KEPT {
                log.events.pop_front();
            }
            log.events.push_back(e);
        }
        self.changed.notify_waiters();
    }

    /// Events after `since` (at most `max`) and the number to ask from next,
    /// or `Err(newest)` when `since` is older than the log reaches back or
    /// from before this orchestrator started (the watcher lists again).
    pub fn events_since(&self, since: u64, max: usize) -> Result<(Vec<Event>, u64), u64> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let newest = log.next_seq;
        let oldest = log.events.front().map_or(newest + 1, |e| e.seq);
        if since > newest || since + 1 < oldest {
            return Err(newest);
        }
        let out: Vec<Event> = log.events.iter().filter(|e| e.seq > since).take(max).cloned().collect();
        let next = out.last().map_or(since, |e| e.seq);
        Ok((out, next))
    }

    /// The newest event's number.
    pub fn last_seq(&self) -> u64 {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).next_seq
    }
}
