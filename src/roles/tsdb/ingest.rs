//! Line protocol to samples: `measurement,tags field=value` becomes the
//! series `measurement_field{tags}` (the Telegraf/VictoriaMetrics mapping),
//! names made Prometheus-safe, timestamps converted to milliseconds.
//!
//! The hot path never builds label sets: the raw bytes of a line's series
//! key and field name map to a series id in a cache (`KeyCache`), so a line
//! of a known series costs a split, a hash lookup and a number parse. A
//! line the cache does not know, or one with escapes or strings, takes the
//! full parser and fills the cache for the next time.

use std::collections::HashMap;
use std::sync::RwLock;

use super::lineproto::{self, FieldValue, LineError, Point};
use super::storage::labels::{Labels, METRIC_NAME, sanitize_name};
use super::storage::{AppendError, AppendOutcome, Incoming, Resolved, Storage};

/// Raw `series key` + ` ` + `field name` bytes → series id.
pub struct KeyCache {
    map: RwLock<HashMap<Box<[u8]>, u64, foldhash::fast::RandomState>>,
    max_entries: usize,
}

impl KeyCache {
    /// A cache of at most `max_entries` keys; past that it starts over, so
    /// memory stays bounded under churn.
    pub fn new(max_entries: usize) -> Self {
        Self { map: RwLock::new(HashMap::default()), max_entries }
    }

    fn insert(&self, entries: Vec<(Vec<u8>, u64)>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() + entries.len() > self.max_entries {
            map.clear();
        }
        map.extend(entries.into_iter().map(|(k, id)| (k.into_boxed_slice(), id)));
    }
}

/// A line split at its spaces.
struct Split<'a> {
    series: &'a [u8],
    fields: &'a [u8],
    ts: Option<&'a [u8]>,
}

/// Splits a line at its spaces; None when the line needs the full parser
/// (escapes, strings, leading blanks, comments).
fn split_line(line: &[u8]) -> Option<Split<'_>> {
    if line.first().is_none_or(|b| b.is_ascii_whitespace() || *b == b'#')
        || memchr::memchr2(b'\\', b'"', line).is_some()
    {
        return None;
    }
    let sp = memchr::memchr(b' ', line)?;
    let (key, rest) = (&line[..sp], &line[sp + 1..]);
    Some(match memchr::memchr(b' ', rest) {
        Some(p) => Split { series: key, fields: &rest[..p], ts: Some(&rest[p + 1..]) },
        None => Split { series: key, fields: rest, ts: None },
    })
}

/// The body's lines, split at `\n` as `split` would (a last empty one
/// included), found with a vectorized scan.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body).map(Some).chain(std::iter::once(None)).map(move |end| {
        let end = end.unwrap_or(body.len());
        let line = &body[start..end];
        start = end + 1;
        line
    })
}

/// A decimal integer as `str::parse::<i64>` reads one (an optional sign,
/// then digits), straight from the bytes.
fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = i64::from(c.wrapping_sub(b'0'));
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if neg { v.checked_sub(d)? } else { v.checked_add(d)? };
    }
    Some(v)
}

fn number(v: FieldValue) -> Option<f64> {
    match v {
        FieldValue::Float(f) => Some(f),
        FieldValue::Int(i) => Some(i as f64),
        FieldValue::UInt(u) => Some(u as f64),
        FieldValue::Bool(b) => Some(f64::from(u8::from(b))),
        FieldValue::Str(_) => None,
    }
}

/// The hot path for one line: true when every field's series was cached
/// and the samples were pushed; false leaves `out` as it was.
fn fast_line(
    line: &[u8],
    number_: usize,
    ctx: &LineCtx<'_>,
    cache: &HashMap<Box<[u8]>, u64, foldhash::fast::RandomState>,
    key: &mut Vec<u8>,
    out: &mut Vec<Resolved>,
) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > ctx.limits.max_line_bytes {
        return false;
    }
    let Some(Split { series, fields, ts }) = split_line(line) else { return false };
    let t = match ts {
        None => ctx.now_ms,
        Some(raw) => match parse_i64(raw).and_then(|t| ctx.precision.to_millis(t)) {
            Some(t) => t,
            None => return false,
        },
    };
    let start = out.len();
    for (n, field) in fields.split(|&b| b == b',').enumerate() {
        let sample = (|| {
            let eq = memchr::memchr(b'=', field).filter(|&eq| eq > 0 && n < ctx.limits.max_fields)?;
            key.clear();
            key.extend_from_slice(series);
            key.push(b' ');
            key.extend_from_slice(&field[..eq]);
            let id = *cache.get(key.as_slice())?;
            let v = number(lineproto::parse_scalar(std::str::from_utf8(&field[eq + 1..]).ok()?)?)?;
            Some(Resolved { id, t, v, line: number_ })
        })();
        match sample {
            Some(s) => out.push(s),
            None => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// What every line of one body shares.
struct LineCtx<'a> {
    precision: Precision,
    now_ms: i64,
    limits: &'a lineproto::Limits,
}

/// Parses a line-protocol body and appends it: the good lines are stored,
/// the bad ones come back as errors with their line numbers.
pub async fn write(
    storage: &Storage,
    cache: &KeyCache,
    body: &[u8],
    precision: Precision,
    now_ms: i64,
    limits: &lineproto::Limits,
) -> Result<(AppendOutcome, Vec<LineError>), AppendError> {
    let ctx = LineCtx { precision, now_ms, limits };
    let mut fast = Vec::new();
    let mut slow_lines = Vec::new();
    {
        let map = cache.map.read().unwrap_or_else(|p| p.into_inner());
        let mut key = Vec::with_capacity(256);
        for (i, raw) in lines(body).enumerate() {
            if raw.is_empty() || fast_line(raw, i + 1, &ctx, &map, &mut key, &mut fast) {
                continue;
            }
            slow_lines.push((i + 1, raw));
        }
    }
    let mut errors = Vec::new();
    let mut slow: Vec<Incoming> = Vec::new();
    // (index in `slow`, raw cache key) for lines the fast path can take next time.
    let mut learn: Vec<(usize, Vec<u8>)> = Vec::new();
    for (line, raw) in slow_lines {
        let point = match lineproto::parse_one(raw, line, limits) {
            None => continue,
            Some(Err(e)) => {
                errors.push(e);
                continue;
            }
            Some(Ok(p)) => p,
        };
        let start = slow.len();
        if let Err(message) = convert(point, line, precision, now_ms, &mut slow) {
            errors.push(LineError { line, column: 1, message });
            continue;
        }
        if let Some(Split { series, fields, .. }) = split_line(raw.strip_suffix(b"\r").unwrap_or(raw)) {
            let names: Vec<&[u8]> =
                fields.split(|&b| b == b',').filter_map(|f| f.split(|&b| b == b'=').next()).collect();
            if names.len() == slow.len() - start {
                for (k, name) in names.into_iter().enumerate() {
                    learn.push((start + k, [series, b" ", name].concat()));
                }
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    let mut resolved = fast;
    if !slow.is_empty() {
        let ids = storage.resolve(slow.iter().map(|s| &s.labels)).await?;
        cache.insert(learn.into_iter().map(|(i, key)| (key, ids[i])).collect());
        let from_slow = slow.iter().zip(ids).map(|(s, id)| Resolved { id, t: s.t, v: s.v, line: s.line });
        resolved.extend(from_slow);
        // Both runs are in line order; a stable sort keeps a body's order
        // for last-write-wins within it.
        resolved.sort_by_key(|r| r.line);
    }
    let outcome = storage.append_resolved(resolved, now_ms).await?;
    Ok((outcome, errors))
}

/// Timestamp unit of a write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanos,
    Micros,
    Millis,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// `/write` (v1) accepts n, ns, u, us, µ, ms, s, m, h; `/api/v2/write`
    /// accepts ns, us, ms, s. Absent: nanoseconds.
    pub fn parse(p: Option<&str>, v2: bool) -> Result<Precision, String> {
        Ok(match p {
            None | Some("ns") => Precision::Nanos,
            Some("n") if !v2 => Precision::Nanos,
            Some("us") => Precision::Micros,
            Some("u" | "µ") if !v2 => Precision::Micros,
            Some("ms") => Precision::Millis,
            Some("s") => Precision::Seconds,
            Some("m") if !v2 => Precision::Minutes,
            Some("h") if !v2 => Precision::Hours,
            Some(other) => return Err(format!("invalid precision `{other}`")),
        })
    }

    /// The timestamp in milliseconds, or None when it overflows.
    pub fn to_millis(self, t: i64) -> Option<i64> {
        match self {
            Precision::Nanos => Some(t.div_euclid(1_000_000)),
            Precision::Micros => Some(t.div_euclid(1_000)),
            Precision::Millis => Some(t),
            Precision::Seconds => t.checked_mul(1_000),
            Precision::Minutes => t.checked_mul(60_000),
            Precision::Hours => t.checked_mul(3_600_000),
        }
    }
}

fn convert(p: Point, line: usize, precision: Precision, now_ms: i64, out: &mut Vec<Incoming>) -> Result<(), String> {
    let t = match p.timestamp {
        Some(t) => {
            precision.to_millis(t).ok_or_else(|| format!("timestamp {t} overflows in precision {precision:?}"))?
        }
        None => now_ms,
    };
    let base: Vec<(String, String)> = p.tags.iter().map(|(k, v)| (sanitize_name(k, false), v.clone())).collect();
    if base.iter().any(|(k, _)| k == METRIC_NAME) {
        return Err("tag `__name__` is reserved".into());
    }
    let measurement = sanitize_name(&p.measurement, true);
    let start = out.len();
    for (field, value) in p.fields {
        let Some(v) = number(value) else {
            out.truncate(start);
            return Err(format!("field `{field}` is a string; tsdb stores numbers only"));
        };
        let name = format!("{measurement}_{}", sanitize_name(&field, true));
        let mut labels = base.clone();
        labels.push((METRIC_NAME.to_owned(), name));
        let labels = Labels::new(labels).map_err(|e| {
            out.truncate(start);
            e.to_string()
        })?;
        out.push(Incoming { labels, t, v, line });
    }
    Ok(())
}

/// The InfluxDB-style answer to a write: None for 204, else the message for
/// a 400 naming every failing line.
pub fn partial_write_message(parse_errors: &[LineError], outcome: &AppendOutcome) -> Option<String> {
    let mut problems: Vec<(usize, String)> =
        parse_errors.iter().map(|e| (e.line, format!("line {}, column {}: {}", e.line, e.column, e.message))).collect();
    problems.extend(outcome.rejected.iter().map(|(line, why)| (*line, format!("line {line}: {why}"))));
    if problems.is_empty() {
        return None;
    }
    problems.sort_by_key(|p| p.0);
    problems.dedup_by_key(|p| p.0);
    let shown: Vec<String> = problems.iter().take(20).map(|p| p.1.clone()).collect();
    let more = problems.len().saturating_sub(20);
    let lines: Vec<String> = problems.iter().map(|p| p.0.to_string()).collect();
    Some(format!(
        "partial write: {} line(s) refused (lines {}): {}{}",
        problems.len(),
        clip_list(&lines),
        shown.join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() }
    ))
}

fn clip_list(items: &[String]) -> String {
    if items.len() <= 50 { items.join(", ") } else { format!("{}, …", items[..50].join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_str_parse_does() {
        for s in [
            "0",
            "-0",
            "+7",
            "1795921665000",
            "-42",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "",
            "-",
            "+",
            "1e3",
            "12a",
            " 1",
            "1 ",
            "--1",
            "٣",
        ] {
            assert_eq!(parse_i64(s.as_bytes()), s.parse::<i64>().ok(), "{s:?}");
        }
    }

    #[test]
    fn lines_split_like_split_does() {
        for body in ["", "a", "a\n", "a\nb", "\n\n", "x y=1 2\r\n\nz w=2"] {
            let ours: Vec<&[u8]> = lines(body.as_bytes()).collect();
            let split: Vec<&[u8]> = body.as_bytes().split(|&b| b == b'\n').collect();
            assert_eq!(ours, split, "{body:?}");
        }
    }

    /// Parses a body into samples; per-line problems are returned with their
    /// line numbers, good lines are kept.
    fn samples(
        body: &[u8],
        precision: Precision,
        now_ms: i64,
        limits: &lineproto::Limits,
    ) -> (Vec<Incoming>, Vec<LineError>) {
        let (points, mut errors) = lineproto::parse(body, limits);
        let mut out = Vec::with_capacity(points.len());
        for (line, point) in points {
            if let Err(message) = convert(point, line, precision, now_ms, &mut out) {
                errors.push(LineError { line, column: 1, message });
            }
        }
        errors.sort_by_key(|e| e.line);
        (out, errors)
    }

    fn storage(dir: &tempfile::TempDir) -> Storage {
        use crate::core::store::{CORE_SCHEMA, SchemaOwner, Store, StoreOptions};
        let owners = [CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: crate::roles::tsdb::storage::MIGRATIONS }];
        let store = Store::open(&dir.path().join("s.redb"), &owners, &StoreOptions::default()).unwrap();
        let limits = crate::roles::tsdb::storage::Limits {
            out_of_order_ms: i64::MAX / 4,
            max_future_ms: i64::MAX / 4,
            max_series: 1000,
            max_series_per_metric: 1000,
        };
        Storage::open(store, limits).unwrap()
    }

    /// Every series' samples, by label text, values as bits.
    async fn contents(s: &Storage) -> Vec<(String, Vec<(i64, u64)>)> {
        let all = s.select(&[crate::roles::tsdb::storage::Matcher::regex("__name__", ".+", false).unwrap()]);
        let names: std::collections::HashMap<u64, String> = all.iter().map(|(id, l)| (*id, l.to_string())).collect();
        let mut out: Vec<(String, Vec<(i64, u64)>)> = s
            .read(all.iter().map(|(id, _)| *id).collect(), i64::MIN, i64::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, p)| (names[&id].clone(), p.into_iter().map(|(t, v)| (t, v.to_bits())).collect()))
            .collect();
        out.sort();
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn cached_and_uncached_writes_store_the_same(
            lines in proptest::collection::vec(
                (0usize..3, 0usize..3, proptest::collection::vec((0usize..3, 0usize..6), 1..3), proptest::option::of(0i64..5)),
                1..12,
            )
        ) {
            let values = ["1", "-2.5", "3i", "4u", "true", "F"];
            let body: String = lines
                .iter()
                .map(|(m, host, fields, ts)| {
                    let fields: Vec<String> = fields.iter().map(|(f, v)| format!("f{f}={}", values[*v])).collect();
                    let ts = ts.map(|t| format!(" {t}")).unwrap_or_default();
                    format!("m{m},host=h{host} {}{ts}\n", fields.join(","))
                })
                .collect();
            let lp = lineproto::Limits::default();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
                let (cached, uncached) = (storage(&d1), storage(&d2));
                let cache = KeyCache::new(1000);
                for now in [10, 20] {
                    let a = write(&cached, &cache, body.as_bytes(), Precision::Seconds, now, &lp).await.unwrap();
                    let b = write(&uncached, &KeyCache::new(1000), body.as_bytes(), Precision::Seconds, now, &lp).await.unwrap();
                    assert_eq!((a.0.accepted, &a.1), (b.0.accepted, &b.1));
                }
                assert_eq!(contents(&cached).await, contents(&uncached).await, "{body}");
            });
        }
    }

    #[test]
    fn the_cached_path_stores_what_the_full_parser_stores() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(&dir);
        let cache = KeyCache::new(1000);
        let body = b"cpu,host=a,dc=x idle=1.5,busy=2i,up=true\r\nmem used=7u\n\n# note\nnet,if=e\\ 0 rx=9\nbad line\n";
        let lp = lineproto::Limits::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (o1, e1) = write(&storage, &cache, body, Precision::Nanos, 1000, &lp).await.unwrap();
            assert_eq!(cache.map.read().unwrap().len(), 4, "lines without escapes are learned");
            let (o2, e2) = write(&storage, &cache, body, Precision::Nanos, 2000, &lp).await.unwrap();
            assert_eq!((o1.accepted, o2.accepted), (5, 5));
            assert_eq!(e1, e2);
            assert_eq!(e1.iter().map(|e| e.line).collect::<Vec<_>>(), vec![6]);
            let all = storage.select(&[crate::roles::tsdb::storage::Matcher::regex("__name__", ".+", false).unwrap()]);
            assert_eq!(all.len(), 5);
            let ids = all.iter().map(|(id, _)| *id).collect();
            for (id, points) in storage.read(ids, 0, 5000).await.unwrap() {
                assert_eq!(points.len(), 2, "series {id}: {points:?}");
                assert_eq!(points[0].1.to_bits(), points[1].1.to_bits(), "series {id}");
            }
        });
    }

    #[test]
    fn fields_become_series_and_timestamps_milliseconds() {
        let body = b"cpu,host=a usage_idle=99.5,cores=8i 1700000000123456789\nmem,host=a used=1u,ok=true\n";
        let (s, e) = samples(body, Precision::Nanos, 42, &Default::default());
        assert!(e.is_empty(), "{e:?}");
        let names: Vec<String> = s.iter().map(|x| x.labels.to_string()).collect();
        assert_eq!(
            names,
            vec!["cpu_usage_idle{host=\"a\"}", "cpu_cores{host=\"a\"}", "mem_used{host=\"a\"}", "mem_ok{host=\"a\"}"]
        );
        assert_eq!(s[0].t, 1_700_000_000_123);
        assert_eq!(s[2].t, 42, "no timestamp: now");
        assert_eq!((s[1].v, s[3].v), (8.0, 1.0));
    }

    #[test]
    fn precisions_convert() {
        assert_eq!(Precision::parse(Some("s"), false).unwrap().to_millis(2), Some(2000));
        assert_eq!(Precision::parse(Some("u"), false).unwrap().to_millis(2500), Some(2));
        assert_eq!(Precision::parse(Some("h"), false).unwrap().to_millis(1), Some(3_600_000));
        assert!(Precision::parse(Some("h"), true).is_err(), "v2 has no hours");
        assert!(Precision::parse(Some("fortnight"), false).unwrap_err().contains("fortnight"));
        assert_eq!(Precision::Hours.to_millis(i64::MAX), None);
        assert_eq!(Precision::Nanos.to_millis(-1), Some(-1), "floors, not truncates");
    }

    #[test]
    fn strings_and_reserved_tags_are_refused_by_line() {
        let body = b"a v=1 1\nb s=\"text\",v=2 1\nc,__name__=x v=1 1\nd v=1 99999999999999999\n";
        let (s, e) = samples(body, Precision::Seconds, 0, &Default::default());
        assert_eq!(s.len(), 1);
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4], "{e:?}");
        assert!(e[0].message.contains("field `s` is a string"));
        assert!(e[2].message.contains("overflows"));
    }

    #[test]
    fn messages_name_every_failing_line() {
        let errors = vec![LineError { line: 3, column: 4, message: "bad".into() }];
        let outcome = AppendOutcome { accepted: 1, rejected: vec![(1, "too old".into())] };
        let msg = partial_write_message(&errors, &outcome).unwrap();
        assert!(msg.starts_with("partial write: 2 line(s) refused (lines 1, 3)"), "{msg}");
        assert!(partial_write_message(&[], &AppendOutcome::default()).is_none());
    }
}
