//! Stored chunk values: the bytes of `tsdb.chunks` and `tsdb.heads` rows.
//!
//! Metrics are mostly decimal numbers (counters of bytes, gauges with two
//! digits), for which Gorilla's XOR of IEEE bits spends 2–5 bytes a sample.
//! So a chunk is written in the smaller of two encodings: `decimal`, when
//! every value is exactly `m / 10^e` for one exponent (timestamps and
//! mantissas as frame-of-reference bit-packed deltas or delta-of-deltas
//! divided by their common factor), else Gorilla (gorilla.rs), which keeps
//! any bit pattern (NaN payloads, stale markers, ±Inf, -0.0). Exactness is
//! checked by decoding, so both round-trip bit for bit. Layout in
//! docs/tsdb-format.md.

use thiserror::Error;

use super::super::gorilla;
use super::varint::{Reader, put_i64, put_u64};

/// Encoding tags, the byte after the last timestamp.
const GORILLA: u8 = 0;
const DECIMAL: u8 = 1;

/// Most samples one chunk holds (Gorilla's u16 count).
pub const MAX_SAMPLES: usize = gorilla::MAX_SAMPLES;

/// Exact powers of ten usable as decimal scales.
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
/// Mantissas stay below 2^53 so they convert to f64 exactly.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk value shorter than its 9-byte header")]
    NoHeader,
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
    #[error("decimal chunk damaged at byte {offset}: {what}")]
    Damaged { offset: usize, what: &'static str },
    #[error(transparent)]
    Gorilla(#[from] gorilla::ChunkError),
}

/// Encodes samples (non-empty, strictly increasing timestamps, at most
/// MAX_SAMPLES) as a stored value: `[last t, i64 BE][encoding][payload]`.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    debug_assert!(!samples.is_empty() && samples.len() <= MAX_SAMPLES);
    let last = samples.last().map_or(0, |s| s.0);
    let mut out = last.to_be_bytes().to_vec();
    match encode_decimal(samples) {
        Some(payload) => {
            out.push(DECIMAL);
            out.extend_from_slice(&payload);
        }
        None => {
            let mut enc = gorilla::Encoder::new();
            for &(t, v) in samples {
                // Sorted and bounded by the caller; a refusal would be a bug
                // upstream, and dropping the sample beats a panic.
                if let Err(e) = enc.append(t, v) {
                    tracing::error!(error = %e, "tsdb chunk encoder refused a sample");
                }
            }
            out.push(GORILLA);
            out.extend_from_slice(&enc.bytes());
        }
    }
    out
}

/// The newest timestamp of a stored value, without decoding it.
pub fn last_t(value: &[u8]) -> Result<i64, ChunkError> {
    let head: [u8; 8] = value.get(..8).and_then(|h| h.try_into().ok()).ok_or(ChunkError::NoHeader)?;
    Ok(i64::from_be_bytes(head))
}

/// Decodes every sample of a stored value.
pub fn decode(value: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    last_t(value)?;
    let tag = *value.get(8).ok_or(ChunkError::NoHeader)?;
    let payload = &value[9..];
    match tag {
        GORILLA => Ok(gorilla::decode(payload)?),
        DECIMAL => decode_decimal(payload),
        other => Err(ChunkError::UnknownEncoding(other)),
    }
}

/// Samples in a stored value, read from its header.
pub fn sample_count(value: &[u8]) -> Result<usize, ChunkError> {
    let tag = *value.get(8).ok_or(ChunkError::NoHeader)?;
    let payload = &value[9..];
    match tag {
        GORILLA => Ok(payload.get(..2).map(|c| usize::from(u16::from_be_bytes([c[0], c[1]]))).unwrap_or(0)),
        DECIMAL => Reader::new(payload).u64().map(|n| n as usize).map_err(|offset| damaged(offset, "sample count")),
        other => Err(ChunkError::UnknownEncoding(other)),
    }
}

fn damaged(offset: usize, what: &'static str) -> ChunkError {
    ChunkError::Damaged { offset, what }
}

/// `v` as `m / 10^e`, when that division gives back exactly `v`'s bits.
fn mantissa(v: f64, e: usize) -> Option<i64> {
    let m = (v * POW10[e]).round();
    if !m.is_finite() || m.abs() >= MAX_MANTISSA {
        return None;
    }
    let m = m as i64;
    ((m as f64) / POW10[e]).to_bits().eq(&v.to_bits()).then_some(m)
}

/// The smallest common exponent and the mantissas, if every value is an
/// exact decimal at it.
fn decimal_mantissas(samples: &[(i64, f64)]) -> Option<(u8, Vec<i64>)> {
    let mut e = 0;
    for &(_, v) in samples {
        while mantissa(v, e).is_none() {
            e += 1;
            if e == POW10.len() {
                return None;
            }
        }
    }
    let ms: Option<Vec<i64>> = samples.iter().map(|&(_, v)| mantissa(v, e)).collect();
    Some((e as u8, ms?))
}

fn deltas(xs: &[i64]) -> Vec<i64> {
    xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect()
}

fn encode_decimal(samples: &[(i64, f64)]) -> Option<Vec<u8>> {
    let (e, ms) = decimal_mantissas(samples)?;
    let n = samples.len();
    let mut out = Vec::with_capacity(n + 32);
    put_u64(&mut out, n as u64);
    let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
    put_i64(&mut out, ts[0]);
    let t_deltas = deltas(&ts);
    if let Some(&d1) = t_deltas.first() {
        put_i64(&mut out, d1);
        if n >= 3 {
            put_block(&mut out, &deltas(&t_deltas));
        }
    }
    out.push(e);
    put_i64(&mut out, ms[0]);
    if n >= 2 {
        let d = deltas(&ms);
        let mut by_delta = vec![0u8];
        put_block(&mut by_delta, &d);
        let best = if n >= 3 {
            let mut by_dod = vec![1u8];
            put_i64(&mut by_dod, d[0]);
            put_block(&mut by_dod, &deltas(&d));
            if by_dod.len() < by_delta.len() { by_dod } else { by_delta }
        } else {
            by_delta
        };
        out.extend_from_slice(&best);
    }
    Some(out)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Frame of reference: `min`, the common factor `g` of `x - min`, the bit
/// width `w`, then each `(x - min) / g` in `w` bits, least significant
/// first. Arithmetic wraps, so any i64 sequence round-trips.
fn put_block(out: &mut Vec<u8>, xs: &[i64]) {
    let min = xs.iter().copied().min().unwrap_or(0);
    let offsets: Vec<u64> = xs.iter().map(|&x| x.wrapping_sub(min) as u64).collect();
    let g = offsets.iter().fold(0, |g, &o| gcd(g, o)).max(1);
    let max = offsets.iter().map(|o| o / g).max().unwrap_or(0);
    let w = 64 - max.leading_zeros();
    put_i64(out, min);
    put_u64(out, g);
    out.push(w as u8);
    let mut acc: u128 = 0;
    let mut bits = 0;
    for o in offsets {
        acc |= u128::from(o / g) << bits;
        bits += w;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

fn read_block(r: &mut Reader<'_>, n: usize) -> Result<Vec<i64>, ChunkError> {
    let min = r.i64().map_err(|o| damaged(o, "block minimum"))?;
    let g = r.u64().map_err(|o| damaged(o, "block factor"))?;
    let at = r.offset();
    let w = u32::from(r.u8().map_err(|o| damaged(o, "block width"))?);
    if w > 64 || g == 0 {
        return Err(damaged(at, "block width over 64 or zero factor"));
    }
    let len = (n * w as usize).div_ceil(8);
    let bytes = r.take(len).map_err(|o| damaged(o, "packed values"))?;
    let value = |y: u64| min.wrapping_add(y.wrapping_mul(g) as i64);
    if w == 0 {
        return Ok(vec![value(0); n]);
    }
    let mut out = Vec::with_capacity(n);
    if w <= 56 {
        // A value of at most 56 bits lies within the 8 bytes from its
        // first byte: one load, a shift and a mask.
        let mask = (1u64 << w) - 1;
        for i in 0..n {
            let bit = i * w as usize;
            out.push(value((word_at(bytes, bit / 8) >> (bit % 8)) & mask));
        }
        return Ok(out);
    }
    let mask: u128 = if w == 64 { u128::from(u64::MAX) } else { (1u128 << w) - 1 };
    let (mut acc, mut have, mut next) = (0u128, 0u32, 0usize);
    for _ in 0..n {
        while have < w {
            acc |= u128::from(bytes[next]) << have;
            next += 1;
            have += 8;
        }
        let y = (acc & mask) as u64;
        acc >>= w;
        have -= w;
        out.push(value(y));
    }
    Ok(out)
}

/// The 8 bytes from `at`, little endian, zeros past the end.
fn word_at(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => {
            let mut buf = [0u8; 8];
            let rest = bytes.get(at..).unwrap_or(&[]);
            buf[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(buf)
        }
    }
}

/// Running sums: deltas back to values starting at `first`.
fn integrate(first: i64, ds: impl IntoIterator<Item = i64>, out: &mut Vec<i64>) {
    let mut x = first;
    out.push(x);
    for d in ds {
        x = x.wrapping_add(d);
        out.push(x);
    }
}

fn decode_decimal(payload: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    let mut r = Reader::new(payload);
    let n = r.u64().map_err(|o| damaged(o, "sample count"))? as usize;
    if n == 0 || n > MAX_SAMPLES {
        return Err(damaged(0, "sample count 0 or over 65535"));
    }
    let t0 = r.i64().map_err(|o| damaged(o, "first timestamp"))?;
    let mut ts = Vec::with_capacity(n);
    if n == 1 {
        ts.push(t0);
    } else {
        let d1 = r.i64().map_err(|o| damaged(o, "first timestamp delta"))?;
        let dods = if n >= 3 { read_block(&mut r, n - 2)? } else { Vec::new() };
        let mut t_deltas = Vec::with_capacity(n - 1);
        integrate(d1, dods, &mut t_deltas);
        integrate(t0, t_deltas, &mut ts);
    }
    let at = r.offset();
    let e = usize::from(r.u8().map_err(|o| damaged(o, "exponent"))?);
    let scale = *POW10.get(e).ok_or(damaged(at, "exponent over 15"))?;
    let m0 = r.i64().map_err(|o| damaged(o, "first mantissa"))?;
    let mut ms = Vec::with_capacity(n);
    if n == 1 {
        ms.push(m0);
    } else {
        let at = r.offset();
        let ds = match r.u8().map_err(|o| damaged(o, "mantissa mode"))? {
            0 => read_block(&mut r, n - 1)?,
            1 if n >= 3 => {
                let d1 = r.i64().map_err(|o| damaged(o, "first mantissa delta"))?;
                let mut ds = Vec::with_capacity(n - 1);
                integrate(d1, read_block(&mut r, n - 2)?, &mut ds);
                ds
            }
            _ => return Err(damaged(at, "unknown mantissa mode")),
        };
        integrate(m0, ds, &mut ms);
    }
    if ts.windows(2).any(|w| w[1] <= w[0]) {
        return Err(damaged(0, "timestamps not increasing"));
    }
    Ok(ts.into_iter().zip(ms).map(|(t, m)| (t, m as f64 / scale)).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn same_bits(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    fn round_trip(samples: &[(i64, f64)]) -> Vec<u8> {
        let value = encode(samples);
        let back = decode(&value).unwrap();
        assert!(same_bits(samples, &back), "{samples:?} came back as {back:?}");
        assert_eq!(last_t(&value).unwrap(), samples.last().unwrap().0);
        assert_eq!(sample_count(&value).unwrap(), samples.len());
        value
    }

    #[test]
    fn decimal_gauges_and_counters_pack_below_a_byte_a_sample() {
        // A counter of bytes and a two-digit gauge, 15 s apart with jitter.
        let mut counter = 1.0e9;
        let mut gauge = 0.5;
        let (mut c, mut g) = (Vec::new(), Vec::new());
        for i in 0..240i64 {
            let t = 1_700_000_000_000 + i * 15_000 + (i * 7) % 5;
            counter += 1500.0 * ((i * 31) % 100) as f64;
            gauge = ((gauge + ((i * 13) % 21 - 10) as f64 / 100.0) * 100.0f64).round() / 100.0;
            c.push((t, counter));
            g.push((t, gauge));
        }
        let (cv, gv) = (round_trip(&c), round_trip(&g));
        assert_eq!(cv[8], DECIMAL);
        assert!(cv.len() < 240, "counter took {} bytes", cv.len());
        assert!(gv.len() < 240, "gauge took {} bytes", gv.len());
    }

    #[test]
    fn values_that_are_not_decimals_fall_back_to_gorilla_exactly() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        for special in [f64::NAN, stale, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1.0 / 3.0, 1e300, 5e-324] {
            let v = round_trip(&[(1, 1.5), (2, special), (3, 2.25)]);
            assert_eq!(v[8], GORILLA, "{special}");
        }
        assert_eq!(round_trip(&[(1, 0.1), (2, 0.2), (3, 0.3)])[8], DECIMAL);
    }

    #[test]
    fn blocks_of_every_width_round_trip() {
        for w in 0..=64u32 {
            let top = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
            for n in [1usize, 2, 7, 8, 9, 63, 100] {
                // Offsets 0, 1 (so no common factor) and up to `top` (so
                // exactly `w` bits), from the lowest minimum.
                let offsets =
                    [0, top.min(1)].into_iter().chain((2..n as u64).map(|i| top / (n as u64) * i)).chain([top]);
                let xs: Vec<i64> = offsets.map(|o| i64::MIN.wrapping_add(o as i64)).collect();
                let mut out = Vec::new();
                put_block(&mut out, &xs);
                let back = read_block(&mut Reader::new(&out), xs.len()).unwrap();
                assert_eq!(back, xs, "width {w}, {n} values");
                let at = out.len() - (xs.len() * w as usize).div_ceil(8) - 1;
                assert!(w == 0 || u32::from(out[at]) == w, "width byte {} for {w}", out[at]);
            }
        }
    }

    #[test]
    fn extreme_timestamps_and_single_samples_round_trip() {
        round_trip(&[(i64::MIN, 1.0)]);
        round_trip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        round_trip(&[(i64::MIN, 1.0), (0, -2.0), (i64::MAX, 3.0)]);
        round_trip(&[(-5, 9e15), (7, -9e15), (8, 0.0)]);
    }

    #[test]
    fn damaged_values_give_errors_not_panics() {
        let value = round_trip(&(0..100).map(|i| (i * 1000, i as f64 * 0.5)).collect::<Vec<_>>());
        for cut in 0..value.len() {
            assert!(decode(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = value.clone();
        bad[8] = 9;
        assert_eq!(decode(&bad), Err(ChunkError::UnknownEncoding(9)));
    }

    proptest! {
        #[test]
        fn any_increasing_series_round_trips(
            mut ts in prop::collection::btree_set(any::<i64>(), 1..300),
            vs in prop::collection::vec(any::<f64>(), 300),
        ) {
            let samples: Vec<(i64, f64)> = std::mem::take(&mut ts).into_iter().zip(vs).collect();
            let value = encode(&samples);
            prop_assert!(same_bits(&samples, &decode(&value).unwrap()));
        }

        #[test]
        fn decimal_series_round_trip(
            start in -1_000_000_000i64..1_000_000_000,
            steps in prop::collection::vec((1i64..100_000, -100_000i64..100_000, 0usize..6), 1..300),
        ) {
            let (mut t, mut m) = (start, 0i64);
            let samples: Vec<(i64, f64)> = steps
                .iter()
                .map(|&(dt, dm, e)| {
                    t += dt;
                    m += dm;
                    (t, m as f64 / POW10[e])
                })
                .collect();
            let value = encode(&samples);
            prop_assert_eq!(value[8], DECIMAL);
            prop_assert!(same_bits(&samples, &decode(&value).unwrap()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let _ = sample_count(&bytes);
        }
    }
}
