//! Desired state and its rollouts.
//!
//! Every deployment (deployment.rs) is stored in `orchestrator.deployments`;
//! which version each node is assigned is stored per (deployment, node) in
//! `orchestrator.assignments`. A node's desired state is the deployments
//! whose selector matches it, each at its assigned version (a node not yet
//! assigned one runs none of it). Agents report the desired-state id they
//! applied and which deployments failed; a step (each second, when
//! something changed) moves more nodes to the current version: first the
//! canary share, then, once every canary has settled, the rest, never more
//! than `max_unavailable` updating at once, in an order fixed per deployment
//! (a hash of its name and the node's id). More failures than
//! `max_failures` pause the rollout until an operator resumes it or puts
//! a new version. Only nodes that are heartbeating (ready) are moved.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::blobs::BLOBS;
use super::command::Command;
use super::deployment::{Deployment, Phase, Spec};
use super::liveness::{Detector, Health};
use super::registry::Registry;
use super::selector::Selector;
use crate::core::store::Store;
use crate::roles::fleet::{DeploymentState, DesiredState, desired_id};

pub(super) const DEPLOYMENTS: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.deployments");
pub(super) const ASSIGNMENTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("orchestrator.assignments");
/// Failed nodes named in a deployment's progress.
const FAILED_SHOWN: usize = 20;

/// What an agent last said it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The desired-state id it applied.
    pub applied: String,
    /// Deployments of that state that failed, with why.
    pub failed: BTreeMap<String, String>,
}

struct Entry {
    d: Deployment,
    selector: Selector,
    assigned: HashMap<String, u64>,
    /// As the last step counted it (what GET shows, without a recount).
    progress: Option<Progress>,
}

#[derive(Default)]
struct State {
    deployments: BTreeMap<String, Entry>,
}

/// Agents' reports, sharded so a heartbeat's report waits at most for
/// another node's, never for a whole rollout step reading them all.
struct Reports {
    shards: Vec<std::sync::Mutex<HashMap<String, Report>>>,
}

const REPORT_SHARDS: usize = 64;

impl Reports {
    fn new() -> Self {
        Self { shards: (0..REPORT_SHARDS).map(|_| Default::default()).collect() }
    }

    fn shard(&self, node: &str) -> std::sync::MutexGuard<'_, HashMap<String, Report>> {
        let i = order("", node) as usize % REPORT_SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a report; true when it changed.
    fn put(&self, node: &str, report: Report) -> bool {
        let mut shard = self.shard(node);
        if shard.get(node) == Some(&report) {
            return false;
        }
        shard.insert(node.to_owned(), report);
        true
    }

    fn get(&self, node: &str) -> Option<Report> {
        self.shard(node).get(node).cloned()
    }

    fn remove(&self, node: &str) {
        self.shard(node).remove(node);
    }

    /// How `node` stands with `name` at `version`.
    fn standing(&self, node: &str, name: &str, version: u64) -> Standing {
        standing(self.shard(node).get(node), name, version)
    }
}

/// Where one deployment's rollout stands, counted over selected nodes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub selected: usize,
    /// Applied the current version.
    pub updated: usize,
    /// Assigned the current version, not yet reported.
    pub pending: usize,
    pub failed: usize,
    /// Not yet assigned the current version.
    pub waiting: usize,
    /// Selected but not heartbeating: not moved until they return.
    pub offline: usize,
    pub failures: Vec<serde_json::Value>,
}

/// What a put did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Put {
    Created(Deployment),
    Updated(Deployment),
    Unchanged(Deployment),
}

pub struct Rollouts {
    store: Store,
    state: RwLock<State>,
    reports: Reports,
    /// Something a step looks at changed since the last one.
    dirty: AtomicBool,
}

/// A node's place in a deployment's order (FNV-1a of both names).
fn order(deployment: &str, node: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in deployment.bytes().chain([0]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// How a node stands with `name` at `version`, from its report.
enum Standing {
    Updated,
    Failed(String),
    Pending,
}

fn standing(report: Option<&Report>, name: &str, version: u64) -> Standing {
    let Some(r) = report else { return Standing::Pending };
    let holds = |pair: &str| {
        pair.rsplit_once('@').is_some_and(|(n, v)| n == name && v.parse::<u64>().is_ok_and(|v| v == version))
    };
    if !r.applied.split(',').any(holds) {
        return Standing::Pending;
    }
    match r.failed.get(name) {
        Some(e) => Standing::Failed(e.clone()),
        None => Standing::Updated,
    }
}

impl Rollouts {
    pub async fn open(store: Store) -> anyhow::Result<Rollouts> {
        let deployments = load(&store).await?;
        Ok(Rollouts {
            store,
            state: RwLock::new(State { deployments }),
            reports: Reports::new(),
            dirty: AtomicBool::new(true),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a step soon (a node registered, changed health, reported).
    pub fn touch(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Checks a deployment before it is committed; its selector.
    pub fn check(spec: &Spec) -> Result<Selector, String> {
        spec.check()
    }

    /// A committed put, applied to memory.
    pub fn after_put(&self, put: &Put) {
        let (Put::Created(d) | Put::Updated(d)) = put else { return };
        let selector = match Selector::parse(&d.spec.selector) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(deployment = %d.name, error = %e, "orchestrator: a stored deployment's selector");
                return;
            }
        };
        {
            let mut st = self.state_mut();
            let assigned = st.deployments.remove(&d.name).map(|e| e.assigned).unwrap_or_default();
            st.deployments.insert(d.name.clone(), Entry { d: d.clone(), selector, assigned, progress: None });
        }
        self.touch();
        tracing::info!(deployment = %d.name, version = d.version, "orchestrator: deployment stored; rolling out");
        metrics::counter!("edgebox_orchestrator_deployment_versions_total").increment(1);
    }

    /// A committed removal of a deployment, applied to memory.
    pub fn after_delete(&self, name: &str) {
        if self.state_mut().deployments.remove(name).is_some() {
            tracing::info!(deployment = name, "orchestrator: deployment removed");
        }
    }

    /// How many nodes failed `name`'s current version, as this
    /// orchestrator sees them (what a resume accepts).
    pub fn failures(&self, name: &str, registry: &Registry, detector: &Detector) -> Option<u64> {
        self.progress_locked(name, registry, detector).map(|p| p.failed as u64)
    }

    /// A committed resume or step, applied to memory.
    pub fn after_record(&self, d: &Deployment, assign: &[String]) {
        let mut st = self.state_mut();
        if let Some(e) = st.deployments.get_mut(&d.name) {
            if d.phase != e.d.phase {
                announce(d);
            }
            e.d = d.clone();
            for n in assign {
                e.assigned.insert(n.clone(), d.version);
            }
        }
        drop(st);
        self.touch();
    }

    /// Replaces memory with what the store holds (after a Raft snapshot).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let deployments = load(&self.store).await?;
        self.state_mut().deployments = deployments;
        self.touch();
        Ok(())
    }

    /// Notes what a node's agent says it runs.
    pub fn report(&self, node: &str, applied: String, failed: BTreeMap<String, String>) {
        if self.reports.put(node, Report { applied, failed }) {
            self.touch();
        }
    }

    /// What `node`'s agent last reported.
    pub fn report_of(&self, node: &str) -> Option<Report> {
        self.reports.get(node)
    }

    /// A committed node removal, applied to memory.
    pub fn after_forget(&self, node: &str) {
        self.reports.remove(node);
        let mut st = self.state_mut();
        for e in st.deployments.values_mut() {
            e.assigned.remove(node);
        }
    }

    /// The (deployment, version) pairs `node` is to run.
    fn pairs(st: &State, labels: &BTreeMap<String, String>, arch: &str, node: &str) -> Vec<(String, u64)> {
        st.deployments
            .values()
            .filter(|e| e.selector.matches(labels, arch, node))
            .filter_map(|e| e.assigned.get(node).filter(|v| e.d.spec_of(**v).is_some()).map(|v| (e.d.name.clone(), *v)))
            .collect()
    }

    /// The id of `node`'s desired state now (empty: nothing to run).
    pub fn desired_id(&self, registry: &Registry, node: &str) -> String {
        let st = self.read();
        if st.deployments.is_empty() {
            return String::new();
        }
        let pairs =
            registry.with_node(node, |n| Self::pairs(&st, &n.reg.labels, &n.reg.arch, node)).unwrap_or_default();
        desired_id(pairs.iter().map(|(n, v)| (n.as_str(), *v)))
    }

    /// `node`'s whole desired state; None when it is not registered.
    pub fn desired(&self, registry: &Registry, node: &str) -> Option<DesiredState> {
        let st = self.read();
        let pairs = registry.with_node(node, |n| Self::pairs(&st, &n.reg.labels, &n.reg.arch, node))?;
        let deployments = pairs
            .iter()
            .filter_map(|(name, version)| {
                let spec = st.deployments.get(name)?.d.spec_of(*version)?;
                Some(DeploymentState {
                    name: name.clone(),
                    version: *version,
                    config: spec.config.clone(),
                    files: spec.files.clone(),
                })
            })
            .collect();
        Some(DesiredState { id: desired_id(pairs.iter().map(|(n, v)| (n.as_str(), *v))), deployments })
    }

    /// Every deployment, with its progress.
    pub fn list(&self, registry: &Registry, detector: &Detector) -> Vec<(Deployment, Progress)> {
        let names: Vec<String> = self.read().deployments.keys().cloned().collect();
        names.iter().filter_map(|n| self.get(n, registry, detector)).collect()
    }

    pub fn get(&self, name: &str, registry: &Registry, detector: &Detector) -> Option<(Deployment, Progress)> {
        let d = self.read().deployments.get(name)?.d.clone();
        Some((d, self.progress_locked(name, registry, detector)?))
    }

    /// The progress the last step counted, or a fresh count.
    fn progress_locked(&self, name: &str, registry: &Registry, detector: &Detector) -> Option<Progress> {
        let st = self.read();
        let e = st.deployments.get(name)?;
        Some(e.progress.clone().unwrap_or_else(|| plan(e, &self.reports, registry, detector).0))
    }

    /// Moves rollouts on when something changed since the last step:
    /// each deployment's next record and assignments go to `commit` (a
    /// step command, which only lands on the record it was planned from).
    pub async fn step<F, Fut>(&self, registry: &Registry, detector: &Detector, commit: F) -> anyhow::Result<()>
    where
        F: Fn(Command) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let names: Vec<String> = self.read().deployments.keys().cloned().collect();
        for name in names {
            let planning = std::time::Instant::now();
            // A step over a large fleet takes milliseconds of CPU: off the
            // runtime's workers, so heartbeats keep being answered.
            let decided = blocking(|| {
                let st = self.read();
                st.deployments.get(&name).map(|e| (e.d.clone(), decide(e, &self.reports, registry, detector)))
            });
            let Some((base, (progress, decided))) = decided else { continue };
            if let Some(e) = self.state_mut().deployments.get_mut(&name) {
                e.progress = Some(progress);
            }
            metrics::histogram!("edgebox_orchestrator_rollout_step_seconds").record(planning.elapsed().as_secs_f64());
            let Some((record, assign)) = decided else { continue };
            commit(Command::Step { base: Box::new(base), record: Box::new(record), assign }).await?;
        }
        Ok(())
    }
}

/// Every stored deployment with its assignments.
async fn load(store: &Store) -> anyhow::Result<BTreeMap<String, Entry>> {
    store
        .read(|txn| {
            let mut out = BTreeMap::new();
            if let Ok(table) = txn.open_table(DEPLOYMENTS) {
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    let d: Deployment = serde_json::from_str(v.value())
                        .map_err(|e| anyhow::anyhow!("store table orchestrator.deployments: {:?}: {e}", k.value()))?;
                    let selector = Selector::parse(&d.spec.selector)
                        .map_err(|e| anyhow::anyhow!("store table orchestrator.deployments: {:?}: {e}", k.value()))?;
                    out.insert(d.name.clone(), Entry { d, selector, assigned: HashMap::new(), progress: None });
                }
            }
            if let Ok(table) = txn.open_table(ASSIGNMENTS) {
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    let (dep, node) = k.value();
                    if let Some(e) = out.get_mut(dep) {
                        e.assigned.insert(node.to_owned(), v.value());
                    }
                }
            }
            Ok(out)
        })
        .await
}

/// The stored deployments whose current or kept versions name `digest`.
pub(super) fn naming(txn: &WriteTransaction, digest: &str) -> anyhow::Result<Vec<String>> {
    let t = txn.open_table(DEPLOYMENTS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        let (name, v) = row?;
        let d: Deployment = serde_json::from_str(v.value())
            .map_err(|e| anyhow::anyhow!("store table orchestrator.deployments: {:?}: {e}", name.value()))?;
        if std::iter::once(&d.spec).chain(d.older.values()).any(|s| s.files.values().any(|f| f == digest)) {
            out.push(d.name);
        }
    }
    Ok(out)
}

fn stored(txn: &WriteTransaction, name: &str) -> anyhow::Result<Option<Deployment>> {
    let t = txn.open_table(DEPLOYMENTS)?;
    let Some(v) = t.get(name)? else { return Ok(None) };
    Ok(Some(
        serde_json::from_str(v.value())
            .map_err(|e| anyhow::anyhow!("store table orchestrator.deployments: {name:?}: {e}"))?,
    ))
}

/// Stores a deployment inside a write transaction: a new version when the
/// spec changed, refused while a file it names is not uploaded.
pub fn apply_put(txn: &WriteTransaction, name: &str, spec: &Spec, now: u64) -> anyhow::Result<Result<Put, String>> {
    let current = stored(txn, name)?;
    if let Some(d) = &current
        && d.spec == *spec
    {
        return Ok(Ok(Put::Unchanged(d.clone())));
    }
    {
        let blobs = txn.open_table(BLOBS)?;
        for (path, digest) in &spec.files {
            if blobs.get(digest.as_str())?.is_none() {
                return Ok(Err(format!("files.{path}: blob {digest} is not uploaded (POST /v1/blobs)")));
            }
        }
    }
    let next = match current.clone() {
        Some(mut d) => {
            let previous = std::mem::replace(&mut d.spec, spec.clone());
            d.older.insert(d.version, previous);
            d.version += 1;
            d.phase = Phase::Rolling;
            d.paused_reason = None;
            d.accepted_failures = 0;
            d.updated_ms = now;
            d
        }
        None => Deployment {
            name: name.to_owned(),
            version: 1,
            spec: spec.clone(),
            older: BTreeMap::new(),
            phase: Phase::Rolling,
            paused_reason: None,
            accepted_failures: 0,
            updated_ms: now,
        },
    };
    txn.open_table(DEPLOYMENTS)?.insert(name, serde_json::to_string(&next)?.as_str())?;
    Ok(Ok(if current.is_some() { Put::Updated(next) } else { Put::Created(next) }))
}

/// Removes a deployment and its assignments; false when there was none.
pub fn apply_delete(txn: &WriteTransaction, name: &str) -> anyhow::Result<bool> {
    if txn.open_table(DEPLOYMENTS)?.remove(name)?.is_none() {
        return Ok(false);
    }
    let mut a = txn.open_table(ASSIGNMENTS)?;
    let held: Vec<String> = a
        .range((name, "")..)?
        .map_while(|e| e.ok().filter(|(k, _)| k.value().0 == name).map(|(k, _)| k.value().1.to_owned()))
        .collect();
    for n in &held {
        a.remove((name, n.as_str()))?;
    }
    Ok(true)
}

/// Resumes a paused rollout, accepting `accepted` failures.
pub fn apply_resume(txn: &WriteTransaction, name: &str, accepted: u64) -> anyhow::Result<Option<Deployment>> {
    let Some(mut d) = stored(txn, name)? else { return Ok(None) };
    d.phase = Phase::Rolling;
    d.paused_reason = None;
    d.accepted_failures = accepted;
    txn.open_table(DEPLOYMENTS)?.insert(name, serde_json::to_string(&d)?.as_str())?;
    Ok(Some(d))
}

/// Stores a step's record and assignments, only when the stored record is
/// still `base` (a put, resume or delete since the step was planned wins).
pub fn apply_step(
    txn: &WriteTransaction,
    base: &Deployment,
    record: &Deployment,
    assign: &[String],
) -> anyhow::Result<bool> {
    if stored(txn, &record.name)?.as_ref() != Some(base) {
        return Ok(false);
    }
    txn.open_table(DEPLOYMENTS)?.insert(record.name.as_str(), serde_json::to_string(record)?.as_str())?;
    let mut a = txn.open_table(ASSIGNMENTS)?;
    for n in assign {
        a.insert((record.name.as_str(), n.as_str()), record.version)?;
    }
    Ok(true)
}

/// Drops a removed node's assignments.
pub fn apply_forget(txn: &WriteTransaction, node: &str) -> anyhow::Result<()> {
    let names: Vec<String> = {
        let t = txn.open_table(DEPLOYMENTS)?;
        t.iter()?.map(|e| e.map(|(k, _)| k.value().to_owned())).collect::<Result<_, _>>()?
    };
    let mut a = txn.open_table(ASSIGNMENTS)?;
    for d in &names {
        a.remove((d.as_str(), node))?;
    }
    Ok(())
}

/// Runs `f` where blocking is allowed: in place on a multi-threaded
/// runtime's worker (its other tasks move elsewhere meanwhile).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Counts a deployment's selected nodes; also returns the nodes that may
/// take the current version, each with its place in the rollout order.
fn plan(e: &Entry, reports: &Reports, registry: &Registry, detector: &Detector) -> (Progress, Vec<(u64, String)>) {
    let (name, version) = (e.d.name.as_str(), e.d.version);
    let mut p = Progress::default();
    let mut candidates = Vec::new();
    registry.for_each(|n| {
        let id = n.reg.id.as_str();
        if !e.selector.matches(&n.reg.labels, &n.reg.arch, id) {
            return;
        }
        p.selected += 1;
        let health = detector.health(id).map(|h| h.0);
        if e.assigned.get(id) == Some(&version) {
            match reports.standing(id, name, version) {
                Standing::Updated => p.updated += 1,
                Standing::Failed(err) => {
                    p.failed += 1;
                    if p.failures.len() < FAILED_SHOWN {
                        p.failures.push(serde_json::json!({"node": id, "error": err}));
                    }
                }
                Standing::Pending if health == Some(Health::Dead) => p.offline += 1,
                Standing::Pending => p.pending += 1,
            }
        } else if health == Some(Health::Ready) {
            candidates.push((order(name, id), id.to_owned()));
        } else {
            p.offline += 1;
        }
    });
    p.waiting = candidates.len();
    (p, candidates)
}

/// The deployment's progress, and its next record with the nodes to assign
/// now (None when nothing changes).
fn decide(
    e: &Entry,
    reports: &Reports,
    registry: &Registry,
    detector: &Detector,
) -> (Progress, Option<(Deployment, Vec<String>)>) {
    let mut d = e.d.clone();
    let (p, mut candidates) = plan(e, reports, registry, detector);
    let s = d.spec.strategy;
    let mut assign = Vec::new();
    if d.phase != Phase::Paused {
        if p.failed as u64 > d.accepted_failures + u64::from(s.max_failures) {
            d.phase = Phase::Paused;
            let first =
                p.failures.first().map(|f| format!("; first: {} ({})", f["node"], f["error"])).unwrap_or_default();
            d.paused_reason = Some(format!("{} node(s) failed version {}{first}", p.failed, d.version));
        } else {
            let assigned = p.updated + p.pending + p.failed;
            let live = assigned + candidates.len();
            let canary = (live * usize::from(s.canary_percent)).div_ceil(100);
            let limit = if assigned >= canary && p.pending == 0 { usize::MAX } else { canary };
            let room = limit.saturating_sub(assigned).min((s.max_unavailable as usize).saturating_sub(p.pending));
            let done = candidates.is_empty() && p.pending == 0;
            d.phase = if done { Phase::Complete } else { Phase::Rolling };
            // The first `room` in rollout order, without sorting them all.
            if room < candidates.len() {
                if room > 0 {
                    candidates.select_nth_unstable(room - 1);
                }
                candidates.truncate(room);
            }
            assign = candidates.into_iter().map(|(_, id)| id).collect();
        }
    }
    // Earlier versions stay while some node is assigned one.
    let held: std::collections::BTreeSet<u64> = e.assigned.values().copied().collect();
    d.older.retain(|v, _| held.contains(v));
    if assign.is_empty() && d == e.d {
        return (p, None);
    }
    (p, Some((d, assign)))
}

fn announce(d: &Deployment) {
    match d.phase {
        Phase::Paused => tracing::warn!(
            deployment = %d.name,
            version = d.version,
            reason = d.paused_reason.as_deref().unwrap_or(""),
            "orchestrator: rollout paused"
        ),
        Phase::Complete => tracing::info!(deployment = %d.name, version = d.version, "orchestrator: rollout complete"),
        Phase::Rolling => tracing::info!(deployment = %d.name, version = d.version, "orchestrator: rolling out"),
    }
    let phase = match d.phase {
        Phase::Paused => "paused",
        Phase::Complete => "complete",
        Phase::Rolling => "rolling",
    };
    metrics::counter!("edgebox_orchestrator_rollout_phases_total", "phase" => phase).increment(1);
}
