//! Arbitrary bytes as a stored chunk value, a log record, a packed row
//! (plain or deflated) or a row of sealed chunks: decoding
//! errors, never panics; and samples derived from the input round-trip
//! bit for bit through the chunk encoder (decimal or Gorilla).
#![no_main]

use edgebox::roles::tsdb::storage::blocks::Codec;
use edgebox::roles::tsdb::storage::{chunk, chunk_rows, wal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chunk::decode(data);
    let _ = chunk::sample_count(data);
    let _ = wal::decode(data);
    let _ = Codec::Plain.decode(data);
    let _ = Codec::Deflate.decode(data);
    let _ = chunk_rows::decode_row(1, 0, data);
    let mut t = i64::MIN / 2;
    let mut samples = Vec::new();
    for c in data.chunks_exact(10).take(chunk::MAX_SAMPLES) {
        t += i64::from(u16::from_le_bytes([c[0], c[1]])) + 1;
        // Small integers over a power of ten exercise the decimal path.
        let raw = u64::from_le_bytes(c[2..10].try_into().unwrap());
        let v = if raw & 1 == 0 { f64::from_bits(raw) } else { ((raw >> 8) % 100_000) as f64 / 100.0 };
        samples.push((t, v));
    }
    if samples.is_empty() {
        return;
    }
    let back = chunk::decode(&chunk::encode(&samples)).unwrap();
    assert_eq!(back.len(), samples.len());
    for (a, b) in back.iter().zip(&samples) {
        assert!(a.0 == b.0 && a.1.to_bits() == b.1.to_bits());
    }
});
