//! One column value of a row image, as JSON in the representation Debezium
//! uses with `decimal.handling.mode=string` and ISO-8601 temporal strings:
//! integers as numbers (unsigned where the column is), DECIMAL as a string,
//! DATE/TIME/DATETIME as written and TIMESTAMP in UTC, YEAR as a number,
//! character data as text, binary data (the binary collation, or bytes that
//! are not UTF-8) as base64, ENUM as its label, SET as comma-joined labels,
//! BIT as an unsigned number, JSON as its text, GEOMETRY as
//! `{"srid": n, "wkb": base64}`.

use base64::Engine as _;
pub use serde_json::Value;
use serde_json::json;

use super::reader::Reader;
use super::table_map::{BINARY_COLLATION, Column, ty};
use super::{DecodeError, decimal, jsonb, temporal};

/// Largest BLOB/TEXT value accepted (the protocol's 4-byte length allows 4 GiB).
const MAX_BLOB: u64 = 1 << 30;

pub fn decode(r: &mut Reader<'_>, c: &Column) -> Result<Value, DecodeError> {
    let unsigned = c.unsigned.unwrap_or(false);
    Ok(match c.ty {
        ty::TINY => int(r.uint(1, "TINYINT")?, 1, unsigned),
        ty::SHORT => int(r.uint(2, "SMALLINT")?, 2, unsigned),
        ty::INT24 => int(r.uint(3, "MEDIUMINT")?, 3, unsigned),
        ty::LONG => int(r.uint(4, "INT")?, 4, unsigned),
        ty::LONGLONG => int(r.uint(8, "BIGINT")?, 8, unsigned),
        ty::FLOAT => float(f64::from(f32::from_bits(r.u32("FLOAT")?))),
        ty::DOUBLE => float(f64::from_bits(r.u64("DOUBLE")?)),
        ty::NEWDECIMAL => Value::String(decimal::decode(r, (c.meta >> 8) as u8, c.meta as u8)?),
        ty::YEAR => Value::from(temporal::year(r)?),
        ty::DATE | ty::NEWDATE => Value::String(temporal::date(r)?),
        ty::TIME => Value::String(temporal::time(r)?),
        ty::TIME2 => Value::String(temporal::time2(r, c.meta)?),
        ty::DATETIME => Value::String(temporal::datetime(r)?),
        ty::DATETIME2 => Value::String(temporal::datetime2(r, c.meta)?),
        ty::TIMESTAMP => Value::String(temporal::timestamp(r)?),
        ty::TIMESTAMP2 => Value::String(temporal::timestamp2(r, c.meta)?),
        ty::VARCHAR | ty::VAR_STRING => {
            let n = if c.meta < 256 { 1 } else { 2 };
            let len = r.uint(n, "VARCHAR length")? as usize;
            text(r.take(len, "VARCHAR")?, c)
        }
        ty::STRING => {
            let n = if c.meta < 256 { 1 } else { 2 };
            let len = r.uint(n, "CHAR length")? as usize;
            fixed(r.take(len, "CHAR")?, c)
        }
        ty::ENUM => {
            let i = r.uint(usize::from(c.meta).clamp(1, 2), "ENUM index")? as usize;
            match (&c.enum_values, i) {
                (_, 0) => Value::String(String::new()),
                (Some(values), i) => values.get(i - 1).map_or(Value::from(i), |v| Value::String(v.clone())),
                (None, i) => Value::from(i),
            }
        }
        ty::SET => {
            let bits = r.uint(usize::from(c.meta).clamp(1, 8), "SET bits")?;
            match &c.set_values {
                Some(values) => Value::String(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| bits >> i & 1 == 1)
                        .map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                None => Value::from(bits),
            }
        }
        ty::BIT => {
            let bits = usize::from(c.meta & 0xff) * 8 + usize::from(c.meta >> 8);
            Value::from(r.uint_be(bits.div_ceil(8).clamp(1, 8), "BIT")?)
        }
        ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => text(blob(r, c, "BLOB")?, c),
        ty::JSON => {
            let at = r.offset();
            let data = blob(r, c, "JSON")?;
            Value::String(jsonb::decode(data, at)?.to_string())
        }
        ty::GEOMETRY => {
            let data = blob(r, c, "GEOMETRY")?;
            let Some((srid, wkb)) = data.split_first_chunk::<4>() else {
                return Err(r.error(format!("GEOMETRY of {} bytes has no SRID", data.len())));
            };
            json!({"srid": u32::from_le_bytes(*srid), "wkb": base64::engine::general_purpose::STANDARD.encode(wkb)})
        }
        ty::NULL => Value::Null,
        t => {
            return Err(r.error(format!(
                "column {} has type {} ({t}), which this decoder does not read",
                c.name.as_deref().unwrap_or("?"),
                ty::name(t)
            )));
        }
    })
}

fn blob<'a>(r: &mut Reader<'a>, c: &Column, what: &str) -> Result<&'a [u8], DecodeError> {
    let n = usize::from(c.meta).clamp(1, 4);
    let len = r.uint(n, what)?;
    if len > MAX_BLOB {
        return Err(r.error(format!("{what} of {len} bytes")));
    }
    r.take(len as usize, what)
}

fn int(raw: u64, bytes: u32, unsigned: bool) -> Value {
    if unsigned {
        return Value::from(raw);
    }
    let shift = 64 - 8 * bytes;
    Value::from(((raw << shift) as i64) >> shift)
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// CHAR and BINARY: the binlog drops trailing pad bytes, which BINARY(n)
/// gives back as zeros (as a SELECT shows it); MariaDB's UUID, INET6 and
/// INET4 are fixed bytes shown as their text forms.
fn fixed(stored: &[u8], c: &Column) -> Value {
    if c.collation != Some(BINARY_COLLATION) {
        return text(stored, c);
    }
    let mut b = stored.to_vec();
    b.resize(b.len().max(usize::from(c.meta)), 0);
    match (c.declared.as_deref(), b.len()) {
        (Some("uuid"), 16) => {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::String(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
        }
        (Some("inet6"), 16) => {
            let a: [u8; 16] = b.as_slice().try_into().expect("16 bytes");
            Value::String(std::net::Ipv6Addr::from(a).to_string())
        }
        (Some("inet4"), 4) => Value::String(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
        _ => text(&b, c),
    }
}

/// Text where the column holds characters, base64 where it holds bytes.
fn text(bytes: &[u8], c: &Column) -> Value {
    if c.collation != Some(BINARY_COLLATION)
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        return Value::String(s.to_owned());
    }
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sign_extend_unless_the_column_is_unsigned() {
        assert_eq!(int(0xff, 1, false), Value::from(-1));
        assert_eq!(int(0xff, 1, true), Value::from(255));
        assert_eq!(int(0x80_0000, 3, false), Value::from(-8_388_608));
        assert_eq!(int(u64::MAX, 8, true), Value::from(u64::MAX));
    }
}
