//! Every change to the orchestrator's stored state is one `Command`: a
//! registration, a removal, a deployment put, delete, resume or rollout
//! step, a blob, a join token made, spent or revoked, the node CA. `apply`
//! runs a command inside one store write transaction and decides its
//! outcome from what is stored (never from memory or the clock: `now`
//! travels in the command), so every Raft member that applies the same log
//! ends with the same store (replica/). `Memory::after` then brings the
//! in-memory views (registry, rollouts) along, on every member.

use std::sync::Arc;

use redb::WriteTransaction;
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
            Command::CreateToken { .. } => "create_token",
            Command::RedeemToken(_) => "redeem_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::InitCa { .. } => "init_ca",
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
    Ca(ca::Stored),
    /// Not a command of ours (a Raft membership change or blank entry).
    Nothing,
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
        Command::CreateToken { stored } => {
            join::apply_create(txn, stored)?;
            Outcome::Done
        }
        Command::RedeemToken(r) => Outcome::Redeemed(join::apply_redeem(txn, r)?),
        Command::RevokeToken { id } => Outcome::Revoked(join::apply_revoke(txn, id)?),
        Command::InitCa { offered } => Outcome::Ca(ca::apply_init(txn, offered)?),
    })
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
