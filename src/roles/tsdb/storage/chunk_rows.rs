//! Sealed chunks, packed per series into rows of one page.
//!
//! One redb entry per chunk (about 200 bytes) left the leaves of the chunk
//! table half empty: a checkpoint adds one chunk to each of thousands of
//! series, every insert lands in a different leaf, and a leaf that
//! overflows splits in half. With the keys that came to 2.3 bytes a sample
//! on disk for 0.8 of chunk data. So a series' consecutive chunks share a
//! row keyed by (series, first timestamp of the row); a row fills one page
//! and only the series' newest row grows. Inside a row a chunk's
//! timestamps are deltas, so the row costs a chunk about 6 bytes besides
//! its encoding and payload where a key and value of its own cost 24.
//!
//! Rows of a series partition its time line: the row holding a chunk is
//! the one with the largest key at or below the chunk's first timestamp.
//! Sealed chunks of a series never overlap in time (late samples are merged
//! into the chunks they fall in), so the chunks that may hold samples at
//! or after `from` start in the row covering `from`.
//!
//! Row (docs/tsdb-format.md): `varint count`, then per chunk `zigzag (first
//! t - previous chunk's first t)` (the first chunk: against the row's key,
//! so 0), `zigzag (newest t - first t)`, `varint length` and the chunk
//! value's bytes after its 8-byte newest timestamp.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition};

use super::chunk;
use super::varint::{Reader, put_i64, put_u64};

/// (series id, first timestamp of the row's first chunk) → row.
pub const CHUNK_ROWS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("tsdb.chunk_rows");

/// Most bytes of a row: a one-entry leaf takes a 4-byte page header, a
/// 4-byte value end and the 16-byte key besides the value.
const ROW_BUDGET: usize = 4096 - 24;

/// Changes to one series' chunks by first timestamp: Some(value) to
/// store, None to remove.
pub type Changes = BTreeMap<i64, Option<Vec<u8>>>;

/// A chunk value's bytes after its newest timestamp.
const NEWEST_BYTES: usize = 8;

/// One chunk in a row, borrowed: first and newest timestamp, and the chunk
/// value's bytes after its newest timestamp.
struct Entry<'a> {
    first: i64,
    newest: i64,
    body: &'a [u8],
}

impl Entry<'_> {
    fn value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(NEWEST_BYTES + self.body.len());
        value.extend_from_slice(&self.newest.to_be_bytes());
        value.extend_from_slice(self.body);
        value
    }
}

/// The chunks of a row keyed `key`, oldest first.
fn parse_row(id: u64, key: i64, row: &[u8]) -> anyhow::Result<Vec<Entry<'_>>> {
    let bad =
        |offset: usize, what: &str| anyhow::anyhow!("tsdb.chunk_rows series {id} row {key}: byte {offset}: {what}");
    let mut r = Reader::new(row);
    let n = r.u64().map_err(|o| bad(o, "chunk count"))?;
    if n > row.len() as u64 {
        return Err(bad(0, "chunk count larger than the row"));
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut first = key;
    for _ in 0..n {
        first = first.wrapping_add(r.i64().map_err(|o| bad(o, "first timestamp"))?);
        let newest = first.wrapping_add(r.i64().map_err(|o| bad(o, "newest timestamp"))?);
        let len = r.u64().map_err(|o| bad(o, "chunk length"))?;
        let body = r.take(usize::try_from(len).unwrap_or(usize::MAX)).map_err(|o| bad(o, "chunk bytes"))?;
        out.push(Entry { first, newest, body });
    }
    if !r.is_empty() {
        return Err(bad(r.offset(), "trailing bytes"));
    }
    Ok(out)
}

/// The chunks of a row keyed `key`, oldest first, as (first t, chunk value).
pub fn decode_row(id: u64, key: i64, row: &[u8]) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    Ok(parse_row(id, key, row)?.iter().map(|e| (e.first, e.value())).collect())
}

/// The (first, newest) timestamps of a row's chunks, oldest first.
pub fn spans(id: u64, key: i64, row: &[u8]) -> anyhow::Result<Vec<(i64, i64)>> {
    Ok(parse_row(id, key, row)?.iter().map(|e| (e.first, e.newest)).collect())
}

/// One chunk's bytes in a row, after the previous chunk's first t.
fn encode_entry(out: &mut Vec<u8>, previous: i64, first: i64, value: &[u8]) -> anyhow::Result<()> {
    let newest = chunk::last_t(value)?;
    put_i64(out, first.wrapping_sub(previous));
    put_i64(out, newest.wrapping_sub(first));
    let body = &value[NEWEST_BYTES..];
    put_u64(out, body.len() as u64);
    out.extend_from_slice(body);
    Ok(())
}

/// Splits a series' chunks (oldest first) into rows of at most
/// `ROW_BUDGET` bytes (a chunk larger than that gets a row of its own),
/// each with its key.
fn pack(chunks: &[(i64, Vec<u8>)]) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    let mut rows = Vec::new();
    let mut rest = chunks;
    while let Some((key, _)) = rest.first() {
        let mut body = Vec::new();
        let mut previous = *key;
        let mut n = 0;
        for (first, value) in rest {
            let mut entry = Vec::new();
            encode_entry(&mut entry, previous, *first, value)?;
            // Room for the count's varint (a row holds under 2^14 chunks).
            if n > 0 && body.len() + entry.len() + 2 > ROW_BUDGET {
                break;
            }
            body.extend_from_slice(&entry);
            previous = *first;
            n += 1;
        }
        let mut row = Vec::with_capacity(body.len() + 2);
        put_u64(&mut row, n as u64);
        row.extend_from_slice(&body);
        rows.push((*key, row));
        rest = &rest[n..];
    }
    Ok(rows)
}

/// The key of the row covering `t` in series `id`: the largest at or
/// below it, else the series' first.
fn covering(table: &impl ReadableTable<(u64, i64), &'static [u8]>, id: u64, t: i64) -> anyhow::Result<Option<i64>> {
    if let Some(row) = table.range((id, i64::MIN)..=(id, t))?.next_back() {
        return Ok(Some(row?.0.value().1));
    }
    Ok(table.range((id, i64::MIN)..=(id, i64::MAX))?.next().transpose()?.map(|(k, _)| k.value().1))
}

/// The chunks of series `id` that may hold samples in `[from, to]`, oldest
/// first, as (first t, value).
pub fn overlapping(
    table: &impl ReadableTable<(u64, i64), &'static [u8]>,
    id: u64,
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(start) = covering(table, id, from)? else { return Ok(out) };
    if start > to {
        return Ok(out);
    }
    for row in table.range((id, start)..=(id, to))? {
        let (k, row) = row?;
        for e in parse_row(id, k.value().1, row.value())? {
            if e.first <= to && e.newest >= from {
                out.push((e.first, e.value()));
            }
        }
    }
    Ok(out)
}

/// The newest timestamp in series `id`'s chunks.
pub fn newest(table: &impl ReadableTable<(u64, i64), &'static [u8]>, id: u64) -> anyhow::Result<Option<i64>> {
    let Some(row) = table.range((id, i64::MIN)..=(id, i64::MAX))?.next_back() else { return Ok(None) };
    let (k, row) = row?;
    Ok(parse_row(id, k.value().1, row.value())?.last().map(|e| e.newest))
}

/// Applies changes to series `id`'s chunks, keyed by first timestamp
/// (Some: store, replacing a chunk with that key; None: remove), re-packing
/// every row touched.
pub fn apply(table: &mut Table<'_, (u64, i64), &'static [u8]>, id: u64, changes: Changes) -> anyhow::Result<()> {
    let mut touched: BTreeMap<Option<i64>, Changes> = BTreeMap::new();
    for (first, change) in changes {
        touched.entry(covering(table, id, first)?).or_default().insert(first, change);
    }
    for (row, changes) in touched {
        let mut chunks: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        if let Some(key) = row {
            let bytes = table.remove((id, key))?.map(|v| v.value().to_vec()).unwrap_or_default();
            chunks.extend(decode_row(id, key, &bytes)?);
        }
        for (first, change) in changes {
            match change {
                Some(value) => chunks.insert(first, value),
                None => chunks.remove(&first),
            };
        }
        let chunks: Vec<(i64, Vec<u8>)> = chunks.into_iter().collect();
        for (key, bytes) in pack(&chunks)? {
            table.insert((id, key), bytes.as_slice())?;
        }
    }
    Ok(())
}

/// Every chunk in the table as (series, first t, value), series by series
/// and oldest first.
pub fn all(table: &impl ReadableTable<(u64, i64), &'static [u8]>) -> anyhow::Result<Vec<(u64, i64, Vec<u8>)>> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, row) = row?;
        let (id, key) = k.value();
        out.extend(decode_row(id, key, row.value())?.into_iter().map(|(t, v)| (id, t, v)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::{CORE_SCHEMA, Durability, Store, StoreOptions};

    fn chunk_at(first: i64) -> Vec<u8> {
        let samples: Vec<(i64, f64)> = (0..240).map(|i| (first + i * 15_000, (i * 7 % 13) as f64)).collect();
        chunk::encode(&samples)
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_rows_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode_row(1, 5, &bytes);
        }
    }

    #[test]
    fn a_row_round_trips_including_extreme_timestamps() {
        let chunks = vec![
            (i64::MIN, chunk::encode(&[(i64::MIN, 1.0), (i64::MIN + 5, f64::NAN)])),
            (-3, chunk::encode(&[(-3, 0.5)])),
            (i64::MAX - 1, chunk::encode(&[(i64::MAX - 1, 2.0), (i64::MAX, f64::INFINITY)])),
        ];
        let rows = pack(&chunks).unwrap();
        assert_eq!(rows.len(), 1);
        let (key, row) = &rows[0];
        assert_eq!(*key, i64::MIN);
        let back = decode_row(1, *key, row).unwrap();
        assert_eq!(back, chunks);
        assert!(decode_row(1, *key, &row[..row.len() - 1]).is_err(), "a truncated row is an error");
    }

    #[test]
    fn rows_fill_a_page_and_reads_find_the_chunks_of_a_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &[CORE_SCHEMA], &StoreOptions::default()).unwrap();
        let span = 240 * 15_000;
        store
            .write_blocking(Durability::Immediate, move |txn| {
                let mut t = txn.open_table(CHUNK_ROWS)?;
                // Chunks arrive one checkpoint at a time, for two series.
                for n in 0..60 {
                    for id in [1u64, 2] {
                        apply(
                            &mut t,
                            id,
                            BTreeMap::from([(n * span - 1_000_000, Some(chunk_at(n * span - 1_000_000)))]),
                        )?;
                    }
                }
                let rows: Vec<usize> = t.iter()?.map(|r| r.unwrap().1.value().len()).collect();
                assert!(rows.len() < 60, "{} rows for 120 chunks", rows.len());
                assert!(rows.iter().all(|&len| len <= ROW_BUDGET));
                // All but each series' newest row are nearly full.
                let full = rows.iter().filter(|&&len| len > ROW_BUDGET * 9 / 10).count();
                assert!(full >= rows.len() - 2, "{rows:?}");
                let got = overlapping(&t, 1, 10 * span, 12 * span - 1)?;
                let firsts: Vec<i64> = got.iter().map(|c| c.0).collect();
                assert_eq!(firsts, vec![10 * span - 1_000_000, 11 * span - 1_000_000, 12 * span - 1_000_000]);
                assert!(overlapping(&t, 3, i64::MIN, i64::MAX)?.is_empty());
                assert_eq!(newest(&t, 2)?, Some(59 * span - 1_000_000 + 239 * 15_000));
                // Remove the middle chunk and replace another: the rest stay.
                apply(
                    &mut t,
                    1,
                    BTreeMap::from([(11 * span - 1_000_000, None), (-1_000_000, Some(chunk_at(-1_000_000)))]),
                )?;
                let firsts: Vec<i64> = overlapping(&t, 1, i64::MIN, i64::MAX)?.iter().map(|c| c.0).collect();
                assert_eq!(firsts.len(), 59);
                assert!(!firsts.contains(&(11 * span - 1_000_000)));
                assert_eq!(all(&t)?.len(), 119);
                Ok(())
            })
            .unwrap();
    }
}
