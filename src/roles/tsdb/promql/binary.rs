//! Binary operators: arithmetic, comparisons (filtering or `bool`), and the
//! set operators, between scalars and vectors, with `on`/`ignoring` and
//! `group_left`/`group_right` vector matching.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::QueryError;
use super::eval::Evaluator;
use super::value::{Metric, Sample, Value};

pub fn eval(ev: &Evaluator<'_>, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = b.op.to_string();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let comparison = b.op.is_comparison_operator();
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = apply(&op, l, r)?;
            if comparison && !return_bool {
                return Err(QueryError::bad("comparisons between scalars must use the bool modifier"));
            }
            Ok(Value::Scalar(if comparison { f64::from(u8::from(keep)) } else { v }))
        }
        (Value::Vector(v), Value::Scalar(s)) => scalar_side(&op, v, s, false, comparison, return_bool),
        (Value::Scalar(s), Value::Vector(v)) => scalar_side(&op, v, s, true, comparison, return_bool),
        (Value::Vector(l), Value::Vector(r)) => {
            if b.op.is_set_operator() {
                set_op(&op, l, r, b.modifier.as_ref())
            } else {
                vector_op(&op, l, r, b.modifier.as_ref(), comparison, return_bool)
            }
        }
        (l, r) => Err(QueryError::bad(format!("operator {op} is not defined between {} and {}", l.kind(), r.kind()))),
    }
}

/// The operator on two values: (result, whether a comparison held).
fn apply(op: &str, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    let cmp = |c: bool| (l, c);
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => cmp(l == r),
        "!=" => cmp(l != r),
        ">" => cmp(l > r),
        "<" => cmp(l < r),
        ">=" => cmp(l >= r),
        "<=" => cmp(l <= r),
        other => return Err(QueryError::unsupported(format!("operator `{other}` is not supported here"))),
    })
}

fn scalar_side(
    op: &str,
    v: Vec<Sample>,
    s: f64,
    scalar_left: bool,
    comparison: bool,
    return_bool: bool,
) -> Result<Value, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    for sample in v {
        let (l, r) = if scalar_left { (s, sample.v) } else { (sample.v, s) };
        let (value, keep) = apply(op, l, r)?;
        if comparison {
            if return_bool {
                out.push(Sample { metric: sample.metric.without_name(), v: f64::from(u8::from(keep)) });
            } else if keep {
                // The vector's value is kept, whichever side it is on.
                out.push(sample);
            }
        } else {
            out.push(Sample { metric: sample.metric.without_name(), v: value });
        }
    }
    Ok(Value::Vector(out))
}

/// The labels two samples are matched on.
fn signature(m: &Metric, matching: Option<&LabelModifier>) -> Metric {
    matching.map_or_else(|| m.without_name(), |md| m.project(md))
}

fn set_op(op: &str, l: Vec<Sample>, r: Vec<Sample>, modifier: Option<&BinModifier>) -> Result<Value, QueryError> {
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let rsigs: HashSet<Metric> = r.iter().map(|s| signature(&s.metric, matching)).collect();
    Ok(Value::Vector(match op {
        "and" => l.into_iter().filter(|s| rsigs.contains(&signature(&s.metric, matching))).collect(),
        "unless" => l.into_iter().filter(|s| !rsigs.contains(&signature(&s.metric, matching))).collect(),
        _ => {
            let lsigs: HashSet<Metric> = l.iter().map(|s| signature(&s.metric, matching)).collect();
            let mut out = l;
            out.extend(r.into_iter().filter(|s| !lsigs.contains(&signature(&s.metric, matching))));
            out
        }
    }))
}

fn vector_op(
    op: &str,
    l: Vec<Sample>,
    r: Vec<Sample>,
    modifier: Option<&BinModifier>,
    comparison: bool,
    return_bool: bool,
) -> Result<Value, QueryError> {
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    // group_right swaps the sides: the "many" side is always `many`.
    let (many, one, swapped, include) = match card {
        VectorMatchCardinality::OneToMany(inc) => (r, l, true, inc.labels.clone()),
        VectorMatchCardinality::ManyToOne(inc) => (l, r, false, inc.labels.clone()),
        _ => (l, r, false, Vec::new()),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut by_sig: HashMap<Metric, Sample> = HashMap::new();
    for s in one {
        let sig = signature(&s.metric, matching);
        if by_sig.insert(sig.clone(), s).is_some() {
            return Err(QueryError::bad(format!(
                "found duplicate series for the match group {} on the {} side of the operation; many-to-many matching not allowed: matching labels must be unique on one side",
                pretty(&sig),
                if swapped { "left" } else { "right" }
            )));
        }
    }
    let mut seen: HashSet<Metric> = HashSet::new();
    let mut out = Vec::new();
    for s in many {
        let sig = signature(&s.metric, matching);
        let Some(other) = by_sig.get(&sig) else { continue };
        if one_to_one && !seen.insert(sig.clone()) {
            return Err(QueryError::bad(format!(
                "found duplicate series for the match group {} on the left side of the operation; use group_left/group_right for many-to-one matching",
                pretty(&sig)
            )));
        }
        let (lv, rv) = if swapped { (other.v, s.v) } else { (s.v, other.v) };
        let (value, keep) = apply(op, lv, rv)?;
        if comparison && !return_bool && !keep {
            continue;
        }
        let mut metric = s.metric.clone();
        if !comparison || return_bool {
            metric = metric.without_name();
        }
        if one_to_one {
            metric = match matching {
                Some(LabelModifier::Include(on)) => metric.keep(&on.labels),
                Some(LabelModifier::Exclude(ign)) => metric.remove(&ign.labels),
                None => metric,
            };
        }
        for name in &include {
            metric.set(name, other.metric.get(name).unwrap_or(""));
        }
        let v = if comparison { if return_bool { f64::from(u8::from(keep)) } else { lv } } else { value };
        out.push(Sample { metric, v });
    }
    Ok(Value::Vector(out))
}

fn pretty(m: &Metric) -> String {
    let inner: Vec<String> = m.labels().iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}
