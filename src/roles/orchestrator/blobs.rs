//! Content-addressed files for deployments (wasm modules, policies,
//! documents): `POST /v1/blobs` stores a body under its SHA-256 and answers
//! the digest; `GET /v1/blobs/sha256:<hex>` serves it to agents, which
//! check the digest again before using it. Kept in the store's table
//! `orchestrator.blobs`; storing the same content twice is one blob.

use redb::{ReadableTable, TableDefinition};

use crate::core::store::{Durability, Store};
use crate::roles::fleet;

pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("orchestrator.blobs");

/// Stores `bytes` (fsync'd before this returns) and returns its digest.
pub async fn put(store: &Store, bytes: Vec<u8>) -> anyhow::Result<String> {
    let digest = fleet::digest_of(&bytes);
    let key = digest.clone();
    store
        .write(Durability::Immediate, move |txn| {
            let mut t = txn.open_table(BLOBS)?;
            if t.get(key.as_str())?.is_none() {
                t.insert(key.as_str(), bytes.as_slice())?;
            }
            Ok(())
        })
        .await?;
    metrics::counter!("edgebox_orchestrator_blobs_stored_total").increment(1);
    Ok(digest)
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
