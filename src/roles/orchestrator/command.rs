//! Every change to the orchestrator's stored state is one `Command`: a
//! registration, a removal, a deployment put, delete, resume or rollout
//! step, a blob stored or deleted, a join token made, spent or revoked, the
//! node CA. `apply`
//! runs a command inside one store write transaction and decides its
//! outcome from what is stored (never from memory or the clock: `now`
//! travels in the command), so every Raft member that applies the same log
//! ends with the same store (replica/). `Memory::after` then brings the
//! in-memory views (registry, rollouts) along, on every member.
//!
//! A Raft member wraps what it commits in `Once` with a request id: when
//! an answer is lost (the leader died after committing, a forwarded call
//! timed out) the member retries under the same id, and the command
//! applies once; the retry answers the first outcome, kept in
//! `orchestrator.requests` for `REMEMBER_MS`.

use std::sync::Arc;

use anyhow::Context;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::deployment::{Deployment, Spec};
use super::node::Registration;
use super::registry::{Registered, Registry};
use super::rollout::{Put, Rollouts};
use super::{blobs, ca, join, registry, rollout};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Register {
        reg: Registration,
        now_ms: u64,
    },
    Remove {
        id: String,
    },
    PutDeployment {
        name: String,
        spec: Box<Spec>,
        now_ms: u64,
    },
    DeleteDeployment {
        name: String,
    },
    Resume {
        name: String,
        accepted_failures: u64,
    },
    /// A rollout step planned from `base`; lands only if that is still the
    /// stored record.
    Step {
        base: Box<Deployment>,
        record: Box<Deployment>,
        assign: Vec<String>,
    },
    PutBlob {
        digest: String,
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
    },
    DeleteBlob {
        digest: String,
    },
    CreateToken {
        stored: join::Stored,
    },
    RedeemToken(join::Redeem),
    RevokeToken {
        id: String,
    },
    InitCa {
        offered: ca::Stored,
    },
    /// `cmd` under a request id (`request_id`) its retries share.
    Once {
        request: String,
        at_ms: u64,
        cmd: Box<Command>,
    },
}

/// Request id -> the JSON of the outcome its first apply had. Ids start
/// with their time in hex, so the oldest are a range to prune.
pub(super) const REQUESTS: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.requests");

/// How long a request's outcome is kept for retries: far longer than a
/// member retries (replica's COMMIT_WAIT), with room for members' clocks
/// to differ.
const REMEMBER_MS: u64 = 300_000;

/// A fresh request id made at `now_ms`: the time, then 64 random bits.
pub fn request_id(now_ms: u64) -> String {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 8];
    // Without randomness the clock and the address of a local still make
    // ids unique enough within one member; never fail a write over it.
    if ring::rand::SystemRandom::new().fill(&mut raw).is_err() {
        raw = ((&raw as *const _ as u64) ^ now_ms.rotate_left(17)).to_le_bytes();
    }
    format!("{now_ms:016x}-{:016x}", u64::from_le_bytes(raw))
}

impl Command {
    /// The command's name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::Remove { .. } => "remove",
            Command::PutDeployment { .. } => "put_deployment",
            Command::DeleteDeployment { .. } => "delete_deployment",
            Command::Resume { .. } => "resume",
            Command::Step { .. } => "step",
            Command::PutBlob { .. } => "put_blob",
            Command::DeleteBlob { .. } => "delete_blob",
            Command::CreateToken { .. } => "create_token",
            Command::RedeemToken(_) => "redeem_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::InitCa { .. } => "init_ca",
            Command::Once { cmd, .. } => cmd.kind(),
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    Registered(Result<Registered, String>),
    /// The new revision; None when there was no such node.
    Removed(Option<u64>),
    Put(Result<Put, String>),
    Deleted(bool),
    Resumed(Option<Deployment>),
    Stepped(bool),
    Done,
    Redeemed(Result<String, join::Refused>),
    Revoked(bool),
    /// Removed or not there; or the deployments that still name it.
    BlobDeleted(Result<bool, Vec<String>>),
    Ca(ca::Stored),
    /// Not a command of ours (a Raft membership change or blank entry).
    Nothing,
    /// A `Once` request applied before: its first outcome (memory
    /// already followed it). The state machine unwraps it.
    Again(Box<Outcome>),
}

impl Outcome {
    /// The outcome a caller sees: a repeat answers as the first did.
    pub fn first(self) -> Outcome {
        match self {
            Outcome::Again(o) => *o,
            o => o,
        }
    }
}

/// Applies `cmd` inside `txn`.
pub fn apply(txn: &WriteTransaction, cmd: &Command) -> anyhow::Result<Outcome> {
    Ok(match cmd {
        Command::Register { reg, now_ms } => Outcome::Registered(registry::apply_register(txn, reg, *now_ms)?),
        Command::Remove { id } => {
            let removed = registry::apply_remove(txn, id)?;
            if removed.is_some() {
                rollout::apply_forget(txn, id)?;
            }
            Outcome::Removed(removed)
        }
        Command::PutDeployment { name, spec, now_ms } => Outcome::Put(rollout::apply_put(txn, name, spec, *now_ms)?),
        Command::DeleteDeployment { name } => Outcome::Deleted(rollout::apply_delete(txn, name)?),
        Command::Resume { name, accepted_failures } => {
            Outcome::Resumed(rollout::apply_resume(txn, name, *accepted_failures)?)
        }
        Command::Step { base, record, assign } => Outcome::Stepped(rollout::apply_step(txn, base, record, assign)?),
        Command::PutBlob { digest, bytes } => {
            blobs::apply_put(txn, digest, bytes)?;
            Outcome::Done
        }
        Command::DeleteBlob { digest } => Outcome::BlobDeleted(blobs::apply_delete(txn, digest)?),
        Command::CreateToken { stored } => {
            join::apply_create(txn, stored)?;
            Outcome::Done
        }
        Command::RedeemToken(r) => Outcome::Redeemed(join::apply_redeem(txn, r)?),
        Command::RevokeToken { id } => Outcome::Revoked(join::apply_revoke(txn, id)?),
        Command::InitCa { offered } => Outcome::Ca(ca::apply_init(txn, offered)?),
        Command::Once { request, at_ms, cmd } => apply_once(txn, request, *at_ms, cmd)?,
    })
}

fn apply_once(txn: &WriteTransaction, request: &str, at_ms: u64, cmd: &Command) -> anyhow::Result<Outcome> {
    if let Some(v) = txn.open_table(REQUESTS)?.get(request)? {
        let first = serde_json::from_str(v.value())
            .with_context(|| format!("store table orchestrator.requests: key {request}"))?;
        return Ok(Outcome::Again(Box::new(first)));
    }
    let outcome = apply(txn, cmd)?;
    let mut t = txn.open_table(REQUESTS)?;
    t.insert(request, serde_json::to_string(&outcome)?.as_str())?;
    let cutoff = format!("{:016x}", at_ms.saturating_sub(REMEMBER_MS));
    let old =
        t.range(..cutoff.as_str())?.map(|r| r.map(|(k, _)| k.value().to_owned())).collect::<Result<Vec<_>, _>>()?;
    for k in old {
        t.remove(k.as_str())?;
    }
    Ok(outcome)
}

/// The in-memory views a committed command changes.
#[derive(Clone)]
pub struct Memory {
    pub registry: Arc<Registry>,
    pub rollouts: Arc<Rollouts>,
}

impl Memory {
    /// Brings memory along with a command `apply` committed.
    pub fn after(&self, cmd: &Command, outcome: &Outcome) {
        match (cmd, outcome) {
            (Command::Register { .. }, Outcome::Registered(Ok(r))) => {
                self.registry.after_register(r);
                if !matches!(r, Registered::Unchanged(_)) {
                    self.rollouts.touch();
                }
            }
            (Command::Remove { id }, Outcome::Removed(Some(revision))) => {
                self.registry.after_remove(id, *revision);
                self.rollouts.after_forget(id);
            }
            (Command::PutDeployment { .. }, Outcome::Put(Ok(p))) => self.rollouts.after_put(p),
            (Command::DeleteDeployment { name }, Outcome::Deleted(true)) => self.rollouts.after_delete(name),
            (Command::Resume { .. }, Outcome::Resumed(Some(d))) => self.rollouts.after_record(d, &[]),
            (Command::Step { record, assign, .. }, Outcome::Stepped(true)) => {
                self.rollouts.after_record(record, assign)
            }
            (Command::Once { .. }, Outcome::Again(_)) => {}
            (Command::Once { cmd, .. }, o) => self.after(cmd, o),
            _ => {}
        }
    }

    /// Reloads every view from the store (a Raft snapshot replaced it).
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.registry.reload().await?;
        self.rollouts.reload().await
    }
}

/// Blob bytes as base64 in the (JSON) Raft log, not as a list of numbers.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(request: &str, at_ms: u64) -> Command {
        let reg = serde_json::from_str(r#"{"id": "n1", "arch": "arm64"}"#).unwrap();
        Command::Once { request: request.into(), at_ms, cmd: Box::new(Command::Register { reg, now_ms: at_ms }) }
    }

    fn kind(o: &Outcome) -> String {
        match o {
            Outcome::Registered(Ok(Registered::Created(_))) => "created".into(),
            Outcome::Registered(Ok(Registered::Unchanged(_))) => "unchanged".into(),
            Outcome::Again(o) => format!("again {}", kind(o)),
            o => format!("{o:?}"),
        }
    }

    #[test]
    fn a_retried_request_applies_once_and_answers_its_first_outcome_until_forgotten() {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        let t0 = 1_800_000_000_000;
        let (a, b) = (request_id(t0), request_id(t0));
        assert_ne!(a, b, "ids are random past the time");
        assert_eq!(kind(&apply(&txn, &register(&a, t0)).unwrap()), "created");
        assert_eq!(kind(&apply(&txn, &register(&a, t0)).unwrap()), "again created", "a retry");
        assert_eq!(kind(&apply(&txn, &register(&a, t0)).unwrap().first()), "created");
        assert_eq!(kind(&apply(&txn, &register(&b, t0)).unwrap()), "unchanged", "another request");
        let later = t0 + REMEMBER_MS + 1;
        apply(&txn, &register(&request_id(later), later)).unwrap();
        assert_eq!(kind(&apply(&txn, &register(&a, t0)).unwrap()), "unchanged", "forgotten after REMEMBER_MS");
    }
}
