//! The tsdb's tables in the shared store (layout in docs/tsdb-format.md).

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::blocks::Codec;
use crate::core::store::Migration;

/// First series id of a row → snappy row of series id → canonical label
/// encoding (blocks.rs).
pub const SERIES_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.series_blocks");
/// Write-ahead log: sequence → record of (series, t, value) samples (wal.rs).
pub const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.wal");
/// First series id of a row → row of series id → open head chunk as of the
/// last checkpoint (blocks.rs rows of chunk.rs values).
pub const HEAD_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.head_blocks");
/// How the rows of `SERIES_BLOCKS` and `HEAD_BLOCKS` are stored. Head rows
/// compress too: their chunks' headers (newest and first timestamp, count,
/// interval) repeat from series to series, a fifth of a row; they are
/// rewritten at every checkpoint, so at deflate's fastest level (label
/// sets, written once, take a third more space at it).
pub const SERIES_CODEC: Codec = Codec::Deflate;
pub const HEAD_CODEC: Codec = Codec::FastDeflate;
/// Sealed chunks: (series, first t of the row) → row of chunk.rs values
/// (chunk_rows.rs).
pub use super::chunk_rows::CHUNK_ROWS;
/// Downsampled buckets: (resolution, series, row start) → rollup.rs row.
pub const ROLLUPS: TableDefinition<(u8, u64, i64), &[u8]> = TableDefinition::new("tsdb.rollups");
/// Store-and-forward queue to the upstream: sequence → snappy remote_write body.
pub const FORWARD: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.forward");
/// Counters: `next_series_id`, `forward_next_seq`, `checkpoint_seq`,
/// `rollup_watermark`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("tsdb.meta");

/// Tables of earlier layouts, moved by the migrations.
const SERIES_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.series");
const HEADS_V3: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.heads");
const SERIES_BY_KEY_V1: TableDefinition<&[u8], u64> = TableDefinition::new("tsdb.series_by_key");
const SAMPLES_V1: TableDefinition<(u64, i64), f64> = TableDefinition::new("tsdb.samples");
/// One chunk per entry: (series, first t) → chunk.rs value.
const CHUNKS_V8: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("tsdb.chunks");

pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "create tsdb tables", apply: create },
    Migration { name: "create the forwarding queue", apply: create_forward },
    Migration { name: "write-ahead log and heads replace raw sample rows", apply: to_wal },
    Migration { name: "series and heads in block rows", apply: to_blocks },
    Migration { name: "create the rollup table", apply: create_rollups },
    Migration { name: "rows of a page keyed by their first series", apply: repack },
    Migration { name: "deflated series rows; rows fill their page", apply: to_deflate },
    Migration { name: "deflated head rows", apply: deflate_heads },
    Migration { name: "sealed chunks in per-series rows of a page", apply: to_chunk_rows },
];

fn create_rollups(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(ROLLUPS)?;
    Ok(())
}

fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SERIES_V1)?;
    txn.open_table(SERIES_BY_KEY_V1)?;
    txn.open_table(SAMPLES_V1)?;
    txn.open_table(CHUNKS_V8)?;
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
    txn.open_table(HEADS_V3)?;
    txn.delete_table(SAMPLES_V1)?;
    txn.delete_table(SERIES_BY_KEY_V1)?;
    let mut chunks = txn.open_table(CHUNKS_V8)?;
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

/// Per-series rows of `tsdb.series` and `tsdb.heads` become packed rows.
fn to_blocks(txn: &WriteTransaction) -> Result<(), redb::Error> {
    for (old, new, codec) in [(SERIES_V1, SERIES_BLOCKS, Codec::Snappy), (HEADS_V3, HEAD_BLOCKS, Codec::Plain)] {
        let mut entries = std::collections::BTreeMap::new();
        for row in txn.open_table(old)?.iter()? {
            let (id, v) = row?;
            entries.insert(id.value(), v.value().to_vec());
        }
        write_packed(txn, new, entries, codec)?;
        txn.delete_table(old)?;
    }
    Ok(())
}

/// Rows keyed by block number become rows of at most a page, keyed by
/// their first series id.
fn repack(txn: &WriteTransaction) -> Result<(), redb::Error> {
    recode(txn, SERIES_BLOCKS, Codec::Snappy, Codec::Snappy)?;
    recode(txn, HEAD_BLOCKS, Codec::Plain, Codec::Plain)
}

/// Series rows go from snappy to deflate, packed by compressed size, and
/// head rows are re-packed to fill their page.
fn to_deflate(txn: &WriteTransaction) -> Result<(), redb::Error> {
    recode(txn, SERIES_BLOCKS, Codec::Snappy, Codec::Deflate)?;
    recode(txn, HEAD_BLOCKS, Codec::Plain, Codec::Plain)
}

/// Head rows go from plain to deflate.
fn deflate_heads(txn: &WriteTransaction) -> Result<(), redb::Error> {
    recode(txn, HEAD_BLOCKS, Codec::Plain, HEAD_CODEC)
}

/// Chunks move from one entry each into their series' rows.
fn to_chunk_rows(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut by_series: std::collections::BTreeMap<u64, super::chunk_rows::Changes> = Default::default();
    for row in txn.open_table(CHUNKS_V8)?.iter()? {
        let (k, v) = row?;
        let (id, first) = k.value();
        by_series.entry(id).or_default().insert(first, Some(v.value().to_vec()));
    }
    let mut rows = txn.open_table(CHUNK_ROWS)?;
    for (id, chunks) in by_series {
        super::chunk_rows::apply(&mut rows, id, chunks).map_err(|e| redb::Error::Corrupted(format!("{e:#}")))?;
    }
    drop(rows);
    txn.delete_table(CHUNKS_V8)?;
    Ok(())
}

/// Rewrites a table of packed rows from one codec to another.
fn recode(
    txn: &WriteTransaction,
    table: TableDefinition<u64, &[u8]>,
    from: Codec,
    to: Codec,
) -> Result<(), redb::Error> {
    let entries = super::blocks::entries(&txn.open_table(table)?, from, table.name())
        .map_err(|e| redb::Error::Corrupted(format!("{e:#}")))?;
    txn.delete_table(table)?;
    write_packed(txn, table, entries, to)
}

fn write_packed(
    txn: &WriteTransaction,
    table: TableDefinition<u64, &[u8]>,
    entries: std::collections::BTreeMap<u64, Vec<u8>>,
    codec: Codec,
) -> Result<(), redb::Error> {
    let mut t = txn.open_table(table)?;
    for (first, row) in super::blocks::pack(entries, codec).map_err(redb::Error::Corrupted)? {
        t.insert(first, row.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

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
                txn.open_table(SERIES_V1)?.insert(1, b"labels of 1".as_slice())?;
                txn.open_table(CHUNKS_V8)?.insert((1, 10), v1.as_slice())?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let new = [CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: MIGRATIONS }];
        let store = Store::open(&path, &new, &StoreOptions::default()).unwrap();
        store
            .read_blocking(|txn| {
                let chunks = super::super::chunk_rows::all(&txn.open_table(CHUNK_ROWS)?)?;
                assert_eq!(chunks.len(), 1);
                assert_eq!((chunks[0].0, chunks[0].1), (1, 10));
                assert_eq!(super::super::chunk::decode(&chunks[0].2).unwrap(), vec![(10, 1.5), (20, 2.5)]);
                assert!(txn.open_table(CHUNKS_V8).is_err(), "the per-chunk table is gone");
                let rec = txn.open_table(WAL)?.get(1)?.unwrap().value().to_vec();
                assert_eq!(
                    super::super::wal::decode(&rec).unwrap(),
                    vec![super::super::wal::Entry { id: 1, t: 30, v: 3.5 }]
                );
                assert!(txn.open_table(SAMPLES_V1).is_err(), "the raw table is gone");
                let row = txn.open_table(SERIES_BLOCKS)?.get(1)?.unwrap().value().to_vec();
                let series = super::Codec::Deflate.decode(&row).unwrap();
                assert_eq!(series.get(&1).map(Vec::as_slice), Some(b"labels of 1".as_slice()));
                assert!(txn.open_table(SERIES_V1).is_err(), "per-series rows are gone");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn plain_head_rows_become_deflated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let old = [CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: &MIGRATIONS[..7] }];
        let store = Store::open(&path, &old, &StoreOptions::default()).unwrap();
        let heads: std::collections::BTreeMap<u64, Vec<u8>> =
            (1..=300).map(|id| (id, super::super::chunk::encode(&[(10, id as f64), (20, 2.5)]))).collect();
        let plain = heads.clone();
        store
            .write_blocking(Durability::Immediate, move |txn| {
                write_packed(txn, HEAD_BLOCKS, plain.clone(), Codec::Plain)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let new = [CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: MIGRATIONS }];
        let store = Store::open(&path, &new, &StoreOptions::default()).unwrap();
        let (back, rows) = store
            .read_blocking(|txn| {
                let t = txn.open_table(HEAD_BLOCKS)?;
                let rows = t.len()?;
                Ok((super::super::blocks::entries(&t, HEAD_CODEC, "tsdb.head_blocks").unwrap(), rows))
            })
            .unwrap();
        assert_eq!(back, heads);
        assert!(rows < 3, "{rows} rows: deflate packs the 300 heads in fewer rows than plain");
    }
}
