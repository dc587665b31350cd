//! Write-ahead log records: the samples of one acknowledged append, as one
//! `tsdb.wal` row. A write is acknowledged once its record committed
//! durably; the in-memory heads are rebuilt from the last checkpoint plus
//! the records after it, so kill -9 loses nothing acknowledged.
//!
//! Record: `varint count`, then per sample `varint series id`,
//! `zigzag varint (t - previous t)` (the first against 0) and the value's
//! IEEE-754 bits as 8 bytes little endian.

use super::varint::{Reader, put_i64, put_u64};

/// One logged sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub id: u64,
    pub t: i64,
    pub v: f64,
}

pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 14 + 4);
    put_u64(&mut out, entries.len() as u64);
    let mut prev = 0i64;
    for e in entries {
        put_u64(&mut out, e.id);
        put_i64(&mut out, e.t.wrapping_sub(prev));
        out.extend_from_slice(&e.v.to_bits().to_le_bytes());
        prev = e.t;
    }
    out
}

/// Decodes a record; a damaged one names the byte offset.
pub fn decode(record: &[u8]) -> Result<Vec<Entry>, String> {
    let mut r = Reader::new(record);
    let bad = |offset: usize, what: &str| format!("byte {offset}: {what}");
    let n = r.u64().map_err(|o| bad(o, "sample count"))?;
    // Each sample takes at least 10 bytes: a bound before allocating.
    if n > (record.len() / 10) as u64 {
        return Err(bad(0, "sample count larger than the record"));
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut t = 0i64;
    for _ in 0..n {
        let id = r.u64().map_err(|o| bad(o, "series id"))?;
        t = t.wrapping_add(r.i64().map_err(|o| bad(o, "timestamp"))?);
        let v = f64::from_bits(r.fixed_u64().map_err(|o| bad(o, "value"))?);
        out.push(Entry { id, t, v });
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
        fn records_round_trip(raw in prop::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 0..200)) {
            let entries: Vec<Entry> = raw.iter().map(|&(id, t, v)| Entry { id, t, v: f64::from_bits(v) }).collect();
            let back = decode(&encode(&entries)).unwrap();
            prop_assert_eq!(back.len(), entries.len());
            for (a, b) in back.iter().zip(&entries) {
                prop_assert!(a.id == b.id && a.t == b.t && a.v.to_bits() == b.v.to_bits());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn truncated_records_name_the_offset() {
        let rec = encode(&[Entry { id: 1, t: 5, v: 1.0 }, Entry { id: 2, t: 6, v: 2.0 }]);
        let err = decode(&rec[..rec.len() - 1]).unwrap_err();
        assert!(err.starts_with("byte "), "{err}");
    }
}
