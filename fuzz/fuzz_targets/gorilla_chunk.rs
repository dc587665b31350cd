//! Arbitrary bytes as a stored chunk: decoding errors, never panics; and
//! samples derived from the input round-trip exactly.
#![no_main]

use edgebox::roles::tsdb::gorilla::{Encoder, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let mut e = Encoder::new();
    let mut t = 0i64;
    let mut samples = Vec::new();
    for c in data.chunks_exact(10) {
        let step = i64::from(u16::from_le_bytes([c[0], c[1]])) + 1;
        let v = f64::from_bits(u64::from_le_bytes(c[2..10].try_into().unwrap()));
        t = match t.checked_add(step) { Some(t) => t, None => break };
        e.append(t, v).unwrap();
        samples.push((t, v.to_bits()));
    }
    let back: Vec<(i64, u64)> = decode(&e.bytes()).unwrap().into_iter().map(|(t, v)| (t, v.to_bits())).collect();
    assert_eq!(back, samples);
});
