//! PromQL functions. Range functions take a range vector; the others an
//! instant vector (or nothing). Functions drop the metric name, except
//! `last_over_time`, `sort*` and `label_*`, as Prometheus 2.42 does.

use promql_parser::parser::{Call, Expr, SubqueryExpr, VectorSelector};

use super::eval::{Evaluator, Window, WindowCall, WindowFn, output_metric};
use super::value::{Metric, NAME, Sample, Value};
use super::{QueryError, aggregate};

pub fn call(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| -> Result<&Expr, QueryError> {
        args.get(i).map(|b| &**b).ok_or_else(|| QueryError::bad(format!("{name}() is missing argument {}", i + 1)))
    };
    if let Some(rc) = range_call(ev, c, t)? {
        let out = match rc.source {
            RangeArg::Selector(vs, range) => ev.over_windows(&rc.window_call(c, vs, range), t),
            RangeArg::Subquery(sq) => {
                let at = ev.subquery_time(sq, t);
                ev.subquery(sq, t)?
                    .into_iter()
                    .filter_map(|s| {
                        let v = (rc.value)(Window::unknown(&s.points), at)?;
                        Some(Sample { metric: output_metric(&s.metric, rc.keep_name), v })
                    })
                    .collect()
            }
        };
        return Ok(Value::Vector(out));
    }
    match name {
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sqrt" => f64::sqrt,
                _ => |v: f64| if v.is_nan() || v == 0.0 { v } else { v.signum() },
            };
            map_vector(ev, arg(0)?, t, name, f)
        }
        "round" => {
            let to = match args.get(1) {
                Some(e) => ev.scalar(e, t, "round")?,
                None => 1.0,
            };
            // Prometheus rounds half up (towards +Inf), to a multiple of `to`.
            let inv = 1.0 / to;
            map_vector(ev, arg(0)?, t, name, move |v| (v * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let (lo, hi) = (ev.scalar(arg(1)?, t, "clamp")?, ev.scalar(arg(2)?, t, "clamp")?);
            if lo > hi {
                return Ok(Value::Vector(Vec::new()));
            }
            map_vector(ev, arg(0)?, t, name, move |v| v.max(lo).min(hi))
        }
        "clamp_min" => {
            let lo = ev.scalar(arg(1)?, t, "clamp_min")?;
            map_vector(ev, arg(0)?, t, name, move |v| v.max(lo))
        }
        "clamp_max" => {
            let hi = ev.scalar(arg(1)?, t, "clamp_max")?;
            map_vector(ev, arg(0)?, t, name, move |v| v.min(hi))
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "vector" => Ok(Value::Vector(vec![Sample { metric: Metric::default(), v: ev.scalar(arg(0)?, t, "vector")? }])),
        "scalar" => {
            let v = ev.vector(arg(0)?, t, "scalar")?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
        }
        "timestamp" => {
            // A plain selector gives each sample's own time; anything
            // computed, the evaluation time (as Prometheus does).
            let e = arg(0)?;
            let out = match e {
                Expr::VectorSelector(vs) => ev
                    .instant_with_time(vs, t)
                    .into_iter()
                    .map(|(s, pt)| Sample { metric: s.metric.without_name(), v: pt as f64 / 1000.0 })
                    .collect(),
                _ => ev
                    .vector(e, t, name)?
                    .into_iter()
                    .map(|s| Sample { metric: s.metric.without_name(), v: t as f64 / 1000.0 })
                    .collect(),
            };
            Ok(Value::Vector(out))
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month" | "month" | "year" => {
            let samples = match args.first() {
                Some(e) => ev.vector(e, t, name)?.into_iter().map(|s| (s.metric.without_name(), s.v)).collect(),
                None => vec![(Metric::default(), t as f64 / 1000.0)],
            };
            Ok(Value::Vector(
                samples.into_iter().map(|(metric, secs)| Sample { metric, v: date_part(name, secs) }).collect(),
            ))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.vector(arg(0)?, t, name)?;
            v.sort_by(|a, b| a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal));
            if name == "sort_desc" {
                v.reverse();
            }
            Ok(Value::Vector(v))
        }
        "label_replace" => label_replace(ev, args, t),
        "label_join" => label_join(ev, args, t),
        "histogram_quantile" => {
            let q = ev.scalar(arg(0)?, t, "histogram_quantile")?;
            Ok(Value::Vector(aggregate::histogram_quantile(q, ev.vector(arg(1)?, t, name)?)))
        }
        "absent" => {
            let v = ev.vector(arg(0)?, t, name)?;
            if !v.is_empty() {
                return Ok(Value::Vector(Vec::new()));
            }
            let metric = match arg(0)? {
                Expr::VectorSelector(vs) => Metric::from_pairs(
                    vs.matchers
                        .matchers
                        .iter()
                        .filter(|m| matches!(m.op, promql_parser::label::MatchOp::Equal) && m.name != NAME)
                        .map(|m| (m.name.as_str(), m.value.as_str())),
                ),
                _ => Metric::default(),
            };
            Ok(Value::Vector(vec![Sample { metric, v: 1.0 }]))
        }
        other => Err(QueryError::unsupported(format!("function `{other}` is not supported"))),
    }
}

/// Functions of one window that `range_fn` computes.
const WINDOW_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "changes",
    "resets",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "present_over_time",
];

/// A call of a range function with its scalar parameters evaluated: what
/// it reads, and its value over one window.
pub struct RangeCall<'e> {
    pub source: RangeArg<'e>,
    pub keep_name: bool,
    /// The parameters are literals, so every step computes the same function.
    pub per_query: bool,
    pub value: Box<WindowFn<'e>>,
}

impl RangeCall<'_> {
    /// The call `c` as the evaluator applies it to the windows of its
    /// selector `vs` (the source of this call).
    pub fn window_call<'r>(&'r self, c: &Call, vs: &'r VectorSelector, range: i64) -> WindowCall<'r> {
        WindowCall {
            node: std::ptr::from_ref(c) as usize,
            vs,
            range,
            keep_name: self.keep_name,
            per_query: self.per_query,
            value: &*self.value,
        }
    }
}

/// `c` as a range function of its range argument at time `t`; None when
/// `c` is some other function.
pub fn range_call<'e>(ev: &Evaluator<'_>, c: &'e Call, t: i64) -> Result<Option<RangeCall<'e>>, QueryError> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| -> Result<&'e Expr, QueryError> {
        args.get(i).map(|b| &**b).ok_or_else(|| QueryError::bad(format!("{name}() is missing argument {}", i + 1)))
    };
    let source_at = match name {
        "quantile_over_time" => 1,
        "predict_linear" | "double_exponential_smoothing" => 0,
        _ if WINDOW_FUNCTIONS.contains(&name) => 0,
        _ => return Ok(None),
    };
    let source = range_arg(arg(source_at)?, name)?;
    let range = match source {
        RangeArg::Selector(_, range) => range,
        RangeArg::Subquery(sq) => i64::try_from(sq.range.as_millis()).unwrap_or(i64::MAX),
    };
    let value: Box<WindowFn<'e>> = match name {
        "quantile_over_time" => {
            let q = ev.scalar(arg(0)?, t, name)?;
            Box::new(move |w: Window<'_>, _| {
                let mut vals: Vec<f64> = w.points.iter().map(|p| p.1).collect();
                Some(aggregate::quantile(q, &mut vals))
            })
        }
        "predict_linear" => {
            let secs = ev.scalar(arg(1)?, t, name)?;
            Box::new(move |w: Window<'_>, at| {
                if w.points.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(w.points, at);
                Some(slope * secs + intercept)
            })
        }
        "double_exponential_smoothing" => {
            let (sf, tf) = (ev.scalar(arg(1)?, t, name)?, ev.scalar(arg(2)?, t, name)?);
            if !(sf > 0.0 && sf < 1.0 && tf > 0.0 && tf < 1.0) {
                return Err(QueryError::bad(format!(
                    "holt_winters: smoothing and trend factors must be in (0, 1), got {sf} and {tf}"
                )));
            }
            Box::new(move |w: Window<'_>, _| holt_winters(w.points, sf, tf))
        }
        _ => Box::new(move |w: Window<'_>, at| range_fn(name, w, at, range)),
    };
    let per_query = args.iter().enumerate().all(|(i, a)| i == source_at || literal(a));
    Ok(Some(RangeCall { source, keep_name: name == "last_over_time", per_query, value }))
}

/// A number written in the query (perhaps negated or in parentheses): the
/// same at every step.
fn literal(e: &Expr) -> bool {
    match e {
        Expr::NumberLiteral(_) => true,
        Expr::Paren(p) => literal(&p.expr),
        Expr::Unary(u) => literal(&u.expr),
        _ => false,
    }
}

/// A range-vector argument: a selector with its range, or a subquery.
pub enum RangeArg<'e> {
    Selector(&'e VectorSelector, i64),
    Subquery(&'e SubqueryExpr),
}

fn range_arg<'e>(e: &'e Expr, name: &str) -> Result<RangeArg<'e>, QueryError> {
    match e {
        Expr::MatrixSelector(ms) => {
            Ok(RangeArg::Selector(&ms.vs, i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX)))
        }
        Expr::Paren(p) => range_arg(&p.expr, name),
        Expr::Subquery(sq) => Ok(RangeArg::Subquery(sq)),
        _ => Err(QueryError::bad(format!("{name}() expects a range vector"))),
    }
}

fn map_vector(ev: &Evaluator<'_>, e: &Expr, t: i64, name: &str, f: impl Fn(f64) -> f64) -> Result<Value, QueryError> {
    Ok(Value::Vector(
        ev.vector(e, t, name)?.into_iter().map(|s| Sample { metric: s.metric.without_name(), v: f(s.v) }).collect(),
    ))
}

/// Least-squares fit of the window: (slope per second, value at
/// `intercept_t`), as Prometheus computes it (a constant series has slope
/// 0, or NaN when it is infinite).
fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let first = points[0].1;
    if points.iter().all(|p| p.1 == first) {
        return if first.is_infinite() { (f64::NAN, f64::NAN) } else { (0.0, first) };
    }
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    for &(pt, v) in points {
        let x = (pt - intercept_t) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sxx += x * x;
    }
    let cov = sxy / n - sx * sy / n / n;
    let var = sxx / n - sx * sx / n / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Prometheus's `holt_winters`: double exponential smoothing with
/// smoothing factor `sf` and trend factor `tf`, both in (0, 1).
fn holt_winters(points: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, points[0].1);
    let mut b = points[1].1 - points[0].1;
    for (i, p) in points.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let next = sf * p.1 + (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, next);
    }
    Some(s1)
}

/// One range function over a window ending at `t`; None drops the series.
fn range_fn(name: &str, window: Window<'_>, t: i64, range: i64) -> Option<f64> {
    let points = window.points;
    let vals = || points.iter().map(|p| p.1);
    let n = points.len() as f64;
    let counter = if window.monotonic { Counter::Monotonic } else { Counter::MayReset };
    Some(match name {
        "rate" => extrapolated(points, t, range, Some(counter), true)?,
        "increase" => extrapolated(points, t, range, Some(counter), false)?,
        "delta" => extrapolated(points, t, range, None, false)?,
        "irate" | "idelta" => {
            let [.., (t1, v1), (t2, v2)] = points else { return None };
            let d = if name == "irate" && v2 < v1 { *v2 } else { v2 - v1 };
            if name == "irate" {
                let secs = (t2 - t1) as f64 / 1000.0;
                if secs == 0.0 {
                    return None;
                }
                d / secs
            } else {
                d
            }
        }
        "deriv" => {
            if points.len() < 2 {
                return None;
            }
            linear_regression(points, points[0].0).0
        }
        "changes" => {
            points.windows(2).filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan())).count() as f64
        }
        "resets" if window.monotonic => 0.0,
        "resets" => points.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64,
        "avg_over_time" => vals().sum::<f64>() / n,
        "min_over_time" => vals().fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a }),
        "max_over_time" => vals().fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a }),
        "sum_over_time" => vals().sum(),
        "count_over_time" => vals().sum(),
        "last_over_time" => points.last()?.1,
        "present_over_time" => 1.0,
        "stddev_over_time" => variance(vals()).sqrt(),
        "stdvar_over_time" => variance(vals()),
        _ => return None,
    })
}

fn variance(vals: impl Iterator<Item = f64>) -> f64 {
    // Welford's online algorithm, as Prometheus uses.
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in vals {
        count += 1.0;
        let d = v - mean;
        mean += d / count;
        m2 += d * (v - mean);
    }
    m2 / count
}

/// What is known of a counter's window.
#[derive(Clone, Copy, PartialEq)]
enum Counter {
    /// No value is below its predecessor.
    Monotonic,
    MayReset,
}

/// Prometheus's extrapolatedRate: the increase over the samples, adjusted
/// for counter resets, extrapolated to the window edges (never below zero
/// for counters), per second for `rate`. `counter` is None for gauges.
fn extrapolated(points: &[(i64, f64)], t: i64, range: i64, counter: Option<Counter>, per_second: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (range_start, range_end) = (t - range, t);
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.1 - first.1;
    if counter == Some(Counter::MayReset) {
        let mut prev = first.1;
        for &(_, v) in &points[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg_between = sampled / (points.len() - 1) as f64;
    if counter.is_some() && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { avg_between / 2.0 };
    interval += if to_end < threshold { to_end } else { avg_between / 2.0 };
    result *= interval / sampled;
    if per_second {
        result /= range as f64 / 1000.0;
    }
    Some(result)
}

/// Calendar fields of a Unix time in seconds, in UTC.
fn date_part(name: &str, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match name {
        "minute" => ((sod / 60) % 60) as f64,
        "hour" => (sod / 3600) as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_month" => d as f64,
        "day_of_year" => (days - crate::roles::tsdb::params::days_from_civil(y, 1, 1) + 1) as f64,
        "month" => m as f64,
        "year" => y as f64,
        _ => match m {
            2 if leap => 29.0,
            2 => 28.0,
            4 | 6 | 9 | 11 => 30.0,
            _ => 31.0,
        },
    }
}

/// Inverse of days_from_civil (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn string_arg(ev: &Evaluator<'_>, e: &Expr, t: i64, what: &str) -> Result<String, QueryError> {
    match ev.eval(e, t)? {
        Value::String(s) => Ok(s),
        other => Err(QueryError::bad(format!("{what} expects a string, got {}", other.kind()))),
    }
}

fn label_replace(ev: &Evaluator<'_>, args: &[Box<Expr>], t: i64) -> Result<Value, QueryError> {
    if args.len() != 5 {
        return Err(QueryError::bad("label_replace(v, dst, replacement, src, regex) takes 5 arguments"));
    }
    let v = ev.vector(&args[0], t, "label_replace")?;
    let dst = string_arg(ev, &args[1], t, "label_replace")?;
    let repl = string_arg(ev, &args[2], t, "label_replace")?;
    let src = string_arg(ev, &args[3], t, "label_replace")?;
    let pattern = string_arg(ev, &args[4], t, "label_replace")?;
    let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| QueryError::bad(format!("invalid regular expression in label_replace(): {pattern}: {e}")))?;
    if !crate::roles::tsdb::storage::labels::valid_label_name(&dst) {
        return Err(QueryError::bad(format!("invalid destination label name in label_replace(): {dst}")));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let value = s.metric.get(&src).unwrap_or("").to_owned();
        if let Some(caps) = re.captures(&value) {
            let mut expanded = String::new();
            caps.expand(&repl, &mut expanded);
            s.metric.set(&dst, &expanded);
        }
        out.push(s);
    }
    Ok(Value::Vector(out))
}

fn label_join(ev: &Evaluator<'_>, args: &[Box<Expr>], t: i64) -> Result<Value, QueryError> {
    if args.len() < 3 {
        return Err(QueryError::bad("label_join(v, dst, separator, src...) takes at least 3 arguments"));
    }
    let v = ev.vector(&args[0], t, "label_join")?;
    let dst = string_arg(ev, &args[1], t, "label_join")?;
    let sep = string_arg(ev, &args[2], t, "label_join")?;
    let srcs: Vec<String> = args[3..].iter().map(|a| string_arg(ev, a, t, "label_join")).collect::<Result<_, _>>()?;
    Ok(Value::Vector(
        v.into_iter()
            .map(|mut s| {
                let joined: Vec<&str> = srcs.iter().map(|n| s.metric.get(n).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                s.metric.set(&dst, &joined);
                s
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_parts() {
        // 2024-02-29T13:45:00Z, a Thursday.
        let t = 1_709_214_300.0;
        assert_eq!(date_part("year", t), 2024.0);
        assert_eq!(date_part("month", t), 2.0);
        assert_eq!(date_part("day_of_month", t), 29.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
        assert_eq!(date_part("year", 0.0), 1970.0);
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter rising 10 per 15 s, sampled across a 1 m window.
        let pts: Vec<(i64, f64)> = (0..5).map(|i| (i * 15_000, i as f64 * 10.0)).collect();
        let r = extrapolated(&pts, 60_000, 60_000, Some(Counter::MayReset), true).unwrap();
        assert!((r - 0.6666666666666666).abs() < 1e-12, "{r}");
        // A reset adds the value before it.
        let pts = vec![(0, 5.0), (15_000, 10.0), (30_000, 2.0)];
        let inc = extrapolated(&pts, 30_000, 30_000, Some(Counter::MayReset), false).unwrap();
        assert!((inc - 7.0).abs() < 1e-12, "{inc}");
    }
}
