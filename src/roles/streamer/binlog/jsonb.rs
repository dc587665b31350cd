//! MySQL's binary JSON (the JSON column type in MySQL 5.7+; MariaDB stores
//! JSON as text): objects and arrays with offset tables in a small (2-byte)
//! or large (4-byte) layout, scalars inline or at an offset. Nesting is
//! bounded so hostile input cannot recurse the stack away.

use serde_json::{Map, Number, Value};

use super::DecodeError;

const MAX_DEPTH: usize = 100;

pub fn decode(data: &[u8], at: usize) -> Result<Value, DecodeError> {
    if data.is_empty() {
        return Ok(Value::Null);
    }
    Doc { data, at }.value(data[0], 1, 0)
}

struct Doc<'a> {
    data: &'a [u8],
    at: usize,
}

impl Doc<'_> {
    fn err(&self, pos: usize, what: impl Into<String>) -> DecodeError {
        DecodeError { offset: self.at + pos, what: format!("JSON: {}", what.into()) }
    }

    fn bytes(&self, pos: usize, n: usize) -> Result<&[u8], DecodeError> {
        pos.checked_add(n)
            .and_then(|end| self.data.get(pos..end))
            .ok_or_else(|| self.err(pos, format!("needs {n} bytes past the end")))
    }

    fn uint(&self, pos: usize, n: usize) -> Result<u64, DecodeError> {
        Ok(self.bytes(pos, n)?.iter().rev().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }

    /// A variable-length length: 7 bits per byte, at most 5 bytes.
    fn varlen(&self, mut pos: usize) -> Result<(usize, usize), DecodeError> {
        let mut len = 0usize;
        for i in 0..5 {
            let b = self.bytes(pos, 1)?[0];
            len |= usize::from(b & 0x7f) << (7 * i);
            pos += 1;
            if b & 0x80 == 0 {
                return Ok((len, pos));
            }
        }
        Err(self.err(pos, "length longer than 5 bytes"))
    }

    fn value(&self, ty: u8, pos: usize, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err(pos, format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(match ty {
            0x00 | 0x01 => self.container(pos, ty == 0x01, true, depth)?,
            0x02 | 0x03 => self.container(pos, ty == 0x03, false, depth)?,
            0x04 => match self.bytes(pos, 1)?[0] {
                0 => Value::Null,
                1 => Value::Bool(true),
                2 => Value::Bool(false),
                n => return Err(self.err(pos, format!("literal {n}"))),
            },
            0x05 => Value::from(self.uint(pos, 2)? as u16 as i16),
            0x06 => Value::from(self.uint(pos, 2)? as u16),
            0x07 => Value::from(self.uint(pos, 4)? as u32 as i32),
            0x08 => Value::from(self.uint(pos, 4)? as u32),
            0x09 => Value::from(self.uint(pos, 8)? as i64),
            0x0a => Value::from(self.uint(pos, 8)?),
            0x0b => {
                let f = f64::from_bits(self.uint(pos, 8)?);
                Number::from_f64(f).map(Value::Number).ok_or_else(|| self.err(pos, "a non-finite double"))?
            }
            0x0c => {
                let (len, start) = self.varlen(pos)?;
                Value::String(String::from_utf8_lossy(self.bytes(start, len)?).into_owned())
            }
            // Opaque: a MySQL type byte, then bytes (dates, decimals, …), as text.
            0x0f => {
                self.bytes(pos, 1)?;
                let (len, start) = self.varlen(pos + 1)?;
                Value::String(String::from_utf8_lossy(self.bytes(start, len)?).into_owned())
            }
            t => return Err(self.err(pos.saturating_sub(1), format!("value type 0x{t:02x}"))),
        })
    }

    fn container(&self, base: usize, large: bool, object: bool, depth: usize) -> Result<Value, DecodeError> {
        let w = if large { 4 } else { 2 };
        let count = self.uint(base, w)? as usize;
        let size = self.uint(base + w, w)? as usize;
        if base.checked_add(size).is_none_or(|end| end > self.data.len()) {
            return Err(self.err(base, format!("container of {size} bytes past the end")));
        }
        // Each element needs at least a value entry (and a key entry).
        if count > size {
            return Err(self.err(base, format!("{count} elements in {size} bytes")));
        }
        let header = base + 2 * w;
        let keys_len = if object { count * (w + 2) } else { 0 };
        let mut map = Map::new();
        let mut items = Vec::with_capacity(if object { 0 } else { count });
        for i in 0..count {
            let entry = header + keys_len + i * (1 + w);
            let ty = self.bytes(entry, 1)?[0];
            let inline = matches!(ty, 0x04..=0x06) || (large && matches!(ty, 0x07 | 0x08));
            let v = if inline {
                self.value(ty, entry + 1, depth + 1)?
            } else {
                let off = self.uint(entry + 1, w)? as usize;
                if off >= size {
                    return Err(self.err(entry, format!("value offset {off} outside its {size}-byte container")));
                }
                self.value(ty, base + off, depth + 1)?
            };
            if object {
                let k = header + i * (w + 2);
                let (off, len) = (self.uint(k, w)? as usize, self.uint(k + w, 2)? as usize);
                let key = String::from_utf8_lossy(self.bytes(base + off, len)?).into_owned();
                map.insert(key, v);
            } else {
                items.push(v);
            }
        }
        Ok(if object { Value::Object(map) } else { Value::Array(items) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_arrays_and_scalars_decode_and_garbage_is_refused() {
        // {"a": [1, "xy", true]} in the small layout, built by hand:
        // object: count 1, size, key entry (off, len), value entry (array, off)
        let array = {
            // count 3, size, entries: int16 1 inline, string at off, literal true inline
            let mut a = vec![3, 0, 0, 0];
            a.extend([0x05, 1, 0]); // int16 1
            a.extend([0x0c, 13, 0]); // string at offset 13
            a.extend([0x04, 1, 0]); // true
            a.extend([2, b'x', b'y']);
            let size = a.len() as u8;
            a[2] = size;
            a
        };
        let mut obj = vec![1, 0, 0, 0];
        obj.extend([11, 0, 1, 0]); // key at 11, length 1
        obj.extend([0x02, 12, 0]); // array at 12
        obj.push(b'a');
        obj.extend(&array);
        let size = obj.len() as u8;
        obj[2] = size;
        let mut doc = vec![0x00];
        doc.extend(&obj);
        assert_eq!(decode(&doc, 0).unwrap(), serde_json::json!({"a": [1, "xy", true]}));
        assert_eq!(decode(&[], 0).unwrap(), Value::Null);
        assert!(decode(&[0x00, 200, 0, 4, 0], 0).is_err(), "count past the size");
        assert!(decode(&[0x0c, 0xff, 0xff, 0xff, 0xff, 0xff], 0).is_err(), "runaway length");
        // Arrays nested past the bound.
        let mut deep = Vec::new();
        for _ in 0..150 {
            deep.extend([0x02, 1, 0, 7, 0, 0x02, 0, 0]);
        }
        assert!(decode(&deep, 0).is_err());
    }
}
