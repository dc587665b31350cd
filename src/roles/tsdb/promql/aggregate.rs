//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `topk`, `bottomk`, `quantile`, `count_values`) with
//! `by`/`without`, and `histogram_quantile` over classic buckets.

use std::collections::BTreeMap;

use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use super::QueryError;
use super::eval::Evaluator;
use super::functions::{self, RangeArg};
use super::value::{Metric, NAME, Sample, Series, Value};

/// The group a sample belongs to under `by`/`without`: interned, so the
/// samples of one group share one metric.
fn group_key(ev: &Evaluator<'_>, m: &Metric, modifier: &Option<LabelModifier>) -> Metric {
    match modifier {
        Some(md) => m.project_interned(md, &|p| ev.intern(p)),
        None => ev.intern(Metric::default()),
    }
}

/// Samples by group, in label order. Groups are found by the interned
/// metric's identity first, so labels are compared only when a metric is
/// seen the first time.
fn grouped(ev: &Evaluator<'_>, input: Vec<Sample>, modifier: &Option<LabelModifier>) -> Vec<(Metric, Vec<Sample>)> {
    use std::collections::HashMap;
    type Fast = foldhash::fast::RandomState;
    let mut by_identity: HashMap<usize, usize, Fast> = HashMap::default();
    let mut by_labels: HashMap<Metric, usize, Fast> = HashMap::default();
    let mut groups: Vec<(Metric, Vec<Sample>)> = Vec::new();
    for s in input {
        let key = group_key(ev, &s.metric, modifier);
        let slot = match by_identity.get(&key.identity()) {
            Some(&slot) => slot,
            None => {
                let id = key.identity();
                let slot = *by_labels.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                by_identity.insert(id, slot);
                slot
            }
        };
        groups[slot].1.push(s);
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

pub fn eval(ev: &Evaluator<'_>, a: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = a.op.to_string();
    if let Some(fold) = Fold::of(&op)
        && let Some(out) = folded_windows(ev, a, fold, t)?
    {
        return Ok(Value::Vector(out));
    }
    let input = ev.vector(&a.expr, t, &op)?;
    let param = |what: &str| -> Result<&Expr, QueryError> {
        a.param.as_deref().ok_or_else(|| QueryError::bad(format!("{op} needs a parameter ({what})")))
    };
    let groups = grouped(ev, input, &a.modifier);
    if let Some(fold) = Fold::of(&op) {
        let folded = groups.into_iter().map(|(metric, samples)| {
            let mut acc = Acc::default();
            samples.iter().for_each(|s| fold.add(&mut acc, s.v));
            Sample { metric, v: fold.result(acc) }
        });
        return Ok(Value::Vector(folded.collect()));
    }
    let mut out = Vec::new();
    match op.as_str() {
        "stddev" | "stdvar" => {
            for (metric, samples) in groups {
                let vals = samples.iter().map(|s| s.v);
                let n = samples.len() as f64;
                let mean = vals.clone().sum::<f64>() / n;
                let var = vals.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                out.push(Sample { metric, v: if op == "stddev" { var.sqrt() } else { var } });
            }
        }
        "topk" | "bottomk" => {
            let k = ev.scalar(param("k")?, t, &op)?;
            if k.is_nan() || k < 1.0 {
                return Ok(Value::Vector(Vec::new()));
            }
            let k = k.min(1e9) as usize;
            for (_, mut samples) in groups {
                // NaN sorts last either way, as in Prometheus.
                samples.sort_by(|x, y| match (x.v.is_nan(), y.v.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if op == "topk" => y.v.partial_cmp(&x.v).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.v.partial_cmp(&y.v).unwrap_or(std::cmp::Ordering::Equal),
                });
                out.extend(samples.into_iter().take(k));
            }
        }
        "quantile" => {
            let q = ev.scalar(param("φ")?, t, &op)?;
            for (metric, samples) in groups {
                let mut vals: Vec<f64> = samples.iter().map(|s| s.v).collect();
                out.push(Sample { metric, v: quantile(q, &mut vals) });
            }
        }
        "count_values" => {
            let label = match param("label")? {
                Expr::StringLiteral(s) => s.val.clone(),
                _ => return Err(QueryError::bad("count_values needs a string label name")),
            };
            for (metric, samples) in groups {
                let mut counts: BTreeMap<String, f64> = BTreeMap::new();
                for s in samples {
                    *counts.entry(super::value::format_value(s.v)).or_default() += 1.0;
                }
                for (value, n) in counts {
                    let mut m = metric.clone();
                    m.set(&label, &value);
                    out.push(Sample { metric: m, v: n });
                }
            }
        }
        other => return Err(QueryError::unsupported(format!("aggregation `{other}` is not supported"))),
    }
    Ok(Value::Vector(out))
}

/// Aggregations that fold their input one value at a time, so they can
/// fold a range function's values straight from the evaluator's grid.
#[derive(Clone, Copy)]
enum Fold {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
}

/// A fold's state: the value so far and how many were folded.
#[derive(Clone, Copy, Default)]
struct Acc {
    v: f64,
    n: u64,
}

impl Fold {
    fn of(op: &str) -> Option<Fold> {
        Some(match op {
            "sum" => Fold::Sum,
            "avg" => Fold::Avg,
            "min" => Fold::Min,
            "max" => Fold::Max,
            "count" => Fold::Count,
            "group" => Fold::Group,
            _ => return None,
        })
    }

    /// Folds `v` in. Sums start from the first value, as in Prometheus;
    /// `min` and `max` skip NaN unless every value is NaN.
    fn add(self, acc: &mut Acc, v: f64) {
        let first = acc.n == 0;
        acc.v = match self {
            Fold::Sum | Fold::Avg if !first => acc.v + v,
            Fold::Min if !first && !acc.v.is_nan() && (v >= acc.v || v.is_nan()) => acc.v,
            Fold::Max if !first && !acc.v.is_nan() && (v <= acc.v || v.is_nan()) => acc.v,
            _ => v,
        };
        acc.n += 1;
    }

    fn result(self, acc: Acc) -> f64 {
        match self {
            Fold::Sum | Fold::Min | Fold::Max => acc.v,
            Fold::Avg => acc.v / acc.n as f64,
            Fold::Count => acc.n as f64,
            Fold::Group => 1.0,
        }
    }
}

/// `fold by (…) (f(x[r]))` for every step at once, when `f` is a range
/// function over a selector and the query's steps can be computed
/// together: the function's values are folded per group and step as they
/// come from the grid, with no sample built per series and step. None
/// when that does not apply; the caller then evaluates the usual way.
fn folded_windows(
    ev: &Evaluator<'_>,
    a: &AggregateExpr,
    fold: Fold,
    t: i64,
) -> Result<Option<Vec<Sample>>, QueryError> {
    let mut inner = &*a.expr;
    while let Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    let Expr::Call(c) = inner else { return Ok(None) };
    let Some(rc) = functions::range_call(ev, c, t)? else { return Ok(None) };
    let RangeArg::Selector(vs, range) = rc.source else { return Ok(None) };
    let wc = rc.window_call(c, vs, range);
    let Some(index) = ev.grid_step(&wc, t) else { return Ok(None) };
    Ok(ev.per_step(std::ptr::from_ref(a) as usize, index, || {
        let (group_of, groups) = series_groups(ev, ev.series(vs), wc.keep_name, &a.modifier);
        let values = ev.window_values(&wc);
        let steps = ev.steps();
        let mut acc = vec![Acc::default(); groups.len() * steps];
        for (&g, per_step) in group_of.iter().zip(values.chunks(steps)) {
            for (acc, v) in acc[g * steps..(g + 1) * steps].iter_mut().zip(per_step) {
                if let Some(v) = *v {
                    fold.add(acc, v);
                }
            }
        }
        (0..steps)
            .map(|i| {
                let at_step = groups.iter().zip(acc.iter().skip(i).step_by(steps));
                at_step
                    .filter(|(_, acc)| acc.n > 0)
                    .map(|(metric, acc)| Sample { metric: metric.clone(), v: fold.result(*acc) })
                    .collect()
            })
            .collect()
    }))
}

/// The group of each series under `by`/`without` (of the range function's
/// result labels), and the groups in label order.
fn series_groups(
    ev: &Evaluator<'_>,
    series: &[Series],
    keep_name: bool,
    modifier: &Option<LabelModifier>,
) -> (Vec<usize>, Vec<Metric>) {
    type Fast = foldhash::fast::RandomState;
    let mut slots: std::collections::HashMap<Vec<(&str, &str)>, usize, Fast> = Default::default();
    let mut keys: Vec<Vec<(&str, &str)>> = Vec::new();
    let mut group_of = Vec::with_capacity(series.len());
    for s in series {
        let key: Vec<(&str, &str)> = match modifier {
            Some(md) => s
                .metric
                .projected(md)
                .filter(|(n, _)| keep_name || n != NAME)
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let slot = *slots.entry(key).or_insert_with_key(|key| {
            keys.push(key.clone());
            keys.len() - 1
        });
        group_of.push(slot);
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&x, &y| keys[x].cmp(&keys[y]));
    let mut rank = vec![0; keys.len()];
    for (r, &slot) in order.iter().enumerate() {
        rank[slot] = r;
    }
    let groups = order.iter().map(|&slot| ev.intern(Metric::from_pairs(keys[slot].iter().copied()))).collect();
    (group_of.into_iter().map(|slot| rank[slot]).collect(), groups)
}

/// The φ-quantile with linear interpolation, as Prometheus computes it.
pub fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lo = rank.floor().max(0.0) as usize;
    let hi = (lo + 1).min(vals.len() - 1);
    let weight = rank - rank.floor();
    vals[lo] * (1.0 - weight) + vals[hi] * weight
}

/// `histogram_quantile` over classic `_bucket` series with an `le` label.
pub fn histogram_quantile(q: f64, input: Vec<Sample>) -> Vec<Sample> {
    let mut groups: BTreeMap<Metric, Vec<(f64, f64)>> = BTreeMap::new();
    for s in input {
        let Some(le) = s.metric.get("le").and_then(parse_le) else { continue };
        let key = s.metric.remove(&["le".to_owned(), NAME.to_owned()]);
        groups.entry(key).or_default().push((le, s.v));
    }
    groups.into_iter().map(|(metric, mut buckets)| Sample { metric, v: bucket_quantile(q, &mut buckets) }).collect()
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Prometheus's bucketQuantile.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) || buckets.len() < 2 {
        return f64::NAN;
    }
    // Merge duplicate bounds and force monotonic counts.
    buckets.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 < max {
            b.1 = max;
        }
        max = b.1;
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 || total.is_nan() {
        return f64::NAN;
    }
    let rank = q * total;
    let i = buckets.partition_point(|b| b.1 < rank);
    if i == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if i == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (start, prev_count) = if i == 0 { (0.0, 0.0) } else { (buckets[i - 1].0, buckets[i - 1].1) };
    let (end, count) = (buckets[i].0, buckets[i].1 - prev_count);
    start + (end - start) * ((rank - prev_count) / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [3.0, 1.0]), 1.0);
        assert_eq!(quantile(1.0, &mut [3.0, 1.0]), 3.0);
        assert_eq!(quantile(2.0, &mut [3.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn histogram_quantile_interpolates_within_a_bucket() {
        let mut b = vec![(0.1, 10.0), (0.5, 60.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert!((bucket_quantile(0.5, &mut b) - 0.42).abs() < 1e-9);
        let mut b = vec![(1.0, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(0.9, &mut b), 1.0, "in the +Inf bucket: the highest finite bound");
        let mut no_inf = vec![(1.0, 5.0)];
        assert!(bucket_quantile(0.5, &mut no_inf).is_nan());
    }
}
