//! Where the orchestrator's writes go. Alone, a command (command.rs) is
//! applied to the store at once. With `[orchestrator.raft]`, 3 or 5
//! orchestrators keep one Raft log (openraft): a command is appended to
//! the leader's log, replicated to a majority, then applied by every
//! member's state machine (state_machine.rs) to its own store, so the
//! registry, deployments, blobs, join tokens and the node CA are the same
//! everywhere and survive the loss of a minority. A follower hands its
//! writes to the leader (`/raft/write`) and answers once it applied them
//! itself, so a client reads its own writes on the member it asked. The
//! log lives in `<raft_dir>/raft.redb` (log_store.rs); members talk over
//! their own listeners (network.rs, rpc.rs).

mod log_store;
pub mod network;
pub mod rpc;
mod state_machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Cursor;

use anyhow::Context;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use serde::Deserialize;

use super::command::{self, Command, Memory, Outcome};
use super::config::RaftConfig;
use crate::core::store::{Durability, Store, StoreOptions};
use network::{Dialer, Network};

openraft::declare_raft_types!(
    /// The orchestrator's Raft types: commands in, outcomes out.
    pub TypeConfig: D = Command, R = Outcome
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Entry = openraft::Entry<TypeConfig>;

/// How long a write waits for a leader before it is refused (503).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("no Raft leader answered within {COMMIT_WAIT:?}; retry")]
    NoLeader,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

pub enum Replica {
    Single { store: Store, memory: Memory },
    Raft(Arc<Member>),
}

/// This orchestrator as one member of a Raft cluster.
pub struct Member {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub urls: BTreeMap<NodeId, String>,
    dialer: Arc<Dialer>,
    /// The connection writes are forwarded over, and the leader it reaches.
    to_leader: tokio::sync::Mutex<Option<(NodeId, crate::roles::fleet::client::Conn)>>,
}

/// What the leader answers a forwarded write.
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct Forwarded {
    pub outcome: Outcome,
    pub index: u64,
}

impl Replica {
    /// Starts this member: opens the log under `cfg.dir`, joins the
    /// members named in the config (the first start of a pristine cluster
    /// initializes it; every member may do so with the same list).
    pub async fn start(cfg: &RaftConfig, store: Store, memory: Memory, dialer: Dialer) -> anyhow::Result<Replica> {
        std::fs::create_dir_all(&cfg.dir).with_context(|| format!("orchestrator.raft.dir {}", cfg.dir.display()))?;
        let log_path = cfg.dir.join("raft.redb");
        let log_db = Store::open(&log_path, &[], &StoreOptions::default())
            .with_context(|| format!("opening the raft log {}", log_path.display()))?;
        let config = openraft::Config {
            cluster_name: "edgebox-orchestrator".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            // Entries kept behind a snapshot for members a little behind.
            max_in_snapshot_log_to_keep: cfg.snapshot_every.min(1000),
            snapshot_max_chunk_size: 4 << 20,
            ..Default::default()
        };
        let config = Arc::new(config.validate().context("orchestrator.raft: timing")?);
        let dialer = Arc::new(dialer);
        let sm = state_machine::StateMachine::new(store, memory, cfg.dir.join("snapshot.json"));
        let raft = Raft::new(cfg.id, config, Network { dialer: dialer.clone() }, log_store::LogStore::new(log_db), sm)
            .await
            .map_err(|e| anyhow::anyhow!("starting raft: {e}"))?;
        if !raft.is_initialized().await.map_err(|e| anyhow::anyhow!("raft: {e}"))? {
            let members: BTreeMap<NodeId, Node> =
                cfg.member_urls().into_iter().map(|(id, url)| (id, Node { addr: url })).collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(members = cfg.members.len(), "orchestrator: raft cluster initialized"),
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => anyhow::bail!("initializing raft: {e}"),
            }
        }
        tracing::info!(id = cfg.id, dir = %cfg.dir.display(), "orchestrator: raft member started");
        Ok(Replica::Raft(Arc::new(Member {
            id: cfg.id,
            raft,
            urls: cfg.member_urls(),
            dialer,
            to_leader: tokio::sync::Mutex::new(None),
        })))
    }

    /// Commits a command; its outcome once it is applied here.
    pub async fn commit(&self, cmd: Command) -> Result<Outcome, CommitError> {
        match self {
            Replica::Single { store, memory } => {
                // Shared with the write closure, not copied (a blob can be
                // megabytes).
                let cmd = Arc::new(cmd);
                let c = cmd.clone();
                let outcome = store.write(Durability::Immediate, move |txn| command::apply(txn, &c)).await?;
                memory.after(&cmd, &outcome);
                Ok(outcome)
            }
            Replica::Raft(m) => m.commit(cmd).await,
        }
    }

    /// Whether this orchestrator does the leader's work (failure
    /// detection, rollout steps, agents' streams): alone, always.
    pub fn is_leader(&self) -> bool {
        match self {
            Replica::Single { .. } => true,
            Replica::Raft(m) => m.is_leader(),
        }
    }

    /// The leader's URL when another member leads.
    pub fn leader_url(&self) -> Option<String> {
        match self {
            Replica::Single { .. } => None,
            Replica::Raft(m) => {
                let leader = m.raft.metrics().borrow().current_leader?;
                (leader != m.id).then(|| m.urls.get(&leader).cloned()).flatten()
            }
        }
    }

    /// The member's Raft state for /v1/raft and /v1/roles; None alone.
    pub fn status(&self) -> Option<serde_json::Value> {
        let Replica::Raft(m) = self else { return None };
        let x = m.raft.metrics().borrow().clone();
        Some(serde_json::json!({
            "id": m.id,
            "state": format!("{:?}", x.state).to_lowercase(),
            "leader": x.current_leader,
            "leader_url": x.current_leader.and_then(|l| m.urls.get(&l)),
            "term": x.current_term,
            "last_log_index": x.last_log_index,
            "last_applied": x.last_applied.map(|l| l.index),
            "members": m.urls,
        }))
    }

    /// Stops Raft (at shutdown).
    pub async fn shutdown(&self) {
        if let Replica::Raft(m) = self {
            let _ = m.raft.shutdown().await;
        }
    }
}

impl Member {
    fn is_leader(&self) -> bool {
        let x = self.raft.metrics();
        let x = x.borrow();
        x.state == ServerState::Leader && x.current_leader == Some(self.id)
    }

    async fn commit(&self, cmd: Command) -> Result<Outcome, CommitError> {
        let deadline = Instant::now() + COMMIT_WAIT;
        // Retries below (a lost answer, a leader change) resend the same
        // request, which applies once.
        let at_ms = super::registry::now_ms();
        let cmd = Command::Once { request: command::request_id(at_ms), at_ms, cmd: Box::new(cmd) };
        loop {
            match self.raft.client_write(cmd.clone()).await {
                Ok(r) => return Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let Some(leader) = f.leader_id.filter(|l| *l != self.id) {
                        match self.forward(leader, &cmd).await {
                            Ok(fw) => {
                                let wait = deadline.saturating_duration_since(Instant::now());
                                let _ = self
                                    .raft
                                    .wait(Some(wait))
                                    .applied_index_at_least(Some(fw.index), "forwarded write")
                                    .await;
                                metrics::counter!("edgebox_orchestrator_raft_forwarded_total").increment(1);
                                return Ok(fw.outcome);
                            }
                            Err(e) => {
                                tracing::debug!(leader, error = %e, "orchestrator: forwarding a write failed; retrying")
                            }
                        }
                    }
                }
                Err(RaftError::APIError(e)) => return Err(anyhow::anyhow!("raft: {e}").into()),
                Err(RaftError::Fatal(e)) => return Err(anyhow::anyhow!("raft stopped: {e}").into()),
            }
            if Instant::now() >= deadline {
                return Err(CommitError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hands a command to the leader.
    async fn forward(&self, leader: NodeId, cmd: &Command) -> Result<Forwarded, String> {
        let url = self.urls.get(&leader).ok_or_else(|| format!("leader {leader} is not a configured member"))?;
        let mut slot = self.to_leader.lock().await;
        if slot.as_ref().is_none_or(|(l, _)| *l != leader) {
            let conn = tokio::time::timeout(Duration::from_secs(3), self.dialer.open(url))
                .await
                .map_err(|_| format!("connecting to {url}: timed out"))?
                .map_err(|e| format!("{e:#}"))?;
            *slot = Some((leader, conn));
        }
        let Some((_, conn)) = slot.as_mut() else { return Err("no connection".into()) };
        let mut conn = conn.clone();
        drop(slot);
        let answer = network::call(&mut conn, "/raft/write", cmd, Duration::from_secs(10)).await;
        if answer.is_err() {
            *self.to_leader.lock().await = None;
        }
        answer
    }
}
