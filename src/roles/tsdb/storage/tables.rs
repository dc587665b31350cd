//! The tsdb's tables in the shared store (layout in docs/tsdb-format.md).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::core::store::Migration;

/// Series id → canonical label encoding.
pub const SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.series");
/// Write-ahead log: sequence → record of (series, t, value) samples (wal.rs).
pub const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.wal");
/// Open head chunk per series as of the last checkpoint (chunk.rs value).
pub const HEADS: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.heads");
/// Sealed chunks: (series, first t) → chunk.rs value.
pub const CHUNKS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("tsdb.chunks");
/// Store-and-forward queue to the upstream: sequence → snappy remote_write body.
pub const FORWARD: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.forward");
/// Counters: `next_series_id`, `forward_next_seq`, `checkpoint_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("tsdb.meta");

/// Tables of the first layout, moved by the third migration.
const SERIES_BY_KEY_V1: TableDefinition<&[u8], u64> = TableDefinition::new("tsdb.series_by_key");
const SAMPLES_V1: TableDefinition<(u64, i64), f64> = TableDefinition::new("tsdb.samples");

pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "create tsdb tables", apply: create },
    Migration { name: "create the forwarding queue", apply: create_forward },
    Migration { name: "write-ahead log and heads replace raw sample rows", apply: to_wal },
];

fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SERIES)?;
    txn.open_table(SERIES_BY_KEY_V1)?;
    txn.open_table(SAMPLES_V1)?;
    txn.open_table(CHUNKS)?;
    txn.open_table(META)?.insert("next_series_id", 1)?;
    Ok(())
}

fn create_forward(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(FORWARD)?;
    txn.open_table(META)?.insert("forward_next_seq", 1)?;
    Ok(())
}

/// Raw sample rows become the first log record (replayed into the heads at
/// the next start); chunk values gain the encoding byte (0: Gorilla); the
/// key → id table goes, the in-memory index already answers that.
fn to_wal(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut entries = Vec::new();
    for row in txn.open_table(SAMPLES_V1)?.iter()? {
        let (k, v) = row?;
        let (id, t) = k.value();
        entries.push(super::wal::Entry { id, t, v: v.value() });
    }
    let mut wal = txn.open_table(WAL)?;
    if !entries.is_empty() {
        wal.insert(1, super::wal::encode(&entries).as_slice())?;
    }
    txn.open_table(HEADS)?;
    txn.delete_table(SAMPLES_V1)?;
    txn.delete_table(SERIES_BY_KEY_V1)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    let mut old = Vec::new();
    for row in chunks.iter()? {
        let (k, v) = row?;
        old.push((k.value(), v.value().to_vec()));
    }
    for (key, v) in old {
        if v.len() < 8 {
            continue;
        }
        let mut tagged = v[..8].to_vec();
        tagged.push(0);
        tagged.extend_from_slice(&v[8..]);
        chunks.insert(key, tagged.as_slice())?;
    }
    txn.open_table(META)?.insert("checkpoint_seq", 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::{CORE_SCHEMA, Durability, SchemaOwner, Store, StoreOptions};

    #[test]
    fn a_first_layout_store_moves_to_the_log_and_tagged_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let old = [CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: &MIGRATIONS[..2] }];
        let store = Store::open(&path, &old, &StoreOptions::default()).unwrap();
        let mut enc = crate::roles::tsdb::gorilla::Encoder::new();
        enc.append(10, 1.5).unwrap();
        enc.append(20, 2.5).unwrap();
        let mut v1 = 20i64.to_be_bytes().to_vec();
        v1.extend_from_slice(&enc.bytes());
        store
            .write_blocking(Durability::Immediate, move |txn| {
                txn.open_table(SAMPLES_V1)?.insert((1, 30), 3.5)?;
                txn.open_table(CHUNKS)?.insert((1, 10), v1.as_slice())?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let new = [CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: MIGRATIONS }];
        let store = Store::open(&path, &new, &StoreOptions::default()).unwrap();
        store
            .read_blocking(|txn| {
                let chunk = txn.open_table(CHUNKS)?.get((1, 10))?.unwrap().value().to_vec();
                assert_eq!(super::super::chunk::decode(&chunk).unwrap(), vec![(10, 1.5), (20, 2.5)]);
                let rec = txn.open_table(WAL)?.get(1)?.unwrap().value().to_vec();
                assert_eq!(
                    super::super::wal::decode(&rec).unwrap(),
                    vec![super::super::wal::Entry { id: 1, t: 30, v: 3.5 }]
                );
                assert!(txn.open_table(SAMPLES_V1).is_err(), "the raw table is gone");
                Ok(())
            })
            .unwrap();
    }
}
