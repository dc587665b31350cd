//! DECIMAL's packed binary form: sign in the top bit, then groups of nine
//! decimal digits in four big-endian bytes, shorter groups at the edges, and
//! every byte inverted for negative numbers. Rendered as a decimal string so
//! no precision is lost (Debezium's `decimal.handling.mode=string`).

use super::DecodeError;
use super::reader::Reader;

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

pub fn decode(r: &mut Reader<'_>, precision: u8, scale: u8) -> Result<String, DecodeError> {
    if precision == 0 || precision > 65 || scale > 30 || scale > precision {
        return Err(r.error(format!("DECIMAL({precision},{scale}) is not a valid type")));
    }
    let (intg, frac) = (usize::from(precision - scale), usize::from(scale));
    let (intg0, intg0x, frac0, frac0x) = (intg / 9, intg % 9, frac / 9, frac % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let mut bytes = r.take(size, "DECIMAL value")?.to_vec();
    let negative = bytes[0] & 0x80 == 0;
    bytes[0] ^= 0x80;
    if negative {
        for b in &mut bytes {
            *b = !*b;
        }
    }
    let mut d = Reader::new(&bytes, 0);
    let mut int_part = String::new();
    let push = |s: &mut String, v: u64, width: usize| {
        if s.is_empty() {
            if v != 0 {
                s.push_str(&v.to_string());
            }
        } else {
            s.push_str(&format!("{v:0width$}"));
        }
    };
    if intg0x > 0 {
        let v = d.uint_be(DIG2BYTES[intg0x], "DECIMAL digits")?;
        push(&mut int_part, v, intg0x);
    }
    for _ in 0..intg0 {
        let v = d.uint_be(4, "DECIMAL digits")?;
        push(&mut int_part, v, 9);
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac_part = String::new();
    for _ in 0..frac0 {
        frac_part.push_str(&format!("{:09}", d.uint_be(4, "DECIMAL fraction")?));
    }
    if frac0x > 0 {
        let v = d.uint_be(DIG2BYTES[frac0x], "DECIMAL fraction")?;
        frac_part.push_str(&format!("{v:0frac0x$}"));
    }
    let sign = if negative { "-" } else { "" };
    Ok(match frac_part.is_empty() {
        true => format!("{sign}{int_part}"),
        false => format!("{sign}{int_part}.{frac_part}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], p: u8, s: u8) -> String {
        decode(&mut Reader::new(bytes, 0), p, s).unwrap()
    }

    #[test]
    fn packed_decimals_read_as_mysql_writes_them() {
        // MySQL's own example (decimal.c): 1234567890.1234 as DECIMAL(14,4).
        assert_eq!(dec(&[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2], 14, 4), "1234567890.1234");
        // And its negation: every byte inverted.
        assert_eq!(dec(&[0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D], 14, 4), "-1234567890.1234");
        assert_eq!(dec(&[0x80, 0x00, 0x00, 0x00, 0x00], 10, 2), "0.00");
        assert!(decode(&mut Reader::new(&[0x80], 0), 10, 2).is_err(), "truncated");
        assert!(decode(&mut Reader::new(&[0x80; 8], 0), 0, 0).is_err(), "DECIMAL(0,0)");
    }
}
