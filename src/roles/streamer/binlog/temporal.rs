//! DATE, TIME, DATETIME, TIMESTAMP and YEAR in both binlog layouts: the old
//! ones (before MySQL 5.6.4) and the `2` ones with fractional seconds.
//! DATETIME and TIME render as written (no zone); TIMESTAMP, stored as UTC
//! seconds, renders as UTC with a `Z`.

use super::DecodeError;
use super::reader::Reader;

/// The fractional part of a `2` type: ⌈fsp/2⌉ big-endian bytes.
fn fraction(r: &mut Reader<'_>, fsp: u16) -> Result<(u32, usize), DecodeError> {
    if fsp > 6 {
        return Err(r.error(format!("fractional seconds precision {fsp} (at most 6)")));
    }
    let n = (fsp as usize).div_ceil(2);
    let v = r.uint_be(n, "fractional seconds")? as u32;
    // Scale to microseconds.
    let micros = match n {
        0 => 0,
        1 => v * 10_000,
        2 => v * 100,
        _ => v,
    };
    Ok((micros, fsp as usize))
}

fn with_fraction(base: String, micros: u32, fsp: usize) -> String {
    if fsp == 0 {
        return base;
    }
    let digits = format!("{micros:06}");
    format!("{base}.{}", &digits[..fsp])
}

pub fn date(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let v = r.uint(3, "DATE")?;
    Ok(format!("{:04}-{:02}-{:02}", v >> 9, (v >> 5) & 15, v & 31))
}

pub fn year(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    let v = u32::from(r.u8("YEAR")?);
    Ok(if v == 0 { 0 } else { 1900 + v })
}

pub fn datetime2(r: &mut Reader<'_>, fsp: u16) -> Result<String, DecodeError> {
    let packed = r.uint_be(5, "DATETIME")?;
    let int_part = packed.wrapping_sub(0x80_0000_0000) & 0x7f_ffff_ffff;
    let (ymd, hms) = (int_part >> 17, int_part % (1 << 17));
    let ym = ymd >> 5;
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        ym / 13,
        ym % 13,
        ymd % 32,
        hms >> 12,
        (hms >> 6) % 64,
        hms % 64
    );
    let (micros, fsp) = fraction(r, fsp)?;
    Ok(with_fraction(base, micros, fsp))
}

pub fn timestamp2(r: &mut Reader<'_>, fsp: u16) -> Result<String, DecodeError> {
    let secs = r.uint_be(4, "TIMESTAMP")?;
    let (micros, fsp) = fraction(r, fsp)?;
    Ok(format!("{}Z", with_fraction(utc(secs), micros, fsp)))
}

pub fn timestamp(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    Ok(format!("{}Z", utc(u64::from(r.u32("TIMESTAMP")?))))
}

pub fn datetime(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let v = r.u64("DATETIME")?;
    let (d, t) = (v / 1_000_000, v % 1_000_000);
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        d / 10_000,
        (d / 100) % 100,
        d % 100,
        t / 10_000,
        (t / 100) % 100,
        t % 100
    ))
}

pub fn time(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let raw = r.uint(3, "TIME")? as u32;
    // A signed 24-bit HHMMSS.
    let v = ((raw << 8) as i32) >> 8;
    let (sign, v) = (if v < 0 { "-" } else { "" }, v.unsigned_abs());
    Ok(format!("{sign}{:02}:{:02}:{:02}", v / 10_000, (v / 100) % 100, v % 100))
}

/// TIME2: a 24-bit biased integer part, then a fraction whose encoding
/// depends on the precision (MySQL's my_time_packed_from_binary).
pub fn time2(r: &mut Reader<'_>, fsp: u16) -> Result<String, DecodeError> {
    if fsp > 6 {
        return Err(r.error(format!("fractional seconds precision {fsp} (at most 6)")));
    }
    let packed: i64 = match fsp {
        0 => (r.uint_be(3, "TIME")? as i64 - 0x80_0000) << 24,
        1 | 2 => {
            let mut int_part = r.uint_be(3, "TIME")? as i64 - 0x80_0000;
            let mut frac = i64::from(r.u8("TIME fraction")? as i8);
            if int_part < 0 && frac != 0 {
                int_part += 1;
                frac -= 0x100;
            }
            (int_part << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int_part = r.uint_be(3, "TIME")? as i64 - 0x80_0000;
            let mut frac = r.uint_be(2, "TIME fraction")? as i64;
            if int_part < 0 && frac != 0 {
                int_part += 1;
                frac -= 0x10000;
            }
            (int_part << 24) + frac * 100
        }
        _ => r.uint_be(6, "TIME")? as i64 - 0x8000_0000_0000,
    };
    let sign = if packed < 0 { "-" } else { "" };
    let p = packed.unsigned_abs();
    let (hms, micros) = (p >> 24, (p % (1 << 24)) as u32);
    let base = format!("{sign}{:02}:{:02}:{:02}", (hms >> 12) % (1 << 10), (hms >> 6) % 64, hms % 64);
    Ok(with_fraction(base, micros, fsp as usize))
}

/// Seconds since the epoch as a UTC civil date and time.
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, (rem / 60) % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_render_as_utc_civil_time() {
        assert_eq!(utc(0), "1970-01-01T00:00:00");
        assert_eq!(utc(1_709_212_455), "2024-02-29T13:14:15");
        assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59");
    }

    #[test]
    fn negative_times_with_fractions_borrow_from_the_integer_part() {
        // -00:00:00.5 at fsp 1: MySQL writes int 0x7fffff+1 … check the
        // round trip of the layout's arithmetic on a known value.
        let enc = |packed: i64| -> Vec<u8> { ((packed + 0x8000_0000_0000) as u64).to_be_bytes()[2..].to_vec() };
        let hms = |h: i64, m: i64, s: i64| ((h << 12) | (m << 6) | s) << 24;
        let v = -(hms(838, 59, 59));
        assert_eq!(time2(&mut Reader::new(&enc(v), 0), 6).unwrap(), "-838:59:59.000000");
        let v = hms(12, 34, 56) + 789_000;
        assert_eq!(time2(&mut Reader::new(&enc(v), 0), 6).unwrap(), "12:34:56.789000");
    }
}
