//! Running what the orchestrator wants on this device.
//!
//! The desired state (roles/fleet) is fetched when the orchestrator names a
//! new id (fetch), with every file it carries checked against its digest
//! and cached under `<data_dir>/agent/blobs`; then it is saved in the store
//! (table `agent.state`) before it is applied, so a restart applies it
//! again at once, orchestrator or not: the device keeps running its last
//! desired state while offline. Applying (apply) writes each deployment's
//! files under `<data_dir>/agent/files/<deployment>/` (a new directory
//! swapped in whole), puts that directory where a section says
//! `${files}`, and hands the role sections to the supervisor's managed
//! roles, which start, reload or stop them and say which failed. The
//! result is reported in heartbeats; a managed role that fails later is
//! reported too (runtime_failures).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use redb::TableDefinition;

use crate::core::managed::ManagedRoles;
use crate::core::store::{Durability, Store};
use crate::roles::fleet::client::Conn;
use crate::roles::fleet::{self, DesiredState};

const STATE: TableDefinition<&str, &str> = TableDefinition::new("agent.state");
const DESIRED: &str = "desired";
/// Largest desired-state document read from the orchestrator.
const MAX_DOCUMENT: usize = 4 << 20;
/// Largest file read from the orchestrator.
const MAX_BLOB: usize = 64 << 20;

/// What applying the desired state came to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The id applied ("" before anything was).
    pub id: String,
    /// Deployments that failed, with why.
    pub failed: BTreeMap<String, String>,
    /// Each managed role's deployment and the section it was handed.
    pub roles: BTreeMap<String, (String, toml::Value)>,
}

/// The desired state saved by the last run, if any.
pub async fn load_saved(store: &Store) -> anyhow::Result<Option<DesiredState>> {
    store
        .read(|txn| {
            let table = match txn.open_table(STATE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let Some(v) = table.get(DESIRED)? else { return Ok(None) };
            let state = serde_json::from_str(v.value()).context("store table agent.state: key desired")?;
            Ok(Some(state))
        })
        .await
}

async fn save(store: &Store, state: &DesiredState) -> anyhow::Result<()> {
    let text = serde_json::to_string(state)?;
    store
        .write(Durability::Immediate, move |txn| {
            txn.open_table(STATE)?.insert(DESIRED, text.as_str())?;
            Ok(())
        })
        .await
}

fn blob_path(dir: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let hex = fleet::parse_digest(digest).map_err(anyhow::Error::msg)?;
    Ok(dir.join("blobs").join(hex))
}

/// Fetches the desired state `id` names and every file it lacks locally;
/// the document returned is ready to apply offline.
pub async fn fetch(conn: &mut Conn, node: &str, dir: &Path) -> anyhow::Result<DesiredState> {
    let (status, body) = conn.get(&format!("/v1/nodes/{node}/desired"), MAX_DOCUMENT).await?;
    anyhow::ensure!(
        status == 200,
        "GET /v1/nodes/{node}/desired answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let state: DesiredState = serde_json::from_slice(&body).context("the desired state from the orchestrator")?;
    for d in &state.deployments {
        for (path, digest) in &d.files {
            fleet::check_file_path(path).map_err(|e| anyhow::anyhow!("deployment {}: {e}", d.name))?;
            let cached = blob_path(dir, digest).with_context(|| format!("deployment {}: file {path}", d.name))?;
            if cached.exists() {
                continue;
            }
            let (status, bytes) = conn.get(&format!("/v1/blobs/{digest}"), MAX_BLOB).await?;
            anyhow::ensure!(status == 200, "GET /v1/blobs/{digest} answered {status}");
            let actual = fleet::digest_of(&bytes);
            if actual != *digest {
                metrics::counter!("edgebox_agent_blob_digest_mismatches_total").increment(1);
                anyhow::bail!("blob {digest} (deployment {}, file {path}): the content's digest is {actual}", d.name);
            }
            let tmp = cached.with_extension("partial");
            let (t, c) = (tmp.clone(), cached.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(c.parent().unwrap_or(Path::new(".")))?;
                std::fs::write(&t, &bytes)?;
                std::fs::File::open(&t)?.sync_all()?;
                std::fs::rename(&t, &c)
            })
            .await?
            .with_context(|| format!("caching blob {digest} at {}", cached.display()))?;
        }
    }
    Ok(state)
}

/// Saves `state`, then makes this device run it. A deployment whose files
/// or config cannot be prepared keeps running what `previous` gave it.
pub async fn apply(
    state: &DesiredState,
    previous: &Outcome,
    store: &Store,
    dir: &Path,
    managed: &ManagedRoles,
    ready_within: Duration,
) -> Outcome {
    if let Err(e) = save(store, state).await {
        tracing::error!(error = %format!("{e:#}"), "agent: the desired state could not be saved; applying anyway");
    }
    let mut out = Outcome { id: state.id.clone(), ..Default::default() };
    for d in &state.deployments {
        let files = dir.join("files").join(&d.name);
        let prepared = place_files(dir, &files, &d.files).await.and_then(|()| {
            let mut own = Vec::new();
            for (role, section) in fleet::role_sections(&d.config).map_err(anyhow::Error::msg)? {
                if let Some((other, _)) = out.roles.get(&role) {
                    anyhow::bail!("role `{role}` is also set by deployment {other}");
                }
                own.push((role, fleet::with_files_dir(&section, &files.display().to_string())));
            }
            Ok(own)
        });
        match prepared {
            Ok(own) => {
                for (role, section) in own {
                    out.roles.insert(role, (d.name.clone(), section));
                }
            }
            Err(e) => {
                out.failed.insert(d.name.clone(), format!("{e:#}"));
                for (role, (dep, section)) in &previous.roles {
                    if *dep == d.name {
                        out.roles.entry(role.clone()).or_insert_with(|| (dep.clone(), section.clone()));
                    }
                }
            }
        }
    }
    let sections = out.roles.iter().map(|(role, (_, section))| (role.clone(), section.clone())).collect();
    match managed.apply(sections, ready_within).await {
        Ok(results) => {
            for (role, result) in results {
                if let (Err(e), Some((dep, _))) = (result, out.roles.get(&role)) {
                    let entry = out.failed.entry(dep.clone()).or_default();
                    if !entry.is_empty() {
                        entry.push_str("; ");
                    }
                    entry.push_str(&format!("{role}: {e}"));
                }
            }
        }
        Err(e) => {
            for d in &state.deployments {
                out.failed.entry(d.name.clone()).or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    remove_stale_files(dir, state).await;
    tracing::info!(desired = %out.id, failed = out.failed.len(), "agent: desired state applied");
    metrics::gauge!("edgebox_agent_deployments_failed").set(out.failed.len() as f64);
    out
}

/// Failures of managed roles that stopped after they were applied.
pub fn runtime_failures(outcome: &Outcome, managed: &ManagedRoles) -> BTreeMap<String, String> {
    let mut failed = outcome.failed.clone();
    for (role, (dep, _)) in &outcome.roles {
        if let Some(s) = managed.status(role)
            && s.state == "failed"
        {
            failed.entry(dep.clone()).or_insert_with(|| format!("{role}: {}", s.error.unwrap_or_default()));
        }
    }
    failed
}

/// Writes a deployment's files into a fresh directory and swaps it in.
async fn place_files(dir: &Path, target: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut sources = Vec::new();
    for (path, digest) in files {
        fleet::check_file_path(path).map_err(anyhow::Error::msg)?;
        sources.push((path.clone(), blob_path(dir, digest)?, digest.clone()));
    }
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("files").to_owned();
        let parent = target.parent().unwrap_or(Path::new("."));
        let staging = parent.join(format!(".{name}.new"));
        let old = parent.join(format!(".{name}.old"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
        for (path, blob, digest) in sources {
            let to = staging.join(&path);
            std::fs::create_dir_all(to.parent().unwrap_or(&staging))?;
            std::fs::copy(&blob, &to).with_context(|| format!("file {path}: blob {digest} is not cached here"))?;
        }
        let _ = std::fs::remove_dir_all(&old);
        if target.exists() {
            std::fs::rename(&target, &old).with_context(|| format!("moving {} aside", target.display()))?;
        }
        std::fs::rename(&staging, &target).with_context(|| format!("placing {}", target.display()))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    })
    .await?
}

/// Removes the file directories of deployments no longer desired.
async fn remove_stale_files(dir: &Path, state: &DesiredState) {
    let root = dir.join("files");
    let keep: Vec<String> = state.deployments.iter().map(|d| d.name.clone()).collect();
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !keep.contains(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    })
    .await;
}
