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

use redb::{ReadableTable, TableDefinition};
use serde::Serialize;

use super::blobs::BLOBS;
use super::deployment::{Deployment, Phase, Spec};
use super::liveness::{Detector, Health};
use super::registry::{Registry, now_ms};
use super::selector::Selector;
use crate::core::store::{Durability, Store};
use crate::roles::fleet::{DeploymentState, DesiredState, desired_id};

const DEPLOYMENTS: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.deployments");
const ASSIGNMENTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("orchestrator.assignments");
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

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What a put did.
pub enum Put {
    Created(Deployment),
    Updated(Deployment),
    Unchanged(Deployment),
}

pub struct Rollouts {
    store: Store,
    state: RwLock<State>,
    reports: Reports,
    /// One writer at a time: puts, deletes, resumes and steps.
    write: tokio::sync::Mutex<()>,
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
        let deployments = store
            .read(|txn| {
                let mut out = BTreeMap::new();
                if let Ok(table) = txn.open_table(DEPLOYMENTS) {
                    for entry in table.iter()? {
                        let (k, v) = entry?;
                        let d: Deployment = serde_json::from_str(v.value()).map_err(|e| {
                            anyhow::anyhow!("store table orchestrator.deployments: {:?}: {e}", k.value())
                        })?;
                        let selector = Selector::parse(&d.spec.selector).map_err(|e| {
                            anyhow::anyhow!("store table orchestrator.deployments: {:?}: {e}", k.value())
                        })?;
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
            .await?;
        Ok(Rollouts {
            store,
            state: RwLock::new(State { deployments }),
            reports: Reports::new(),
            write: tokio::sync::Mutex::new(()),
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

    /// Stores a deployment: a new version when the spec changed.
    pub async fn put(&self, name: &str, spec: Spec) -> Result<Put, PutError> {
        let selector = spec.check().map_err(PutError::Invalid)?;
        let _w = self.write.lock().await;
        let current = self.read().deployments.get(name).map(|e| e.d.clone());
        if let Some(d) = &current
            && d.spec == spec
        {
            return Ok(Put::Unchanged(d.clone()));
        }
        let next = match current.clone() {
            Some(mut d) => {
                let previous = std::mem::replace(&mut d.spec, spec.clone());
                d.older.insert(d.version, previous);
                d.version += 1;
                d.phase = Phase::Rolling;
                d.paused_reason = None;
                d.accepted_failures = 0;
                d.updated_ms = now_ms();
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
                updated_ms: now_ms(),
            },
        };
        let record = serde_json::to_string(&next).map_err(anyhow::Error::from)?;
        let (key, digests) = (name.to_owned(), spec.files.clone());
        let missing = self
            .store
            .write(Durability::Immediate, move |txn| {
                {
                    let blobs = txn.open_table(BLOBS)?;
                    for (path, digest) in &digests {
                        if blobs.get(digest.as_str())?.is_none() {
                            return Ok(Some(format!("files.{path}: blob {digest} is not uploaded (POST /v1/blobs)")));
                        }
                    }
                }
                txn.open_table(DEPLOYMENTS)?.insert(key.as_str(), record.as_str())?;
                Ok(None)
            })
            .await?;
        if let Some(m) = missing {
            return Err(PutError::Invalid(m));
        }
        {
            let mut st = self.state_mut();
            let assigned = st.deployments.remove(name).map(|e| e.assigned).unwrap_or_default();
            st.deployments.insert(name.to_owned(), Entry { d: next.clone(), selector, assigned, progress: None });
        }
        self.touch();
        tracing::info!(deployment = name, version = next.version, "orchestrator: deployment stored; rolling out");
        metrics::counter!("edgebox_orchestrator_deployment_versions_total").increment(1);
        Ok(if current.is_some() { Put::Updated(next) } else { Put::Created(next) })
    }

    /// Removes a deployment: every node stops running it at once.
    pub async fn delete(&self, name: &str) -> anyhow::Result<bool> {
        let _w = self.write.lock().await;
        let Some(nodes) = self.read().deployments.get(name).map(|e| e.assigned.keys().cloned().collect::<Vec<_>>())
        else {
            return Ok(false);
        };
        let key = name.to_owned();
        self.store
            .write(Durability::Immediate, move |txn| {
                txn.open_table(DEPLOYMENTS)?.remove(key.as_str())?;
                let mut a = txn.open_table(ASSIGNMENTS)?;
                for n in &nodes {
                    a.remove((key.as_str(), n.as_str()))?;
                }
                Ok(())
            })
            .await?;
        self.state_mut().deployments.remove(name);
        tracing::info!(deployment = name, "orchestrator: deployment removed");
        Ok(true)
    }

    /// Resumes a paused rollout; failures seen so far are accepted.
    pub async fn resume(
        &self,
        name: &str,
        registry: &Registry,
        detector: &Detector,
    ) -> anyhow::Result<Option<Deployment>> {
        let _w = self.write.lock().await;
        let Some(mut d) = self.read().deployments.get(name).map(|e| e.d.clone()) else { return Ok(None) };
        let failed = self.progress_locked(name, registry, detector).map_or(0, |p| p.failed);
        d.phase = Phase::Rolling;
        d.paused_reason = None;
        d.accepted_failures = failed as u64;
        self.save(&d, Vec::new()).await?;
        self.touch();
        tracing::info!(deployment = name, accepted_failures = failed, "orchestrator: rollout resumed");
        Ok(Some(d))
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

    /// Forgets a removed node's assignments and report.
    pub async fn forget_node(&self, node: &str) -> anyhow::Result<()> {
        let _w = self.write.lock().await;
        let held: Vec<String> = self
            .read()
            .deployments
            .values()
            .filter(|e| e.assigned.contains_key(node))
            .map(|e| e.d.name.clone())
            .collect();
        if !held.is_empty() {
            let key = node.to_owned();
            let names = held.clone();
            self.store
                .write(Durability::Immediate, move |txn| {
                    let mut a = txn.open_table(ASSIGNMENTS)?;
                    for d in &names {
                        a.remove((d.as_str(), key.as_str()))?;
                    }
                    Ok(())
                })
                .await?;
        }
        self.reports.remove(node);
        let mut st = self.state_mut();
        for e in st.deployments.values_mut() {
            e.assigned.remove(node);
        }
        Ok(())
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

    /// Moves rollouts on when something changed since the last step.
    pub async fn step(&self, registry: &Registry, detector: &Detector) -> anyhow::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let _w = self.write.lock().await;
        let names: Vec<String> = self.read().deployments.keys().cloned().collect();
        for name in names {
            let planning = std::time::Instant::now();
            // A step over a large fleet takes milliseconds of CPU: off the
            // runtime's workers, so heartbeats keep being answered.
            let decided = blocking(|| {
                let st = self.read();
                st.deployments.get(&name).map(|e| decide(e, &self.reports, registry, detector))
            });
            let Some((progress, decided)) = decided else { continue };
            if let Some(e) = self.state_mut().deployments.get_mut(&name) {
                e.progress = Some(progress);
            }
            metrics::histogram!("edgebox_orchestrator_rollout_step_seconds").record(planning.elapsed().as_secs_f64());
            let Some((d, assign)) = decided else { continue };
            if d.phase != self.read().deployments.get(&name).map_or(d.phase, |e| e.d.phase) {
                announce(&d);
            }
            self.save(&d, assign).await?;
        }
        Ok(())
    }

    /// Stores a deployment record with new assignments, then applies both.
    async fn save(&self, d: &Deployment, assign: Vec<String>) -> anyhow::Result<()> {
        let record = serde_json::to_string(d)?;
        let (name, version, nodes) = (d.name.clone(), d.version, assign.clone());
        self.store
            .write(Durability::Immediate, move |txn| {
                txn.open_table(DEPLOYMENTS)?.insert(name.as_str(), record.as_str())?;
                let mut a = txn.open_table(ASSIGNMENTS)?;
                for n in &nodes {
                    a.insert((name.as_str(), n.as_str()), version)?;
                }
                Ok(())
            })
            .await?;
        let mut st = self.state_mut();
        if let Some(e) = st.deployments.get_mut(&d.name) {
            e.d = d.clone();
            for n in assign {
                e.assigned.insert(n, d.version);
            }
        }
        Ok(())
    }
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
