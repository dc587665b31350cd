//! Rows that hold many series: `tsdb.series_blocks` and `tsdb.head_blocks`
//! key a row by `series id >> shift`, so ten thousand small values become a
//! few hundred large ones. A B-tree entry costs its key and bookkeeping
//! and leaves pages part empty; large values are packed whole, which
//! halves the bytes small per-series rows took.
//!
//! Row: `varint count`, then per entry `varint series id`, `varint length`
//! and the entry's bytes, ids increasing. Series rows are also
//! snappy-compressed: label sets of one block repeat most of their names
//! and values.

use std::collections::BTreeMap;

use super::varint::{Reader, put_u64};

/// Series per label-set row (ids `n << 8 .. (n + 1) << 8`).
pub const SERIES_SHIFT: u32 = 8;
/// Series per head row.
pub const HEAD_SHIFT: u32 = 6;

pub fn block_of(id: u64, shift: u32) -> u64 {
    id >> shift
}

pub fn encode(entries: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.values().map(|v| v.len() + 6).sum::<usize>() + 4);
    put_u64(&mut out, entries.len() as u64);
    for (id, bytes) in entries {
        put_u64(&mut out, *id);
        put_u64(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

pub fn decode(row: &[u8]) -> Result<BTreeMap<u64, Vec<u8>>, String> {
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

/// A series row: the entries, snappy-compressed.
pub fn encode_compressed(entries: &BTreeMap<u64, Vec<u8>>) -> Result<Vec<u8>, String> {
    snap::raw::Encoder::new().compress_vec(&encode(entries)).map_err(|e| format!("snappy: {e}"))
}

pub fn decode_compressed(row: &[u8]) -> Result<BTreeMap<u64, Vec<u8>>, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(row).map_err(|e| format!("snappy: {e}"))?;
    decode(&raw)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn rows_round_trip(entries in prop::collection::btree_map(any::<u64>(), prop::collection::vec(any::<u8>(), 0..40), 0..50)) {
            prop_assert_eq!(&decode(&encode(&entries)).unwrap(), &entries);
            prop_assert_eq!(&decode_compressed(&encode_compressed(&entries).unwrap()).unwrap(), &entries);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let _ = decode_compressed(&bytes);
        }
    }
}
