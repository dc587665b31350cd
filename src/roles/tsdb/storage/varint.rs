//! LEB128 varints, zigzag and a bounds-checked byte reader, shared by the
//! chunk codec and the write-ahead log so both decode hostile bytes into
//! errors that name the offset, never panics.

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded, so small magnitudes of either sign are short.
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, zigzag(v));
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Reads from a byte slice; every read names the offset when it runs out.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub fn u8(&mut self) -> Result<u8, usize> {
        let b = *self.bytes.get(self.pos).ok_or(self.pos)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u64(&mut self) -> Result<u64, usize> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8().map_err(|_| start)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(start)
    }

    pub fn i64(&mut self) -> Result<i64, usize> {
        self.u64().map(unzigzag)
    }

    pub fn fixed_u64(&mut self) -> Result<u64, usize> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| self.pos)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], usize> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(self.pos)?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_truncation_names_the_offset() {
        let mut b = Vec::new();
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, 300, -300] {
            put_i64(&mut b, v);
        }
        put_u64(&mut b, u64::MAX);
        let mut r = Reader::new(&b);
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, 300, -300] {
            assert_eq!(r.i64(), Ok(v));
        }
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert!(r.is_empty());
        let mut r = Reader::new(&[0x80, 0x80]);
        assert_eq!(r.u64(), Err(0));
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.u64(), Err(0), "an overlong varint is refused");
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.take(3), Err(0));
    }
}
