//! The InfluxDB line protocol, as Telegraf and InfluxDB 1.x/2.x clients
//! write it:
//!
//! ```text
//! measurement[,tag=value…] field=value[,field=value…] [timestamp]
//! ```
//!
//! Escapes follow the spec: in measurements, `\,` and `\ `; in tag keys,
//! tag values and field keys, also `\=`; in string field values, `\"` and
//! `\\`. Field values are floats (`1`, `-1.5e3`), integers (`1i`), unsigned
//! integers (`1u`), booleans (`t`, `true`, `F`, …) or strings (`"…"`, kept so
//! the caller can reject them by name). A body is parsed line by line: good
//! lines are returned even when others fail, and each failure names its line
//! and column, as InfluxDB reports them.

use thiserror::Error;

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    /// Tags sorted by key, as a series key needs them.
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    /// In the body's precision; None when the line has no timestamp.
    pub timestamp: Option<i64>,
}

/// Why one line was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {column}: {message}")]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    /// 1-based byte column in that line.
    pub column: usize,
    pub message: String,
}

/// Limits against hostile input; a line over them is refused, not parsed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_tags: usize,
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_line_bytes: 64 * 1024, max_tags: 64, max_fields: 256 }
    }
}

/// Parses a whole body into (1-based line number, point) pairs and errors.
/// Blank lines and `#` comments are skipped.
pub fn parse(body: &[u8], limits: &Limits) -> (Vec<(usize, Point)>, Vec<LineError>) {
    let mut points = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        match parse_one(raw, i + 1, limits) {
            Some(Ok(p)) => points.push((i + 1, p)),
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    (points, errors)
}

/// Parses one line (without its `\n`); None for a blank line or a comment.
pub fn parse_one(raw: &[u8], number: usize, limits: &Limits) -> Option<Result<Point, LineError>> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let trimmed_start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    let line = &raw[trimmed_start..];
    if line.is_empty() || line[0] == b'#' {
        return None;
    }
    let fail = |column: usize, message: String| LineError { line: number, column: column + trimmed_start + 1, message };
    if raw.len() > limits.max_line_bytes {
        return Some(Err(fail(
            0,
            format!("line is {} bytes, over the {}-byte limit", raw.len(), limits.max_line_bytes),
        )));
    }
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => return Some(Err(fail(e.valid_up_to(), "not valid UTF-8".into()))),
    };
    Some(parse_line(text, limits).map_err(|(col, msg)| fail(col, msg)))
}

type LineResult<T> = Result<T, (usize, String)>;

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Reads up to an unescaped byte in `stops`, unescaping `escapable`.
    fn token(&mut self, stops: &[u8], escapable: &[u8]) -> String {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            if b == b'\\' {
                match self.s.get(self.pos + 1) {
                    Some(&next) if escapable.contains(&next) => {
                        out.push(next);
                        self.pos += 2;
                    }
                    _ => {
                        out.push(b);
                        self.pos += 1;
                    }
                }
                continue;
            }
            if stops.contains(&b) {
                break;
            }
            out.push(b);
            self.pos += 1;
        }
        // Escapes only remove ASCII bytes, so the text stays UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    fn expect(&mut self, b: u8, what: &str) -> LineResult<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err((self.pos, format!("expected {what}")))
        }
    }
}

fn parse_line(line: &str, limits: &Limits) -> LineResult<Point> {
    let mut c = Cursor { s: line.as_bytes(), pos: 0 };
    let measurement = c.token(b", ", b", ");
    if measurement.is_empty() {
        return Err((0, "missing measurement".into()));
    }
    let mut tags = Vec::new();
    while c.peek() == Some(b',') {
        c.pos += 1;
        let at = c.pos;
        let key = c.token(b"=, ", b",= ");
        c.expect(b'=', "`=` after the tag key")?;
        let value = c.token(b", ", b",= ");
        if key.is_empty() || value.is_empty() {
            return Err((at, "tag key and value must not be empty".into()));
        }
        tags.push((key, value));
        if tags.len() > limits.max_tags {
            return Err((at, format!("more than {} tags", limits.max_tags)));
        }
    }
    c.expect(b' ', "a space before the fields")?;
    let mut fields = Vec::new();
    loop {
        let at = c.pos;
        let key = c.token(b"= ,", b",= ");
        if key.is_empty() {
            return Err((at, "missing field key".into()));
        }
        c.expect(b'=', "`=` after the field key")?;
        let value = field_value(&mut c)?;
        fields.push((key, value));
        if fields.len() > limits.max_fields {
            return Err((at, format!("more than {} fields", limits.max_fields)));
        }
        match c.peek() {
            Some(b',') => c.pos += 1,
            _ => break,
        }
    }
    let timestamp = match c.peek() {
        None => None,
        Some(b' ') => {
            c.pos += 1;
            let at = c.pos;
            let rest = line[c.pos..].trim_end();
            if rest.is_empty() {
                None
            } else {
                Some(rest.parse::<i64>().map_err(|_| (at, format!("invalid timestamp `{}`", clip(rest))))?)
            }
        }
        Some(_) => return Err((c.pos, "expected a space or the end of the line after the fields".into())),
    };
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err((0, format!("tag `{}` appears twice", w[0].0)));
    }
    Ok(Point { measurement, tags, fields, timestamp })
}

fn field_value(c: &mut Cursor<'_>) -> LineResult<FieldValue> {
    let at = c.pos;
    if c.peek() == Some(b'"') {
        c.pos += 1;
        let mut out = Vec::new();
        loop {
            match c.peek() {
                None => return Err((at, "unterminated string field value".into())),
                Some(b'\\') if matches!(c.s.get(c.pos + 1), Some(b'"') | Some(b'\\')) => {
                    out.push(c.s[c.pos + 1]);
                    c.pos += 2;
                }
                Some(b'"') => {
                    c.pos += 1;
                    break;
                }
                Some(b) => {
                    out.push(b);
                    c.pos += 1;
                }
            }
        }
        return Ok(FieldValue::Str(String::from_utf8(out).unwrap_or_default()));
    }
    let start = c.pos;
    while let Some(b) = c.peek() {
        if b == b',' || b == b' ' {
            break;
        }
        c.pos += 1;
    }
    let raw = std::str::from_utf8(&c.s[start..c.pos]).unwrap_or("");
    parse_scalar(raw).ok_or_else(|| (at, format!("invalid field value `{}`", clip(raw))))
}

/// A field value other than a string: bool, `i`/`u` integer or float.
pub fn parse_scalar(raw: &str) -> Option<FieldValue> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(FieldValue::Bool(false)),
        _ => {}
    }
    if let Some(i) = raw.strip_suffix('i') {
        return i.parse().ok().map(FieldValue::Int);
    }
    if let Some(u) = raw.strip_suffix('u') {
        return u.parse().ok().map(FieldValue::UInt);
    }
    // Rust also accepts "inf" and "NaN"; the line protocol does not.
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
        return None;
    }
    raw.parse::<f64>().ok().filter(|f| f.is_finite()).map(FieldValue::Float)
}

/// Shortens user input quoted in an error message.
fn clip(s: &str) -> String {
    if s.len() <= 40 {
        return s.to_owned();
    }
    let end = s.floor_char_boundary(40);
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn one(line: &str) -> Point {
        let (mut p, e) = parse(line.as_bytes(), &Limits::default());
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.len(), 1);
        p.remove(0).1
    }

    #[test]
    fn a_full_line() {
        let p = one("cpu,host=a,region=eu usage_idle=99.5,cores=8i,hz=2400u,up=true 1700000000000000000");
        assert_eq!(p.measurement, "cpu");
        assert_eq!(p.tags, vec![("host".into(), "a".into()), ("region".into(), "eu".into())]);
        assert_eq!(
            p.fields,
            vec![
                ("usage_idle".into(), FieldValue::Float(99.5)),
                ("cores".into(), FieldValue::Int(8)),
                ("hz".into(), FieldValue::UInt(2400)),
                ("up".into(), FieldValue::Bool(true)),
            ]
        );
        assert_eq!(p.timestamp, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn tags_are_sorted_and_timestamps_optional() {
        let p = one("m,z=1,a=2 v=1");
        assert_eq!(p.tags[0].0, "a");
        assert_eq!(p.timestamp, None);
        assert_eq!(one("m v=-1.5e3 -42").timestamp, Some(-42));
    }

    #[test]
    fn escapes_follow_the_spec() {
        let p = one(r#"my\ meas\,ure,tag\ key=tag\,val\=ue field\=key="quoted \"string\" \\ here" 1"#);
        assert_eq!(p.measurement, "my meas,ure");
        assert_eq!(p.tags, vec![("tag key".into(), "tag,val=ue".into())]);
        assert_eq!(p.fields, vec![("field=key".into(), FieldValue::Str(r#"quoted "string" \ here"#.into()))]);
        // A backslash before anything else is kept.
        assert_eq!(one(r"m\x v=1").measurement, r"m\x");
    }

    #[test]
    fn good_lines_survive_bad_ones_and_errors_name_line_and_column() {
        let body = b"ok v=1 1\n\n# comment\nbad v=oops 2\nok2 v=2 3\nm,t= v=1\nm v=1 12x\n";
        let (points, errors) = parse(body, &Limits::default());
        assert_eq!(points.len(), 2);
        let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, vec![(4, 7), (6, 3), (7, 7)], "{errors:?}");
        assert!(errors[0].message.contains("invalid field value `oops`"));
        assert!(errors[2].message.contains("invalid timestamp"));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "m",
            "m ",
            "m v",
            "m v=",
            "m =1",
            ",t=1 v=1",
            "m v=1i2",
            "m v=inf",
            "m v=NaN",
            "m v=\"open",
            "m,t=1,t=2 v=1",
            "m v=1 1 2",
            "m v=99999999999999999999i",
        ] {
            let (p, e) = parse(bad.as_bytes(), &Limits::default());
            assert!(p.is_empty() && e.len() == 1, "{bad:?} gave {p:?} {e:?}");
        }
    }

    #[test]
    fn hostile_sizes_are_refused_by_limits() {
        let limits = Limits { max_line_bytes: 100, max_tags: 2, max_fields: 2 };
        let long = format!("m v={}", "1".repeat(200));
        for bad in [long.as_str(), "m,a=1,b=2,c=3 v=1", "m a=1,b=2,c=3"] {
            let (p, e) = parse(bad.as_bytes(), &limits);
            assert!(p.is_empty() && e.len() == 1, "{bad:?}");
        }
        let (_, e) = parse(b"m,t=\xff\xfe v=1", &Limits::default());
        assert!(e[0].message.contains("UTF-8"), "{e:?}");
    }

    #[test]
    fn crlf_and_leading_space_are_tolerated() {
        let (p, e) = parse(b"  m v=1 5\r\nn v=2\r\n", &Limits::default());
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1.timestamp, Some(5));
        assert_eq!(p[1].0, 2);
    }

    fn escape(s: &str, specials: &[char]) -> String {
        s.chars().fold(String::new(), |mut out, c| {
            if specials.contains(&c) {
                out.push('\\');
            }
            out.push(c);
            out
        })
    }

    proptest! {
        #[test]
        fn written_lines_parse_back(
            m in "[a-z][a-z ,]{0,10}",
            tags in prop::collection::btree_map("[a-z][a-z =,]{0,6}", "[a-z0-9 =,]{1,6}", 0..4),
            v in -1e12f64..1e12,
            i in any::<i64>(),
            s in "[a-z\"\\\\ ,=]{0,10}",
            t in any::<i64>(),
        ) {
            let mut line = escape(&m, &[',', ' ']);
            for (k, val) in &tags {
                line.push_str(&format!(",{}={}", escape(k, &[',', '=', ' ']), escape(val, &[',', '=', ' '])));
            }
            line.push_str(&format!(" f={v:?},n={i}i,s=\"{}\" {t}", escape(&s, &['"', '\\'])));
            let p = one(&line);
            prop_assert_eq!(p.measurement, m);
            prop_assert_eq!(p.tags, tags.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(p.fields, vec![
                ("f".into(), FieldValue::Float(v)),
                ("n".into(), FieldValue::Int(i)),
                ("s".into(), FieldValue::Str(s)),
            ]);
            prop_assert_eq!(p.timestamp, Some(t));
        }

        #[test]
        fn any_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let (points, errors) = parse(&body, &Limits::default());
            let lines = body.split(|&b| b == b'\n').count();
            prop_assert!(points.len() + errors.len() <= lines);
        }
    }
}
