//! Line protocol to samples: `measurement,tags field=value` becomes the
//! series `measurement_field{tags}` (the Telegraf/VictoriaMetrics mapping),
//! names made Prometheus-safe, timestamps converted to milliseconds.

use super::lineproto::{self, FieldValue, LineError, Point};
use super::storage::labels::{Labels, METRIC_NAME, sanitize_name};
use super::storage::{AppendOutcome, Incoming};

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

/// Parses a body into samples; per-line problems are returned with their
/// line numbers, good lines are kept.
pub fn samples(
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
        let v = match value {
            FieldValue::Float(f) => f,
            FieldValue::Int(i) => i as f64,
            FieldValue::UInt(u) => u as f64,
            FieldValue::Bool(b) => f64::from(u8::from(b)),
            FieldValue::Str(_) => {
                out.truncate(start);
                return Err(format!("field `{field}` is a string; tsdb stores numbers only"));
            }
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
