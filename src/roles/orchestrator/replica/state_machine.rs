//! The Raft state machine is the orchestrator's own tables in the shared
//! store: each committed entry's command is applied by command.rs inside
//! one store transaction that also records the last applied log id and
//! membership (table `orchestrator.raft`), so a crash never leaves them
//! apart. A snapshot is every orchestrator table as one JSON document,
//! kept as `<raft_dir>/snapshot.json` and sent whole to members too far
//! behind for the log.

use std::io::Cursor;
use std::path::PathBuf;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::super::command::{self, Memory, Outcome};
use super::super::{blobs, ca, join, registry, rollout};
use super::{Entry, Node, NodeId, TypeConfig};
use crate::core::store::{Durability, Store};

const RAFT: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.raft");

fn io_err(e: anyhow::Error) -> AnyError {
    AnyError::error(format!("{e:#}"))
}

#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    memory: Memory,
    snapshot_file: PathBuf,
}

/// What the state machine has applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
}

/// Every orchestrator table, as a snapshot carries them.
#[derive(Default, Serialize, Deserialize)]
struct Tables {
    applied: Applied,
    nodes: Vec<(String, String)>,
    meta: Vec<(String, u64)>,
    deployments: Vec<(String, String)>,
    assignments: Vec<((String, String), u64)>,
    /// Blob bytes base64.
    blobs: Vec<(String, String)>,
    tokens: Vec<(String, String)>,
    ca: Vec<(String, String)>,
    /// Requests' first outcomes (command.rs).
    #[serde(default)]
    requests: Vec<(String, String)>,
}

/// A snapshot as kept on disk: its meta and its data.
#[derive(Serialize, Deserialize)]
struct Kept {
    meta: SnapshotMeta<NodeId, Node>,
    data: String,
}

fn read_applied(txn: &ReadTransaction) -> anyhow::Result<Applied> {
    let t = match txn.open_table(RAFT) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Applied::default()),
        Err(e) => return Err(e.into()),
    };
    match t.get("applied")? {
        Some(v) => serde_json::from_str(v.value())
            .map_err(|e| anyhow::anyhow!("store table orchestrator.raft: key applied: {e}")),
        None => Ok(Applied::default()),
    }
}

fn write_applied(txn: &WriteTransaction, a: &Applied) -> anyhow::Result<()> {
    txn.open_table(RAFT)?.insert("applied", serde_json::to_string(a)?.as_str())?;
    Ok(())
}

/// The rows of a string-keyed table.
fn rows<V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<&str, V>,
    value: impl Fn(V::SelfType<'_>) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let t = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for item in t.iter()? {
        let (k, v) = item?;
        out.push((k.value().to_owned(), value(v.value())?));
    }
    Ok(out)
}

fn strings(v: Vec<(String, serde_json::Value)>) -> Vec<(String, String)> {
    v.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect()
}

fn dump(txn: &ReadTransaction) -> anyhow::Result<Tables> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = |s: &str| Ok(serde_json::Value::String(s.to_owned()));
    let mut assignments = Vec::new();
    match txn.open_table(rollout::ASSIGNMENTS) {
        Ok(t) => {
            for item in t.iter()? {
                let (k, v) = item?;
                let (d, n) = k.value();
                assignments.push(((d.to_owned(), n.to_owned()), v.value()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Tables {
        applied: read_applied(txn)?,
        nodes: strings(rows(txn, registry::NODES, text)?),
        meta: rows(txn, registry::META, |v| Ok(v.into()))?
            .into_iter()
            .map(|(k, v)| (k, v.as_u64().unwrap_or_default()))
            .collect(),
        deployments: strings(rows(txn, rollout::DEPLOYMENTS, text)?),
        assignments,
        blobs: strings(rows(txn, blobs::BLOBS, |v| Ok(b64.encode(v).into()))?),
        tokens: strings(rows(txn, join::TOKENS, text)?),
        ca: strings(rows(txn, ca::CA, text)?),
        requests: strings(rows(txn, command::REQUESTS, text)?),
    })
}

/// Replaces every orchestrator table with the snapshot's.
fn restore(txn: &WriteTransaction, t: &Tables) -> anyhow::Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    fn refill(
        txn: &WriteTransaction,
        def: TableDefinition<&str, &str>,
        rows: &[(String, String)],
    ) -> anyhow::Result<()> {
        txn.delete_table(def)?;
        let mut table = txn.open_table(def)?;
        for (k, v) in rows {
            table.insert(k.as_str(), v.as_str())?;
        }
        Ok(())
    }
    refill(txn, registry::NODES, &t.nodes)?;
    refill(txn, rollout::DEPLOYMENTS, &t.deployments)?;
    refill(txn, join::TOKENS, &t.tokens)?;
    refill(txn, ca::CA, &t.ca)?;
    refill(txn, command::REQUESTS, &t.requests)?;
    txn.delete_table(registry::META)?;
    {
        let mut m = txn.open_table(registry::META)?;
        for (k, v) in &t.meta {
            m.insert(k.as_str(), *v)?;
        }
    }
    txn.delete_table(rollout::ASSIGNMENTS)?;
    {
        let mut a = txn.open_table(rollout::ASSIGNMENTS)?;
        for ((d, n), v) in &t.assignments {
            a.insert((d.as_str(), n.as_str()), *v)?;
        }
    }
    txn.delete_table(blobs::BLOBS)?;
    {
        let mut b = txn.open_table(blobs::BLOBS)?;
        for (k, v) in &t.blobs {
            let bytes = b64.decode(v).map_err(|e| anyhow::anyhow!("snapshot: blob {k}: {e}"))?;
            b.insert(k.as_str(), bytes.as_slice())?;
        }
    }
    write_applied(txn, &t.applied)
}

impl StateMachine {
    pub fn new(store: Store, memory: Memory, snapshot_file: PathBuf) -> StateMachine {
        StateMachine { store, memory, snapshot_file }
    }

    fn keep(&self, kept: &Kept) -> anyhow::Result<()> {
        let tmp = self.snapshot_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(kept)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.snapshot_file)
            .map_err(|e| anyhow::anyhow!("placing {}: {e}", self.snapshot_file.display()))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let started = std::time::Instant::now();
        let tables = self.store.read(dump).await.map_err(|e| StorageIOError::read_state_machine(io_err(e)))?;
        let data = serde_json::to_string(&tables).map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let last = tables.applied.last;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: tables.applied.membership.clone(),
            snapshot_id: format!("{}-{}", last.map_or(0, |l| l.leader_id.term), last.map_or(0, |l| l.index)),
        };
        let kept = Kept { meta: meta.clone(), data };
        self.keep(&kept).map_err(|e| StorageIOError::write_snapshot(None, io_err(e)))?;
        tracing::info!(
            index = last.map_or(0, |l| l.index),
            bytes = kept.data.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "orchestrator: raft snapshot built"
        );
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(kept.data.into_bytes())) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let a = self.store.read(read_applied).await.map_err(|e| StorageIOError::read_state_machine(io_err(e)))?;
        Ok((a.last, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let batch = entries.clone();
        let outcomes = self
            .store
            .write(Durability::Immediate, move |txn| {
                let mut applied = {
                    let t = txn.open_table(RAFT)?;
                    match t.get("applied")? {
                        Some(v) => serde_json::from_str::<Applied>(v.value())?,
                        None => Applied::default(),
                    }
                };
                let mut out = Vec::with_capacity(batch.len());
                for e in &batch {
                    out.push(match &e.payload {
                        EntryPayload::Normal(cmd) => command::apply(txn, cmd)?,
                        EntryPayload::Membership(m) => {
                            applied.membership = StoredMembership::new(Some(e.log_id), m.clone());
                            Outcome::Nothing
                        }
                        EntryPayload::Blank => Outcome::Nothing,
                    });
                    applied.last = Some(e.log_id);
                }
                write_applied(txn, &applied)?;
                Ok(out)
            })
            .await
            .map_err(|e| StorageIOError::write_state_machine(io_err(e)))?;
        for (e, o) in entries.iter().zip(&outcomes) {
            if let EntryPayload::Normal(cmd) = &e.payload {
                self.memory.after(cmd, o);
                let again = if matches!(o, Outcome::Again(_)) { "true" } else { "false" };
                metrics::counter!("edgebox_orchestrator_raft_applied_total", "command" => cmd.kind(), "repeat" => again)
                    .increment(1);
            }
        }
        Ok(outcomes.into_iter().map(Outcome::first).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut tables: Tables = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        tables.applied = Applied { last: meta.last_log_id, membership: meta.last_membership.clone() };
        let tables = std::sync::Arc::new(tables);
        let t = tables.clone();
        self.store
            .write(Durability::Immediate, move |txn| restore(txn, &t))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)))?;
        self.memory.reload().await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)))?;
        let kept = Kept { meta: meta.clone(), data: String::from_utf8_lossy(&data).into_owned() };
        self.keep(&kept).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)))?;
        tracing::info!(index = meta.last_log_id.map_or(0, |l| l.index), "orchestrator: raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let bytes = match std::fs::read(&self.snapshot_file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, AnyError::new(&e)).into()),
        };
        let kept: Kept =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(Some(Snapshot { meta: kept.meta, snapshot: Box::new(Cursor::new(kept.data.into_bytes())) }))
    }
}
