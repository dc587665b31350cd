//! Gorilla chunk compression (Pelkonen et al., VLDB 2015), in the variant
//! Prometheus uses for its XOR chunks: timestamps as delta-of-delta in four
//! bucket sizes, values as the XOR with the previous value, reusing the
//! previous leading/trailing-zero window when the new bits fit in it.
//!
//! A chunk is `[u16 sample count, big endian][bit stream]`; the byte layout
//! is specified in docs/tsdb-format.md. Values are stored as raw IEEE-754
//! bits, so NaN payloads (Prometheus's stale marker among them), ±Inf and
//! -0.0 round-trip exactly.

use thiserror::Error;

/// Most samples one chunk holds (the count is a u16).
pub const MAX_SAMPLES: usize = u16::MAX as usize;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("sample at {t} is not after the chunk's last timestamp {last}")]
    OutOfOrder { t: i64, last: i64 },
    #[error("chunk is full ({MAX_SAMPLES} samples)")]
    Full,
    #[error("chunk damaged or truncated at bit {bit}, reading sample {sample} of {count}")]
    Truncated { bit: usize, sample: usize, count: usize },
    #[error("chunk shorter than its 2-byte header")]
    NoHeader,
    #[error("timestamps do not increase at sample {sample}")]
    NotIncreasing { sample: usize },
}

/// Appends bits most-significant first, through a 64-bit accumulator
/// flushed eight bytes at a time.
#[derive(Debug, Default, Clone)]
struct BitWriter {
    /// Whole bytes written.
    bytes: Vec<u8>,
    /// Pending bits, right-aligned: the low `pending` (< 64) of them.
    acc: u64,
    pending: u32,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `v` (n ≤ 64), high bit first.
    fn write_bits(&mut self, v: u64, n: u8) {
        let n = u32::from(n);
        if n == 0 {
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let room = 64 - self.pending;
        if n < room {
            self.acc = (self.acc << n) | v;
            self.pending += n;
        } else {
            let rest = n - room;
            let full = if room == 64 { v >> rest } else { (self.acc << room) | (v >> rest) };
            self.bytes.extend_from_slice(&full.to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v & ((1u64 << rest) - 1) };
            self.pending = rest;
        }
    }

    /// Every bit written, the last byte zero-padded.
    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        if self.pending > 0 {
            let aligned = self.acc << (64 - self.pending);
            out.extend_from_slice(&aligned.to_be_bytes()[..self.pending.div_ceil(8) as usize]);
        }
    }
}

/// Reads a chunk's bit stream most-significant bit first, reads of up to
/// 56 bits as one unaligned 8-byte load (this is the query path's inner
/// loop). No read checks the length: past the end a window reads zeros,
/// and `decode` checks once per sample that the reads stayed inside.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits consumed (past the stream's end after a damaged sample).
    pos: usize,
}

impl BitReader<'_> {
    /// The next 57 or more bits, left-aligned; zeros past the end.
    #[inline]
    fn window(&self) -> u64 {
        let at = self.pos / 8;
        let word = match self.bytes.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            Some(w) => u64::from_be_bytes(w),
            None => {
                let mut buf = [0u8; 8];
                let tail = self.bytes.get(at..).unwrap_or_default();
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(buf)
            }
        };
        word << (self.pos % 8)
    }

    /// Whether every read so far stayed inside the stream.
    #[inline]
    fn in_bounds(&self) -> bool {
        self.pos <= self.bytes.len() * 8
    }

    /// Consumes `n` bits already looked at.
    #[inline]
    fn skip(&mut self, n: usize) {
        self.pos += n;
    }

    /// Reads `n` ≤ 64 bits.
    #[inline]
    fn read_bits(&mut self, n: u8) -> u64 {
        match n {
            0 => 0,
            1..=56 => {
                let v = self.window() >> (64 - n);
                self.skip(usize::from(n));
                v
            }
            _ => {
                let high = self.read_bits(32);
                let low = self.read_bits(n - 32);
                (high << (n - 32)) | low
            }
        }
    }
}

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits).
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

fn fits(v: i64, bits: u8) -> bool {
    let half = 1i64 << (bits - 1);
    // Prometheus's ranges: [-(2^(n-1) - 1), 2^(n-1)].
    v > -half && v <= half
}

/// Builds one chunk sample by sample.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    w: BitWriter,
    count: usize,
    t: i64,
    t_delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl Encoder {
    pub fn new() -> Self {
        Self { leading: 0xff, ..Self::default() }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Timestamp of the first sample appended.
    pub fn first_timestamp(&self) -> Option<i64> {
        // The stream opens with it: 64 bits, flushed at once.
        let first = self.w.bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok())?;
        (self.count > 0).then(|| i64::from_be_bytes(first))
    }

    /// Timestamp of the last sample appended.
    pub fn last_timestamp(&self) -> Option<i64> {
        (self.count > 0).then_some(self.t)
    }

    /// Appends a sample; timestamps must strictly increase within a chunk.
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), ChunkError> {
        if self.count >= MAX_SAMPLES {
            return Err(ChunkError::Full);
        }
        if self.count > 0 && t <= self.t {
            return Err(ChunkError::OutOfOrder { t, last: self.t });
        }
        let bits = v.to_bits();
        match self.count {
            0 => {
                self.w.write_bits(t as u64, 64);
                self.w.write_bits(bits, 64);
            }
            1 => {
                // Deltas wrap: any two increasing i64 timestamps round-trip.
                let delta = t.wrapping_sub(self.t);
                self.w.write_bits(delta as u64, 64);
                self.t_delta = delta;
                self.write_value(bits);
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                let dod = delta.wrapping_sub(self.t_delta);
                self.write_dod(dod);
                self.t_delta = delta;
                self.write_value(bits);
            }
        }
        self.t = t;
        self.v = bits;
        self.count += 1;
        Ok(())
    }

    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.w.write_bit(false);
            return;
        }
        for (prefix, plen, bits) in DOD_BUCKETS {
            if fits(dod, bits) {
                self.w.write_bits(prefix, plen);
                self.w.write_bits(dod as u64, bits);
                return;
            }
        }
        self.w.write_bits(0b1111, 4);
        self.w.write_bits(dod as u64, 64);
    }

    fn write_value(&mut self, bits: u64) {
        let x = bits ^ self.v;
        if x == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        // At most 31 leading zeros: the count has 5 bits.
        let leading = (x.leading_zeros() as u8).min(31);
        let trailing = x.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.w.write_bits(x >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.w.write_bit(true);
            self.w.write_bits(u64::from(leading), 5);
            let sig = 64 - leading - trailing;
            // 64 significant bits are stored as 0 in 6 bits.
            self.w.write_bits(u64::from(sig) & 0x3f, 6);
            self.w.write_bits(x >> trailing, sig);
        }
    }

    /// The samples appended so far, decoded straight from the bit stream.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        // Our own stream always decodes; the buffer is the chunk's bytes.
        decode(&self.bytes()).unwrap_or_default()
    }

    /// The chunk's bytes: header and bit stream.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + self.w.bytes.len());
        out.extend_from_slice(&(self.count as u16).to_be_bytes());
        self.w.append_to(&mut out);
        out
    }
}

/// Decodes every sample of a chunk. Malformed input gives an error naming
/// the bit offset, never a panic.
pub fn decode(chunk: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    let header: [u8; 2] = chunk.get(..2).and_then(|h| h.try_into().ok()).ok_or(ChunkError::NoHeader)?;
    let count = usize::from(u16::from_be_bytes(header));
    let mut r = BitReader { bytes: &chunk[2..], pos: 0 };
    let mut out = Vec::with_capacity(count.min(chunk.len() * 8));
    let (mut t, mut delta, mut v) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0u8, 0u8);
    for i in 0..count {
        let truncated = |r: &BitReader<'_>| ChunkError::Truncated { bit: r.pos, sample: i, count };
        match i {
            0 => {
                t = r.read_bits(64) as i64;
                v = r.read_bits(64);
            }
            _ => {
                if i == 1 {
                    delta = r.read_bits(64) as i64;
                } else {
                    delta = delta.wrapping_add(read_dod(&mut r));
                }
                let next = t.wrapping_add(delta);
                v = read_value(&mut r, v, &mut leading, &mut trailing).ok_or_else(|| truncated(&r))?;
                if !r.in_bounds() {
                    return Err(truncated(&r));
                }
                if next <= t {
                    return Err(ChunkError::NotIncreasing { sample: i });
                }
                t = next;
            }
        }
        if !r.in_bounds() {
            return Err(truncated(&r));
        }
        out.push((t, f64::from_bits(v)));
    }
    Ok(out)
}

fn read_dod(r: &mut BitReader<'_>) -> i64 {
    // The prefix: up to four 1 bits, ended by a 0 unless there are four.
    let head = r.window();
    let ones = (!head).leading_zeros().min(4);
    let (prefix, bits): (usize, u32) = match ones {
        0 => {
            r.skip(1);
            return 0;
        }
        1 => (2, 14),
        2 => (3, 17),
        3 => (4, 20),
        _ => {
            r.skip(4);
            return r.read_bits(64) as i64;
        }
    };
    // Prefix and payload lie in one window (at most 24 bits).
    let raw = (head << prefix) >> (64 - bits);
    r.skip(prefix + bits as usize);
    // Buckets hold [-(2^(n-1) - 1), 2^(n-1)]: a payload above 2^(n-1) is
    // negative, 2^(n-1) itself is positive (as Prometheus reads them).
    let half = 1u64 << (bits - 1);
    if raw > half { raw as i64 - (1i64 << bits) } else { raw as i64 }
}

fn read_value(r: &mut BitReader<'_>, prev: u64, leading: &mut u8, trailing: &mut u8) -> Option<u64> {
    // `0` same value, `10` the previous window, `11` a new one: 5 bits of
    // leading zeros and 6 of significant bits follow.
    let head = r.window();
    if head >> 63 == 0 {
        r.skip(1);
        return Some(prev);
    }
    if head >> 62 == 0b11 {
        r.skip(13);
        *leading = ((head >> 57) & 0x1f) as u8;
        let mut sig = ((head >> 51) & 0x3f) as u8;
        if sig == 0 {
            sig = 64;
        }
        // A corrupt chunk can claim more bits than 64 - leading.
        *trailing = 64u8.checked_sub(*leading + sig)?;
    } else {
        r.skip(2);
    }
    let sig = 64 - *leading - *trailing;
    let bits = r.read_bits(sig);
    Some(prev ^ (bits.checked_shl(u32::from(*trailing)).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Prometheus's stale marker: a NaN with a specific payload.
    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn round_trip(samples: &[(i64, f64)]) -> Vec<(i64, f64)> {
        let mut e = Encoder::new();
        for &(t, v) in samples {
            e.append(t, v).unwrap();
        }
        decode(&e.bytes()).unwrap()
    }

    fn same_bits(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    #[test]
    fn special_values_round_trip_bit_for_bit() {
        let s = vec![
            (1000, 1.0),
            (2000, f64::from_bits(STALE_NAN)),
            (3000, f64::NAN),
            (4000, f64::INFINITY),
            (5000, f64::NEG_INFINITY),
            (6000, -0.0),
            (7000, 0.0),
            (8000, f64::MIN_POSITIVE),
            (9000, f64::MAX),
        ];
        assert!(same_bits(&round_trip(&s), &s));
    }

    #[test]
    fn regular_scrapes_compress_to_about_a_byte_or_two_per_sample() {
        let mut e = Encoder::new();
        let mut v = 100.0;
        for i in 0..120 {
            v += if i % 3 == 0 { 1.0 } else { 0.0 };
            e.append(1_700_000_000_000 + i * 15_000, v).unwrap();
        }
        let bytes = e.bytes().len() as f64 / 120.0;
        assert!(bytes < 2.0, "{bytes} bytes per sample");
    }

    #[test]
    fn the_first_timestamp_is_read_without_decoding() {
        let mut e = Encoder::new();
        assert_eq!(e.first_timestamp(), None);
        for t in [-5_000, 1_000, 16_000] {
            e.append(t, 1.5).unwrap();
            assert_eq!(e.first_timestamp(), Some(-5_000));
        }
    }

    #[test]
    fn out_of_order_and_full_chunks_are_refused() {
        let mut e = Encoder::new();
        e.append(10, 1.0).unwrap();
        assert_eq!(e.append(10, 2.0), Err(ChunkError::OutOfOrder { t: 10, last: 10 }));
        assert_eq!(e.append(9, 2.0), Err(ChunkError::OutOfOrder { t: 9, last: 10 }));
        let mut e = Encoder::new();
        for i in 0..MAX_SAMPLES as i64 {
            e.append(i, 0.0).unwrap();
        }
        assert_eq!(e.append(i64::MAX, 0.0), Err(ChunkError::Full));
        assert_eq!(decode(&e.bytes()).unwrap().len(), MAX_SAMPLES);
    }

    #[test]
    fn delta_of_delta_bucket_edges_round_trip() {
        for edge in [8191i64, 8192, 8193, 65535, 65536, 65537, 524287, 524288, 524289, 1 << 40] {
            for dod in [edge, -edge, edge - 1, -(edge - 1)] {
                // A first delta large enough that every delta stays positive.
                let d = 1i64 << 42;
                let s = vec![(0, 1.0), (d, 2.0), (2 * d + dod, 3.0), (3 * d + 2 * dod, 4.0)];
                assert!(same_bits(&round_trip(&s), &s), "dod {dod}");
            }
        }
    }

    #[test]
    fn extreme_timestamp_gaps_round_trip() {
        let s = vec![(i64::MIN, 1.0), (i64::MIN + 1, 2.0), (0, 3.0), (1, 4.0), (i64::MAX, 5.0)];
        assert!(same_bits(&round_trip(&s), &s));
        let s = vec![(-7_955_716_496_575_561_724, 1.0), (1_267_655_540_279_214_084, 1e300)];
        assert!(same_bits(&round_trip(&s), &s), "a gap wider than i64 wraps and comes back");
    }

    #[test]
    fn damaged_chunks_give_errors_not_panics() {
        assert_eq!(decode(&[]), Err(ChunkError::NoHeader));
        assert!(matches!(decode(&[0, 5, 1, 2, 3]), Err(ChunkError::Truncated { sample: 0, count: 5, .. })));
        let mut e = Encoder::new();
        for i in 0..50 {
            e.append(i * 1000 + (i * i) % 7, (i as f64).sin()).unwrap();
        }
        let bytes = e.bytes();
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        for flip in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[flip / 8] ^= 1 << (flip % 8);
            let _ = decode(&b);
        }
    }

    proptest! {
        #[test]
        fn any_increasing_series_round_trips(
            start in any::<i64>(),
            steps in prop::collection::vec((1i64..10_000_000_000, any::<u64>()), 0..300),
        ) {
            let mut samples = Vec::new();
            let mut t = start;
            for (step, bits) in steps {
                samples.push((t, f64::from_bits(bits)));
                match t.checked_add(step) { Some(n) => t = n, None => break }
            }
            prop_assert!(same_bits(&round_trip(&samples), &samples));
        }

        #[test]
        fn scrape_like_series_round_trip(
            jitter in prop::collection::vec(-50i64..50, 1..500),
            values in prop::collection::vec(-1e6f64..1e6, 1..500),
        ) {
            let samples: Vec<(i64, f64)> = jitter.iter().zip(&values).enumerate()
                .map(|(i, (j, v))| (i as i64 * 15_000 + j, (v * 100.0).round() / 100.0))
                .collect();
            prop_assert!(same_bits(&round_trip(&samples), &samples));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
