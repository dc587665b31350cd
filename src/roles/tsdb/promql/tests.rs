//! A runner for Prometheus's PromQL test-script format (promqltest):
//! `load <interval>` blocks of series, `clear`, and `eval instant at <time>`
//! (also `eval_ordered`, `eval_fail`) with the expected samples. The cases
//! live in tests/data/promql/*.test; every case must pass, and the runner
//! reports the count.

use std::collections::HashMap;

use promql_parser::parser::Expr;

use super::value::{Metric, STALE_NAN, Series, Value};
use super::{Evaluator, parse, plan};
use crate::roles::tsdb::params::parse_duration;

/// Series loaded by the script so far.
#[derive(Default)]
struct Db {
    series: Vec<Series>,
}

impl Db {
    fn load(&mut self, interval: i64, line: &str) -> Result<(), String> {
        let (selector, values) = split_series(line)?;
        let metric = metric_of_selector(selector)?;
        let mut points = Vec::new();
        let mut i = 0i64;
        for item in values.split_whitespace() {
            for v in expand(item)? {
                if let Some(v) = v {
                    points.push((i * interval, v));
                }
                i += 1;
            }
        }
        match self.series.iter_mut().find(|s| s.metric == metric) {
            Some(s) => s.points.extend(points),
            None => self.series.push(Series { metric, points }),
        }
        Ok(())
    }

    fn eval(&self, expr: &Expr, t: i64) -> Result<Value, super::QueryError> {
        Ok(self.eval_range(expr, t, t, 1)?.remove(0))
    }

    /// Evaluates at every step of `[start, end]`, as a range query does.
    fn eval_range(&self, expr: &Expr, start: i64, end: i64, step: i64) -> Result<Vec<Value>, super::QueryError> {
        let mut data: HashMap<usize, Vec<Series>> = HashMap::new();
        for sel in plan(expr, start, end)? {
            let chosen = self
                .series
                .iter()
                .filter(|s| {
                    sel.matchers.iter().any(|alt| alt.iter().all(|m| m.matches(s.metric.get(&m.name).unwrap_or(""))))
                })
                .map(|s| {
                    let mut points: Vec<(i64, f64)> =
                        s.points.iter().copied().filter(|p| p.0 >= sel.from && p.0 <= sel.to).collect();
                    super::eval::as_column(&mut points, sel.column);
                    Series { metric: s.metric.clone(), points }
                })
                .collect();
            data.insert(sel.key, chosen);
        }
        let ev = Evaluator::new(&data, start, end, step);
        (0..=(end - start) / step).map(|i| ev.eval(expr, start + i * step)).collect()
    }
}

/// Splits `name{labels} values` at the end of the selector.
fn split_series(line: &str) -> Result<(&str, &str), String> {
    let end = match line.find('}') {
        Some(i) => i + 1,
        None => line.find(char::is_whitespace).unwrap_or(line.len()),
    };
    Ok((line[..end].trim(), line[end..].trim()))
}

fn metric_of_selector(s: &str) -> Result<Metric, String> {
    let Expr::VectorSelector(vs) = promql_parser::parser::parse(s)? else {
        return Err(format!("`{s}` is not a series"));
    };
    let mut pairs: Vec<(&str, &str)> =
        vs.matchers.matchers.iter().map(|m| (m.name.as_str(), m.value.as_str())).collect();
    if let Some(n) = &vs.name {
        pairs.push(("__name__", n.as_str()));
    }
    Ok(Metric::from_pairs(pairs.into_iter()))
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        "stale" => Ok(f64::from_bits(STALE_NAN)),
        _ => s.parse().map_err(|_| format!("bad number `{s}`")),
    }
}

/// `a+bxN`, `a-bxN`, `axN`, `_`, `_xN`, `stale` or a number.
fn expand(item: &str) -> Result<Vec<Option<f64>>, String> {
    if let Some((head, n)) = item.split_once('x') {
        let n: usize = n.parse().map_err(|_| format!("bad repeat in `{item}`"))?;
        if head == "_" {
            return Ok(vec![None; n + 1]);
        }
        let split = head[1..].find(['+', '-']).map(|i| i + 1);
        let (start, step) = match split {
            Some(i) => (number(&head[..i])?, number(&head[i..])?),
            None => (number(head)?, 0.0),
        };
        return Ok((0..=n).map(|k| Some(start + step * k as f64)).collect());
    }
    Ok(vec![if item == "_" { None } else { Some(number(item)?) }])
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// Runs one script; returns (cases passed, failures).
fn run_script(name: &str, text: &str) -> (usize, Vec<String>) {
    let mut db = Db::default();
    let mut passed = 0;
    let mut failures = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{name}:{i}");
        if line == "clear" {
            db = Db::default();
        } else if let Some(interval) = line.strip_prefix("load ") {
            let interval = parse_duration(interval.trim()).expect("load interval");
            while i < lines.len() && lines[i].starts_with([' ', '\t']) && !lines[i].trim().is_empty() {
                if let Err(e) = db.load(interval, lines[i].trim()) {
                    failures.push(format!("{at}: load: {e}"));
                }
                i += 1;
            }
        } else if let Some(rest) = line.strip_prefix("eval") {
            let (mode, rest) = rest.split_once(" instant at ").unwrap_or_else(|| panic!("{at}: unsupported eval line"));
            let (time, query) =
                rest.trim().split_once(' ').unwrap_or_else(|| panic!("{at}: eval needs a time and a query"));
            let t = parse_duration(time).unwrap_or_else(|| panic!("{at}: bad time {time}"));
            let mut expected = Vec::new();
            while i < lines.len() && lines[i].starts_with([' ', '\t']) && !lines[i].trim().is_empty() {
                expected.push(lines[i].trim());
                i += 1;
            }
            let result = parse(query).and_then(|e| db.eval(&e, t));
            let outcome = match (mode, result) {
                ("_fail", Err(_)) => Ok(()),
                ("_fail", Ok(v)) => Err(format!("expected an error, got {v:?}")),
                (_, Err(e)) => Err(format!("error: {e}")),
                (m, Ok(v)) => compare(&v, &expected, m == "_ordered"),
            };
            match outcome {
                Ok(()) => passed += 1,
                Err(e) => failures.push(format!("{at}: {query}: {e}")),
            }
        } else {
            failures.push(format!("{at}: unknown command `{line}`"));
        }
    }
    (passed, failures)
}

fn compare(v: &Value, expected: &[&str], ordered: bool) -> Result<(), String> {
    match v {
        Value::Scalar(s) => {
            let want = expected.first().ok_or("expected no result, got a scalar")?;
            let want = number(want)?;
            if almost_equal(*s, want) { Ok(()) } else { Err(format!("got {s}, want {want}")) }
        }
        Value::Vector(samples) => {
            let mut want: Vec<(Metric, f64)> = Vec::new();
            for line in expected {
                let (sel, val) = split_series(line)?;
                let metric =
                    if sel.starts_with('{') && sel == "{}" { Metric::default() } else { metric_of_selector(sel)? };
                want.push((metric, number(val)?));
            }
            if want.len() != samples.len() {
                return Err(format!("got {} samples {:?}, want {}", samples.len(), samples, want.len()));
            }
            for (k, (m, val)) in want.iter().enumerate() {
                let found = if ordered {
                    samples.get(k).filter(|s| &s.metric == m)
                } else {
                    samples.iter().find(|s| &s.metric == m)
                };
                match found {
                    Some(s) if almost_equal(s.v, *val) => {}
                    Some(s) => return Err(format!("{m:?}: got {}, want {val}", s.v)),
                    None => return Err(format!("missing {m:?} (got {samples:?})")),
                }
            }
            Ok(())
        }
        other => Err(format!("unexpected result type {}", other.kind())),
    }
}

#[test]
fn promql_conformance_scripts_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/promql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    let (mut total, mut all_failures) = (0, Vec::new());
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let (passed, failures) = run_script(&name, &std::fs::read_to_string(&f).unwrap());
        println!("{name}: {passed} cases passed, {} failed", failures.len());
        total += passed;
        all_failures.extend(failures);
    }
    println!("promql conformance: {total} passed, {} failed", all_failures.len());
    assert!(all_failures.is_empty(), "{}", all_failures.join("\n"));
    assert!(total >= 80, "only {total} cases ran");
}

#[test]
fn series_notation_expands_like_promqltest() {
    assert_eq!(expand("0+10x2").unwrap(), vec![Some(0.0), Some(10.0), Some(20.0)]);
    assert_eq!(expand("5-1x1").unwrap(), vec![Some(5.0), Some(4.0)]);
    assert_eq!(expand("-1+1x1").unwrap(), vec![Some(-1.0), Some(0.0)]);
    assert_eq!(expand("_x2").unwrap(), vec![None, None, None]);
    assert_eq!(expand("3x1").unwrap(), vec![Some(3.0), Some(3.0)]);
}

#[test]
fn range_queries_agree_with_instant_queries_at_every_step() {
    let mut db = Db::default();
    db.load(15_000, "req{job=\"a\"} 0+10x40 5 5+3x20").unwrap();
    db.load(15_000, "req{job=\"b\"} 1+1x10 _x5 stale 3+7x40").unwrap();
    for q in [
        "rate(req[1m])",
        "sum by (job) (increase(req[2m] offset 30s))",
        "max_over_time(req[45s] @ 300)",
        "last_over_time(req[1m])",
        "irate(req[5m]) * 2",
    ] {
        let expr = parse(q).unwrap();
        let (start, end, step) = (0, 900_000, 20_000);
        let ranged = db.eval_range(&expr, start, end, step).unwrap();
        for (i, got) in ranged.iter().enumerate() {
            let t = start + i as i64 * step;
            let want = db.eval(&expr, t).unwrap();
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{q} at {t}");
        }
    }
}

#[test]
fn range_functions_split_over_cores_agree_with_one_step_at_a_time() {
    let mut db = Db::default();
    for i in 0..1200 {
        db.load(15_000, &format!("s{{i=\"{i}\"}} 0+{}x80", i % 7 + 1)).unwrap();
    }
    let expr = parse("sum by (i) (rate(s[1m]))").unwrap();
    let (start, end, step) = (60_000, 1_200_000, 20_000);
    let ranged = db.eval_range(&expr, start, end, step).unwrap();
    // Windows plus points (81 a series) cross the evaluator's parallel threshold.
    assert!(ranged.len() * 1200 + 81 * 1200 > 100_000);
    for (i, got) in ranged.iter().enumerate().step_by(7) {
        let t = start + i as i64 * step;
        assert_eq!(format!("{got:?}"), format!("{:?}", db.eval(&expr, t).unwrap()), "at {t}");
    }
}

#[test]
fn aggregations_folding_range_functions_agree_with_the_sample_path() {
    // `op (f(s[r]))` folds the function's values per group and step; `op
    // (f(s[r]) + 0)` builds a sample per series and step and groups them.
    let mut db = Db::default();
    for i in 0..1500 {
        let g = ["a", "b", "c"][i % 3];
        let values = match i % 4 {
            0 => format!("{}+{}x60", i, i % 5),
            1 => format!("{i}+0.37x20 NaN 2+1.1x30 stale 4x10"),
            2 => format!("_x10 {}-0.5x50", i * 3),
            _ => format!("Inf 1+2x30 -Inf 5+{}x20", i % 3),
        };
        db.load(15_000, &format!("s{{g=\"{g}\",i=\"{i}\",parity=\"{}\"}} {values}", i % 2)).unwrap();
    }
    // 81 steps of 1 500 series: past the threshold that splits the windows
    // over the cores.
    let (start, end, step) = (0, 1_200_000, 15_000);
    const { assert!(81 * 1500 > crate::roles::tsdb::cores::PARALLEL_WORK) };
    for op in ["sum", "avg", "min", "max", "count", "group"] {
        for f in ["rate(s[1m])", "max_over_time(s[45s])", "quantile_over_time(0.5, s[2m])", "deriv(s[1m] offset 1m)"] {
            for grouping in ["by (g)", "without (i)", "", "by (g, parity)"] {
                let folded = parse(&format!("{op} {grouping} ({f})")).unwrap();
                let sampled = parse(&format!("{op} {grouping} ({f} + 0)")).unwrap();
                let (got, want) = (
                    db.eval_range(&folded, start, end, step).unwrap(),
                    db.eval_range(&sampled, start, end, step).unwrap(),
                );
                assert_eq!(format!("{got:?}"), format!("{want:?}"), "{op} {grouping} ({f})");
            }
        }
    }
    // `last_over_time` keeps the name, so `by (__name__)` groups by it.
    let expr = parse("count by (__name__) (last_over_time(s[1m]))").unwrap();
    let Value::Vector(v) = db.eval(&expr, 600_000).unwrap() else { panic!("not a vector") };
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].metric.get("__name__"), v[0].v), (Some("s"), 1500.0));
}
