//! Rows that hold many series: `tsdb.series_blocks` and `tsdb.head_blocks`
//! pack the entries of consecutive series ids into rows of at most
//! `ROW_BUDGET` bytes, each keyed by its first id. redb gives a leaf that
//! holds a large value a power-of-two number of pages, so rows that fill
//! one page exactly waste nothing, where one small row per series or rows
//! of arbitrary size left a third of the file empty.
//!
//! Row: `varint count`, then per entry `varint series id`, `varint length`
//! and the entry's bytes, ids increasing. Series rows are also
//! deflate-compressed (label sets of neighbouring series repeat most of
//! their names and values; deflate takes them to about a tenth), packed by
//! their compressed size. Rows partition the id space: the row for an id
//! is the one with the largest key at or below it.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::varint::{Reader, put_u64};

/// Most bytes a row takes: a redb leaf of one entry needs a 4-byte page
/// header, a 4-byte value length and the 8-byte key besides the value, and
/// 4 096 - 16 fits one 4 KiB page exactly.
pub const ROW_BUDGET: usize = 4080;

/// Most bytes a compressed row may expand to: far above any row `pack`
/// writes, a bound against a damaged row claiming gigabytes.
const MAX_RAW_ROW: u64 = 16 << 20;

/// How a table's rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Plain,
    /// Series rows up to schema 6; read by the migration to Deflate.
    Snappy,
    Deflate,
    /// Deflate encoded at its fastest level, for rows rewritten at every
    /// checkpoint (head rows: about the same size on chunks, half the
    /// time); read exactly as `Deflate`.
    FastDeflate,
}

impl Codec {
    pub fn encode<'a>(self, entries: impl IntoIterator<Item = (&'a u64, &'a Vec<u8>)>) -> Result<Vec<u8>, String> {
        let plain = encode(entries);
        match self {
            Codec::Plain => Ok(plain),
            Codec::Snappy => snap::raw::Encoder::new().compress_vec(&plain).map_err(|e| format!("snappy: {e}")),
            Codec::Deflate | Codec::FastDeflate => {
                use std::io::Write;
                let level =
                    if self == Codec::Deflate { flate2::Compression::default() } else { flate2::Compression::fast() };
                let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), level);
                enc.write_all(&plain).and_then(|_| enc.finish()).map_err(|e| format!("deflate: {e}"))
            }
        }
    }

    pub fn decode(self, row: &[u8]) -> Result<BTreeMap<u64, Vec<u8>>, String> {
        match self {
            Codec::Plain => decode(row),
            Codec::Snappy => {
                decode(&snap::raw::Decoder::new().decompress_vec(row).map_err(|e| format!("snappy: {e}"))?)
            }
            Codec::Deflate | Codec::FastDeflate => {
                use std::io::Read;
                let mut plain = Vec::new();
                flate2::read::DeflateDecoder::new(row)
                    .take(MAX_RAW_ROW + 1)
                    .read_to_end(&mut plain)
                    .map_err(|e| format!("deflate: {e}"))?;
                if plain.len() as u64 > MAX_RAW_ROW {
                    return Err(format!("deflate: expands past {MAX_RAW_ROW} bytes"));
                }
                decode(&plain)
            }
        }
    }
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

fn entry_len(id: u64, bytes: &[u8]) -> usize {
    varint_len(id) + varint_len(bytes.len() as u64) + bytes.len()
}

/// Splits entries into rows of at most `ROW_BUDGET` bytes as stored (an
/// entry larger than that gets a row of its own), each with its first id.
pub fn pack(entries: BTreeMap<u64, Vec<u8>>, codec: Codec) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let entries: Vec<(u64, Vec<u8>)> = entries.into_iter().collect();
    let mut out = Vec::new();
    let mut rest = entries.as_slice();
    // Raw bytes per stored byte: exact for Plain; for compressed rows learnt
    // from the row before, a first guess the search below corrects.
    let mut ratio = if codec == Codec::Plain { 1.0 } else { 4.0 };
    while !rest.is_empty() {
        let guess = fitting(rest, (ROW_BUDGET as f64 * ratio) as usize);
        let (take, row) = fill_row(rest, guess, codec)?;
        let raw: usize = rest[..take].iter().map(|(id, b)| entry_len(*id, b)).sum();
        ratio = (raw as f64 / row.len().max(1) as f64).max(1.0);
        out.push((rest[0].0, row));
        rest = &rest[take..];
    }
    Ok(out)
}

/// Most tries at the entry count of one compressed row.
const FILL_TRIES: usize = 6;

/// The leading entries that make the fullest row within `ROW_BUDGET`
/// (within `FILL_TRIES` encodings; an entry larger than the budget alone),
/// starting from the guess `take`. Compressed sizes are not additive, so
/// each guess scales by the room left and is kept between the largest
/// count known to fit and the smallest known not to.
fn fill_row(rest: &[(u64, Vec<u8>)], take: usize, codec: Codec) -> Result<(usize, Vec<u8>), String> {
    let encode = |n: usize| codec.encode(rest[..n].iter().map(|(id, b)| (id, b)));
    if codec == Codec::Plain {
        // Sizes add up: `fitting` already found the count.
        return Ok((take, encode(take)?));
    }
    let (mut fits, mut over) = (None::<(usize, Vec<u8>)>, rest.len() + 1);
    let mut take = take.clamp(1, rest.len());
    for _ in 0..FILL_TRIES {
        let row = encode(take)?;
        let len = row.len().max(1);
        if row.len() <= ROW_BUDGET || take == 1 {
            let full = take == rest.len() || row.len() + row.len() / take > ROW_BUDGET;
            fits = Some((take, row));
            if full {
                break;
            }
        } else {
            over = take;
        }
        let lo = fits.as_ref().map_or(0, |f| f.0);
        if over <= lo + 1 {
            break;
        }
        let scaled = (take as f64 * ROW_BUDGET as f64 * 0.995 / len as f64) as usize;
        take = scaled.clamp(lo + 1, over - 1);
    }
    match fits {
        Some(found) => Ok(found),
        // Every guess overflowed: halve down to a row that fits.
        None => {
            let mut take = over / 2;
            loop {
                let row = encode(take.max(1))?;
                if row.len() <= ROW_BUDGET || take <= 1 {
                    return Ok((take.max(1), row));
                }
                take /= 2;
            }
        }
    }
}

/// How many leading entries fit `budget` raw bytes (at least one).
fn fitting(entries: &[(u64, Vec<u8>)], budget: usize) -> usize {
    let mut size = 0;
    for (n, (id, bytes)) in entries.iter().enumerate() {
        size += entry_len(*id, bytes);
        if n > 0 && size + varint_len(n as u64 + 1) > budget {
            return n;
        }
    }
    entries.len()
}

/// One series' change: Some(bytes) to store, None to remove.
type Change = (u64, Option<Vec<u8>>);

/// Applies per-series changes (Some: store, None: remove) to a table of
/// packed rows, re-packing every row touched.
pub fn apply(
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    changes: BTreeMap<u64, Option<Vec<u8>>>,
    codec: Codec,
    name: &str,
) -> anyhow::Result<()> {
    // The row each change falls in: the largest key at or below its id, or
    // the first row when the id precedes them all.
    let mut touched: BTreeMap<Option<u64>, Vec<Change>> = BTreeMap::new();
    for (id, change) in changes {
        let below = table.range(..=id)?.next_back().transpose()?.map(|(k, _)| k.value());
        let row = match below {
            Some(k) => Some(k),
            None => table.first()?.map(|(k, _)| k.value()),
        };
        touched.entry(row).or_default().push((id, change));
    }
    for (row, changes) in touched {
        let mut entries = match row {
            Some(key) => {
                let bytes = table.remove(key)?.map(|v| v.value().to_vec()).unwrap_or_default();
                codec.decode(&bytes).map_err(|e| anyhow::anyhow!("{name} row {key}: {e}"))?
            }
            None => BTreeMap::new(),
        };
        for (id, change) in changes {
            match change {
                Some(bytes) => entries.insert(id, bytes),
                None => entries.remove(&id),
            };
        }
        for (first, bytes) in pack(entries, codec).map_err(anyhow::Error::msg)? {
            table.insert(first, bytes.as_slice())?;
        }
    }
    Ok(())
}

/// Every entry of a table of packed rows; a damaged row is named.
pub fn entries(
    table: &impl ReadableTable<u64, &'static [u8]>,
    codec: Codec,
    name: &str,
) -> anyhow::Result<BTreeMap<u64, Vec<u8>>> {
    let mut all = BTreeMap::new();
    for row in table.iter()? {
        let (first, row) = row?;
        all.extend(codec.decode(row.value()).map_err(|e| anyhow::anyhow!("{name} row {}: {e}", first.value()))?);
    }
    Ok(all)
}

fn encode<'a>(entries: impl IntoIterator<Item = (&'a u64, &'a Vec<u8>)>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut n = 0u64;
    for (id, bytes) in entries {
        put_u64(&mut body, *id);
        put_u64(&mut body, bytes.len() as u64);
        body.extend_from_slice(bytes);
        n += 1;
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    put_u64(&mut out, n);
    out.extend_from_slice(&body);
    out
}

fn decode(row: &[u8]) -> Result<BTreeMap<u64, Vec<u8>>, String> {
    let mut r = Reader::new(row);
    let bad = |offset: usize, what: &str| format!("byte {offset}: {what}");
    let n = r.u64().map_err(|o| bad(o, "entry count"))?;
    if n > row.len() as u64 {
        return Err(bad(0, "entry count larger than the row"));
    }
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let id = r.u64().map_err(|o| bad(o, "series id"))?;
        let len = r.u64().map_err(|o| bad(o, "entry length"))?;
        let bytes = r.take(usize::try_from(len).unwrap_or(usize::MAX)).map_err(|o| bad(o, "entry bytes"))?;
        out.insert(id, bytes.to_vec());
    }
    if !r.is_empty() {
        return Err(bad(r.offset(), "trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn rows_round_trip(entries in prop::collection::btree_map(any::<u64>(), prop::collection::vec(any::<u8>(), 0..40), 0..50)) {
            for codec in [Codec::Plain, Codec::Snappy, Codec::Deflate, Codec::FastDeflate] {
                prop_assert_eq!(&codec.decode(&codec.encode(&entries).unwrap()).unwrap(), &entries);
            }
        }

        #[test]
        fn packed_rows_fit_the_budget_and_keep_every_entry(
            entries in prop::collection::btree_map(0u64..100_000, prop::collection::vec(any::<u8>(), 0..600), 0..200),
        ) {
            for codec in [Codec::Plain, Codec::Snappy, Codec::Deflate, Codec::FastDeflate] {
                let rows = pack(entries.clone(), codec).unwrap();
                let mut back = BTreeMap::new();
                for (first, row) in &rows {
                    let part = codec.decode(row).unwrap();
                    prop_assert_eq!(part.keys().next(), Some(first));
                    prop_assert!(row.len() <= ROW_BUDGET || part.len() == 1, "{} bytes, {} entries", row.len(), part.len());
                    back.extend(part);
                }
                prop_assert_eq!(&back, &entries);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Codec::Plain.decode(&bytes);
            let _ = Codec::Snappy.decode(&bytes);
            let _ = Codec::Deflate.decode(&bytes);
        }
    }

    #[test]
    fn changes_land_in_the_row_covering_their_id() {
        use crate::core::store::{CORE_SCHEMA, Durability, Store, StoreOptions};
        const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &[CORE_SCHEMA], &StoreOptions::default()).unwrap();
        let rows = store
            .write_blocking(Durability::Immediate, |txn| {
                let mut t = txn.open_table(T)?;
                // 100 entries of 100 bytes: several rows.
                apply(&mut t, (10..110).map(|id| (id, Some(vec![id as u8; 100]))).collect(), Codec::Plain, "t")?;
                // Update one, remove one, add one before all and one after all.
                let changes =
                    BTreeMap::from([(50, Some(vec![7; 5])), (60, None), (1, Some(vec![1])), (500, Some(vec![5]))]);
                apply(&mut t, changes, Codec::Plain, "t")?;
                let mut all = BTreeMap::new();
                let mut firsts = Vec::new();
                for row in t.iter()? {
                    let (k, v) = row?;
                    let part = Codec::Plain.decode(v.value()).unwrap();
                    assert_eq!(part.keys().next(), Some(&k.value()));
                    firsts.push(k.value());
                    all.extend(part);
                }
                assert!(firsts.len() > 2, "{firsts:?}");
                Ok(all)
            })
            .unwrap();
        assert_eq!(rows.len(), 101);
        assert_eq!(rows[&50], vec![7; 5]);
        assert!(!rows.contains_key(&60));
        assert_eq!((rows[&1].clone(), rows[&500].clone()), (vec![1], vec![5]));
    }
}
