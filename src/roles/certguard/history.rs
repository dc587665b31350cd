//! The certificate in service and the one before it, per managed
//! certificate, so `edgebox certguard rollback NAME` can put the previous
//! one back (through the same canary rollout). Leaf keys are sealed like the
//! CA's (seal.rs); `certguard.history` maps a name to this as JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::ca::Issued;
use super::seal::Sealer;
use crate::core::store::{Durability, Store};

pub const HISTORY_TABLE: TableDefinition<&str, &str> = TableDefinition::new("certguard.history");

/// One issued certificate as kept: PEM chain, sealed key (base64), leaf
/// DER (base64), times in Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    serial: String,
    chain_pem: String,
    key_sealed: String,
    leaf_der: String,
    issued_at: u64,
    not_before: u64,
    not_after: u64,
    #[serde(default)]
    generation: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub current: Option<Kept>,
    pub previous: Option<Kept>,
}

fn label(name: &str) -> String {
    format!("leaf key of {name}")
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Kept {
    pub fn seal(name: &str, issued: &Issued, sealer: &Sealer) -> anyhow::Result<Kept> {
        Ok(Kept {
            serial: issued.serial.clone(),
            chain_pem: issued.chain_pem.clone(),
            key_sealed: BASE64_STANDARD.encode(sealer.seal(&label(name), issued.key_pem.as_bytes())?),
            leaf_der: BASE64_STANDARD.encode(&issued.leaf_der),
            issued_at: secs(issued.issued_at),
            not_before: secs(issued.not_before),
            not_after: secs(issued.not_after),
            generation: issued.generation,
        })
    }

    pub fn open(&self, name: &str, sealer: &Sealer) -> anyhow::Result<Issued> {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let key = sealer.open(&label(name), &BASE64_STANDARD.decode(&self.key_sealed)?)?;
        Ok(Issued {
            chain_pem: self.chain_pem.clone(),
            key_pem: String::from_utf8(key)?,
            serial: self.serial.clone(),
            issued_at: at(self.issued_at),
            not_before: at(self.not_before),
            not_after: at(self.not_after),
            leaf_der: BASE64_STANDARD.decode(&self.leaf_der)?,
            generation: self.generation,
        })
    }
}

pub async fn load(store: &Store, name: &str) -> anyhow::Result<History> {
    let name = name.to_owned();
    store
        .read(move |txn| {
            let Ok(t) = txn.open_table(HISTORY_TABLE) else { return Ok(History::default()) };
            Ok(t.get(name.as_str())?.map(|v| serde_json::from_str(v.value())).transpose()?.unwrap_or_default())
        })
        .await
}

pub async fn save(store: &Store, name: &str, history: &History) -> anyhow::Result<()> {
    let (name, json) = (name.to_owned(), serde_json::to_string(history)?);
    store
        .write(Durability::Immediate, move |txn| {
            txn.open_table(HISTORY_TABLE)?.insert(name.as_str(), json.as_str())?;
            Ok(())
        })
        .await
}
