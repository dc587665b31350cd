//! A bounds-checked cursor over one event's bytes. Every read that would run
//! past the end is an error naming what was being read and the byte offset
//! (from the start of the event), so a truncated or corrupted event is
//! reported, never a panic or an out-of-bounds slice.

use super::DecodeError;

#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` within the event, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// Offset of the next byte within the event.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError { offset: self.offset(), what: what.into() }
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(format!("{what}: needs {n} bytes, {} left", self.remaining())));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// A little-endian unsigned integer of `n` ≤ 8 bytes.
    pub fn uint(&mut self, n: usize, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(n, what)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A big-endian unsigned integer of `n` ≤ 8 bytes.
    pub fn uint_be(&mut self, n: usize, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(n, what)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(self.uint(2, what)? as u16)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(self.uint(4, what)? as u32)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.uint(8, what)
    }

    /// The protocol's length-encoded integer.
    pub fn lenenc(&mut self, what: &str) -> Result<u64, DecodeError> {
        match self.u8(what)? {
            n @ 0..=0xfa => Ok(u64::from(n)),
            0xfc => self.uint(2, what),
            0xfd => self.uint(3, what),
            0xfe => self.uint(8, what),
            n => Err(self.error(format!("{what}: 0x{n:02x} is not a length-encoded integer"))),
        }
    }

    /// A length-encoded count that must fit in what is left (a count of
    /// bytes or of at-least-one-byte items), so it can size an allocation.
    pub fn lenenc_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        let at = self.offset();
        let n = self.lenenc(what)?;
        if n > self.remaining() as u64 {
            return Err(DecodeError {
                offset: at,
                what: format!("{what}: {n} exceeds the {} bytes left", self.remaining()),
            });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_and_big_endian_and_refuses_to_run_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3, 4, 0xfc, 0x10, 0x00, 9], 100);
        assert_eq!(r.uint(2, "a").unwrap(), 0x0201);
        assert_eq!(r.uint_be(2, "b").unwrap(), 0x0304);
        assert_eq!(r.lenenc("c").unwrap(), 16);
        let e = r.take(2, "tail").unwrap_err();
        assert_eq!(e.offset, 107);
        assert!(e.to_string().contains("tail: needs 2 bytes, 1 left"), "{e}");
        let mut r = Reader::new(&[0xfe, 1, 0, 0, 0, 0, 0, 0], 0);
        assert!(r.lenenc("x").is_err(), "an 8-byte integer with 7 bytes left");
        let mut r = Reader::new(&[200, 1, 2], 0);
        assert!(r.lenenc_len("count").unwrap_err().to_string().contains("exceeds"));
    }
}
