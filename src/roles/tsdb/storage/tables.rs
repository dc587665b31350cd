//! The tsdb's tables in the shared store (layout in docs/tsdb-format.md).

use redb::{TableDefinition, WriteTransaction};

use crate::core::store::Migration;

/// Series id → canonical label encoding.
pub const SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.series");
/// Canonical label encoding → series id.
pub const SERIES_BY_KEY: TableDefinition<&[u8], u64> = TableDefinition::new("tsdb.series_by_key");
/// Raw samples not yet packed: (series, t ms) → value. Last write wins.
pub const SAMPLES: TableDefinition<(u64, i64), f64> = TableDefinition::new("tsdb.samples");
/// Packed samples: (series, first t) → [last t, i64 big endian][Gorilla chunk].
pub const CHUNKS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("tsdb.chunks");
/// Store-and-forward queue to the upstream: sequence → snappy remote_write body.
pub const FORWARD: TableDefinition<u64, &[u8]> = TableDefinition::new("tsdb.forward");
/// Counters: `next_series_id`, `forward_next_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("tsdb.meta");

pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "create tsdb tables", apply: create },
    Migration { name: "create the forwarding queue", apply: create_forward },
];

fn create_forward(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(FORWARD)?;
    txn.open_table(META)?.insert("forward_next_seq", 1)?;
    Ok(())
}

fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SERIES)?;
    txn.open_table(SERIES_BY_KEY)?;
    txn.open_table(SAMPLES)?;
    txn.open_table(CHUNKS)?;
    txn.open_table(META)?.insert("next_series_id", 1)?;
    Ok(())
}
