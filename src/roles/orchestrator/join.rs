//! Join tokens: how a new device proves it may join before it has a
//! certificate. An operator makes one (`POST /v1/join-tokens`: how long it
//! lives, how many joins it allows, optionally the one node id it is for);
//! the device presents it once to `POST /v1/join` with a certificate
//! request and gets its node certificate (ca.rs), and uses mutual TLS from
//! then on. A token is `ebj1.<id>.<secret>`; only the SHA-256 of the secret
//! is stored (table `orchestrator.join_tokens`), compared in constant time,
//! and a join spends one use in the same transaction that checks it.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::registry::now_ms;
use crate::core::store::Store;

pub(super) const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.join_tokens");
/// Longest life a token may be given.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;

/// A token as stored: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    hash: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub uses_left: u32,
    /// The only node id it may join as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What `POST /v1/join-tokens` asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
    #[serde(default = "one")]
    pub uses: u32,
    #[serde(default)]
    pub node: Option<String>,
}

fn default_ttl() -> u64 {
    3600
}

fn one() -> u32 {
    1
}

/// Why a join token was not accepted (the answer is 401 either way; the
/// reason goes to the log and metrics, not to the caller).
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum Refused {
    #[error("not a join token")]
    Malformed,
    #[error("unknown join token {0}")]
    Unknown(String),
    #[error("join token {0}: wrong secret")]
    Forged(String),
    #[error("join token {0} expired")]
    Expired(String),
    #[error("join token {id} is for node {node}")]
    OtherNode { id: String, node: String },
    /// Never part of a committed outcome: the commit itself failed.
    #[error("{0}")]
    Store(String),
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::Unknown(_) => "unknown",
            Refused::Forged(_) => "forged",
            Refused::Expired(_) => "expired",
            Refused::OtherNode { .. } => "other_node",
            Refused::Store(_) => "store",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(secret: &str) -> String {
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// Makes a token: the token (the only time its secret is seen) and the
/// record to commit (command.rs), which holds only the secret's hash.
pub fn make(req: Request) -> Result<(String, Stored), String> {
    if req.ttl_s == 0 || req.ttl_s > MAX_TTL_S {
        return Err(format!("ttl_s {}: 1 to {MAX_TTL_S}", req.ttl_s));
    }
    if req.uses == 0 || req.uses > 100_000 {
        return Err(format!("uses {}: 1 to 100000", req.uses));
    }
    if let Some(n) = &req.node {
        super::node::check_id(n).map_err(|e| format!("node: {e}"))?;
    }
    let mut raw = [0u8; 40];
    ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| "no randomness for a token".to_owned())?;
    let (id, secret) = (hex(&raw[..8]), hex(&raw[8..]));
    let now = now_ms();
    let stored = Stored {
        id: id.clone(),
        hash: hash(&secret),
        created_ms: now,
        expires_ms: now + req.ttl_s * 1000,
        uses_left: req.uses,
        node: req.node,
    };
    Ok((format!("ebj1.{id}.{secret}"), stored))
}

impl Stored {
    /// The record as shown: without the secret's hash.
    pub fn shown(&self) -> Stored {
        Stored { hash: String::new(), ..self.clone() }
    }
}

/// Stores a made token inside a write transaction.
pub fn apply_create(txn: &WriteTransaction, stored: &Stored) -> anyhow::Result<()> {
    txn.open_table(TOKENS)?.insert(stored.id.as_str(), serde_json::to_string(stored)?.as_str())?;
    Ok(())
}

/// What redeeming a token asks, once its form was checked: the token id,
/// the SHA-256 of the secret given, and the node joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redeem {
    pub id: String,
    pub hash: String,
    pub node: String,
    pub now_ms: u64,
}

/// Checks a presented token's form; what to commit to spend one use.
pub fn redeem(token: &str, node: &str) -> Result<Redeem, Refused> {
    let mut parts = token.splitn(3, '.');
    let (Some("ebj1"), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refused::Malformed);
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refused::Malformed);
    }
    Ok(Redeem { id: id.to_owned(), hash: hash(secret), node: node.to_owned(), now_ms: now_ms() })
}

/// Spends one use of a token inside a write transaction (the check and
/// the spending in one): the token id, or why it was refused.
pub fn apply_redeem(txn: &WriteTransaction, r: &Redeem) -> anyhow::Result<Result<String, Refused>> {
    let id = r.id.clone();
    let mut t = txn.open_table(TOKENS)?;
    let Some(v) = t.get(id.as_str())?.map(|v| v.value().to_owned()) else {
        return Ok(Err(Refused::Unknown(id)));
    };
    let mut s: Stored = serde_json::from_str(&v)?;
    if !crate::core::auth::constant_time_eq(s.hash.as_bytes(), r.hash.as_bytes()) {
        return Ok(Err(Refused::Forged(id)));
    }
    if r.now_ms >= s.expires_ms {
        t.remove(id.as_str())?;
        return Ok(Err(Refused::Expired(id)));
    }
    if let Some(only) = s.node.as_ref().filter(|n| **n != r.node) {
        return Ok(Err(Refused::OtherNode { id, node: only.clone() }));
    }
    s.uses_left -= 1;
    if s.uses_left == 0 {
        t.remove(id.as_str())?;
    } else {
        t.insert(id.as_str(), serde_json::to_string(&s)?.as_str())?;
    }
    Ok(Ok(id))
}

/// Revokes a token inside a write transaction; false when there was none.
pub fn apply_revoke(txn: &WriteTransaction, id: &str) -> anyhow::Result<bool> {
    Ok(txn.open_table(TOKENS)?.remove(id)?.is_some())
}

/// Every token (without secrets), expired ones dropped.
pub async fn list(store: &Store) -> anyhow::Result<Vec<Stored>> {
    store
        .read(|txn| {
            let t = match txn.open_table(TOKENS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let now = now_ms();
            let mut out = Vec::new();
            for entry in t.iter()? {
                let s: Stored = serde_json::from_str(entry?.1.value())?;
                if s.expires_ms > now {
                    out.push(Stored { hash: String::new(), ..s });
                }
            }
            Ok(out)
        })
        .await
}
