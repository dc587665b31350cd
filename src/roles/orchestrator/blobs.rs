//! Content-addressed files for deployments (wasm modules, policies,
//! documents): `POST /v1/blobs` stores a body under its SHA-256 and answers
//! the digest; `GET /v1/blobs/sha256:<hex>` serves it to agents, which
//! check the digest again before using it. Kept in the store's table
//! `orchestrator.blobs` (a command, so every Raft member holds it);
//! storing the same content twice is one blob. `DELETE /v1/blobs/{digest}`
//! removes one no stored deployment names (in any version it keeps for
//! nodes not yet moved), so an operator can reclaim what is no longer used.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::core::store::Store;

pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("orchestrator.blobs");

/// Stores a blob inside a write transaction (once per content).
pub fn apply_put(txn: &WriteTransaction, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut t = txn.open_table(BLOBS)?;
    if t.get(digest)?.is_none() {
        t.insert(digest, bytes)?;
    }
    Ok(())
}

/// Removes a blob inside a write transaction: `Ok(true)` removed,
/// `Ok(false)` no such blob, `Err` the deployments that still name it.
pub fn apply_delete(txn: &WriteTransaction, digest: &str) -> anyhow::Result<Result<bool, Vec<String>>> {
    let users = super::rollout::naming(txn, digest)?;
    if !users.is_empty() {
        return Ok(Err(users));
    }
    Ok(Ok(txn.open_table(BLOBS)?.remove(digest)?.is_some()))
}

/// The blob with this digest, if stored.
pub async fn get(store: &Store, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let key = digest.to_owned();
    store
        .read(move |txn| match txn.open_table(BLOBS) {
            Ok(t) => Ok(t.get(key.as_str())?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
}
