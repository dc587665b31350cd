//! The evaluator: selectors read from prefetched series; every other node
//! is computed from its children at one timestamp.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};

use super::value::{Metric, Sample, Series, Value, is_stale};
use super::{LOOKBACK_MS, QueryError, aggregate, binary, functions};
use crate::roles::tsdb::cores;
use crate::roles::tsdb::storage::{Column, Matcher};

/// One selector of a query: what to select and which window to read.
pub struct Selection {
    /// Identifies the selector node in the parsed query.
    pub key: usize,
    /// Alternatives (`or` in a selector); each a conjunction of matchers.
    pub matchers: Vec<Vec<Matcher>>,
    pub from: i64,
    pub to: i64,
    /// What the selector's function needs from downsampled buckets.
    pub column: Column,
}

/// Raw samples in the shape a column gives: `count_over_time` sums
/// counts (1 per raw sample), so rollup buckets and raw samples mix.
pub fn as_column(points: &mut [(i64, f64)], column: Column) {
    if column == Column::Count {
        points.iter_mut().filter(|p| !is_stale(p.1)).for_each(|p| p.1 = 1.0);
    }
}

/// The bucket column a range function over a selector reads.
fn column_for(function: &str) -> Column {
    match function {
        "min_over_time" => Column::Min,
        "max_over_time" => Column::Max,
        "sum_over_time" => Column::Sum,
        "count_over_time" => Column::Count,
        _ => Column::Avg,
    }
}

fn key(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

fn millis(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The evaluation time of a selector at query time `t`.
pub fn selector_time(vs: &VectorSelector, t: i64, start: i64, end: i64) -> i64 {
    modified_time(&vs.at, &vs.offset, t, start, end)
}

/// `t` moved by an `@` and an `offset` modifier.
fn modified_time(at: &Option<AtModifier>, offset: &Option<Offset>, t: i64, start: i64, end: i64) -> i64 {
    let base = match at {
        Some(AtModifier::Start) => start,
        Some(AtModifier::End) => end,
        Some(AtModifier::At(time)) => match time.duration_since(UNIX_EPOCH) {
            Ok(d) => millis(&d),
            Err(e) => -millis(&e.duration()),
        },
        None => t,
    };
    match offset {
        Some(Offset::Pos(d)) => base.saturating_sub(millis(d)),
        Some(Offset::Neg(d)) => base.saturating_add(millis(d)),
        None => base,
    }
}

/// Converts the parser's matchers to the storage's. At least one matcher
/// must not match the empty string, as in Prometheus.
fn matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, QueryError> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        for m in ms {
            out.push(match &m.op {
                PMatchOp::Equal => Matcher::equal(&m.name, &m.value),
                PMatchOp::NotEqual => Matcher {
                    name: m.name.clone(),
                    op: crate::roles::tsdb::storage::MatchOp::NotEqual(m.value.clone()),
                },
                PMatchOp::Re(_) => Matcher::regex(&m.name, &m.value, false).map_err(QueryError::bad)?,
                PMatchOp::NotRe(_) => Matcher::regex(&m.name, &m.value, true).map_err(QueryError::bad)?,
            });
        }
        if let Some(name) = vs.name.as_ref().filter(|_| !out.iter().any(|m| m.name == "__name__")) {
            out.push(Matcher::equal("__name__", name));
        }
        if out.iter().all(|m| m.matches("")) {
            return Err(QueryError::bad(format!(
                "vector selector {vs} must contain at least one matcher that does not match the empty string"
            )));
        }
        Ok(out)
    };
    let mut alternatives = vec![convert(&vs.matchers.matchers)?];
    for alt in &vs.matchers.or_matchers {
        alternatives.push(convert(alt)?);
    }
    if !vs.matchers.or_matchers.is_empty() && vs.matchers.matchers.is_empty() {
        alternatives.remove(0);
    }
    Ok(alternatives)
}

/// Every selector of `expr` with the window a query over `[start, end]`
/// needs from it.
pub fn plan(expr: &Expr, start: i64, end: i64) -> Result<Vec<Selection>, QueryError> {
    let mut out = Vec::new();
    walk(expr, start, end, Column::Avg, &mut out)?;
    Ok(out)
}

fn walk(expr: &Expr, start: i64, end: i64, column: Column, out: &mut Vec<Selection>) -> Result<(), QueryError> {
    let window = |vs: &VectorSelector, back: i64, column: Column| -> Result<Selection, QueryError> {
        let (a, b) = (selector_time(vs, start, start, end), selector_time(vs, end, start, end));
        Ok(Selection {
            key: key(vs),
            matchers: matchers(vs)?,
            from: a.min(b).saturating_sub(back),
            to: a.max(b),
            column,
        })
    };
    let plain = Column::Avg;
    match expr {
        Expr::VectorSelector(vs) => out.push(window(vs, LOOKBACK_MS, plain)?),
        Expr::MatrixSelector(MatrixSelector { vs, range }) => out.push(window(vs, millis(range), column)?),
        Expr::Aggregate(a) => {
            walk(&a.expr, start, end, plain, out)?;
            if let Some(p) = &a.param {
                walk(p, start, end, plain, out)?;
            }
        }
        Expr::Unary(u) => walk(&u.expr, start, end, plain, out)?,
        Expr::Binary(b) => {
            walk(&b.lhs, start, end, plain, out)?;
            walk(&b.rhs, start, end, plain, out)?;
        }
        Expr::Paren(p) => walk(&p.expr, start, end, column, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, start, end, column_for(c.func.name), out)?;
            }
        }
        Expr::Subquery(sq) => {
            let (a, b) = (
                modified_time(&sq.at, &sq.offset, start, start, end),
                modified_time(&sq.at, &sq.offset, end, start, end),
            );
            walk(&sq.expr, a.min(b).saturating_sub(millis(&sq.range)), a.max(b), plain, out)?;
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => return Err(QueryError::unsupported("extension expressions are not supported")),
    }
    Ok(())
}

/// A subquery's step when it names none.
const SUBQUERY_STEP_MS: i64 = 60_000;
/// Most inner evaluations one subquery may take.
const MAX_SUBQUERY_STEPS: i64 = 11_000;
/// Most inner evaluations all subqueries of one query may take together
/// (nested subqueries and range queries multiply them).
const MAX_SUBQUERY_EVALS: u64 = 1_000_000;

/// One series' samples inside a window (stale markers removed) and what the
/// walk over the series already knows of them.
#[derive(Clone, Copy)]
pub struct Window<'a> {
    pub points: &'a [(i64, f64)],
    /// True when no value is below the one before it (no counter reset), so
    /// counter functions can skip looking for resets; false when there is
    /// one or nobody checked.
    pub monotonic: bool,
}

impl<'a> Window<'a> {
    /// Points nobody has examined yet.
    pub fn unknown(points: &'a [(i64, f64)]) -> Self {
        Window { points, monotonic: false }
    }
}

/// A range function's value over one series' window ending at a time;
/// None drops the series at that step.
pub type WindowFn<'f> = dyn Fn(Window<'_>, i64) -> Option<f64> + Sync + 'f;

/// A range function over a selector, ready to be applied to windows.
pub struct WindowCall<'e> {
    /// The call node, keying its values computed for every step.
    pub node: usize,
    pub vs: &'e VectorSelector,
    pub range: i64,
    /// Whether results keep the metric name (`last_over_time`).
    pub keep_name: bool,
    /// False when the function's parameters may differ between steps (they
    /// are not literals): then every step is computed on its own.
    pub per_query: bool,
    pub value: &'e WindowFn<'e>,
}

/// The labels a function's result carries for an input series.
pub fn output_metric(m: &Metric, keep_name: bool) -> Metric {
    if keep_name { m.clone() } else { m.without_name() }
}

/// Most per-step results a range function keeps precomputed; past this a
/// query is evaluated step by step instead.
const WINDOWS_MAX: usize = 20_000_000;

/// A range function's values at every step: each selected series' result
/// metric, and its value per step (series after series).
type Grid = (Vec<Metric>, Vec<Option<f64>>);

/// Evaluates a parsed query at each step over prefetched data.
pub struct Evaluator<'a> {
    data: &'a HashMap<usize, Vec<Series>>,
    start: i64,
    end: i64,
    step: i64,
    /// Range-function values for every step, by call node, computed series
    /// by series on first use.
    windows: RefCell<HashMap<usize, Grid>>,
    /// Results computed for every step at once (aggregations folding a
    /// range function), by node, handed out once per step.
    per_step: RefCell<HashMap<usize, Vec<Option<Vec<Sample>>>>>,
    /// One shared metric per label set, for grouping by identity.
    interned: RefCell<std::collections::HashSet<Metric>>,
    /// Subquery inner evaluations so far, against MAX_SUBQUERY_EVALS.
    subquery_evals: std::cell::Cell<u64>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator for the steps `start, start + step, …, end`.
    pub fn new(data: &'a HashMap<usize, Vec<Series>>, start: i64, end: i64, step: i64) -> Self {
        Self {
            data,
            start,
            end,
            step: step.max(1),
            windows: RefCell::new(HashMap::new()),
            per_step: RefCell::new(HashMap::new()),
            interned: RefCell::new(std::collections::HashSet::new()),
            subquery_evals: std::cell::Cell::new(0),
        }
    }

    /// The shared metric with these labels.
    pub fn intern(&self, m: Metric) -> Metric {
        let mut set = self.interned.borrow_mut();
        if let Some(existing) = set.get(&m) {
            return existing.clone();
        }
        set.insert(m.clone());
        m
    }

    /// How many steps the query has.
    pub fn steps(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    /// The index of step `t` when `wc` can be computed for every step at
    /// once: `t` is on the step grid, the parameters are fixed and the
    /// results fit WINDOWS_MAX.
    pub fn grid_step(&self, wc: &WindowCall<'_>, t: i64) -> Option<usize> {
        let on_grid = t >= self.start && t <= self.end && (t - self.start) % self.step == 0;
        let fits = self.steps().saturating_mul(self.series(wc.vs).len()) <= WINDOWS_MAX;
        (on_grid && wc.per_query && fits).then(|| ((t - self.start) / self.step) as usize)
    }

    /// `wc` applied to each series' window `[at - range, at]` (`at` the
    /// selector time of `t`, stale markers removed). On the step grid the
    /// values of all steps are computed at once, walking each series once
    /// instead of searching it at every step.
    pub fn over_windows(&self, wc: &WindowCall<'_>, t: i64) -> Vec<Sample> {
        let Some(index) = self.grid_step(wc, t) else {
            let at = selector_time(wc.vs, t, self.start, self.end);
            return self
                .range(wc.vs, wc.range, t)
                .into_iter()
                .filter_map(|s| {
                    let v = (wc.value)(Window::unknown(&s.points), at)?;
                    Some(Sample { metric: output_metric(&s.metric, wc.keep_name), v })
                })
                .collect();
        };
        let steps = self.steps();
        let mut cache = self.windows.borrow_mut();
        let (metrics, values) = cache.entry(wc.node).or_insert_with(|| {
            let metrics = self.series(wc.vs).iter().map(|s| output_metric(&s.metric, wc.keep_name)).collect();
            (metrics, self.window_values(wc))
        });
        metrics
            .iter()
            .zip(values.chunks(steps))
            .filter_map(|(metric, per_step)| Some(Sample { metric: metric.clone(), v: per_step[index]? }))
            .collect()
    }

    /// `wc`'s value for each selected series (in selection order) at each
    /// step, series after series; the series are split over the cores.
    pub fn window_values(&self, wc: &WindowCall<'_>) -> Vec<Option<f64>> {
        let series = self.series(wc.vs);
        let steps = self.steps();
        let mut out = vec![None; series.len() * steps];
        // (windows plus points: the work one thread would do)
        let work = steps * series.len() + series.iter().map(|s| s.points.len()).sum::<usize>();
        let grid = (self.start, self.end, self.step);
        cores::fill(series, &mut out, steps, work, |chunk, slots| windows_of(chunk, slots, wc, grid, steps));
        out
    }

    /// Step `index` of `node`'s results, all steps computed by `all` on
    /// first use. Each step is handed out once; a second ask (the same node
    /// reached twice at one time) answers None, to be computed again rather
    /// than cloned.
    pub fn per_step(&self, node: usize, index: usize, all: impl FnOnce() -> Vec<Vec<Sample>>) -> Option<Vec<Sample>> {
        let mut cache = self.per_step.borrow_mut();
        let steps = cache.entry(node).or_insert_with(|| all().into_iter().map(Some).collect());
        steps.get_mut(index).and_then(Option::take)
    }

    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs, t))),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range(&ms.vs, millis(&ms.range), t))),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => Ok(Value::Vector(
                    v.into_iter().map(|s| Sample { metric: s.metric.without_name(), v: -s.v }).collect(),
                )),
                other => Err(QueryError::bad(format!(
                    "unary minus needs a scalar or an instant vector, got {}",
                    other.kind()
                ))),
            },
            Expr::Binary(b) => binary::eval(self, b, t),
            Expr::Aggregate(a) => aggregate::eval(self, a, t),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, t)?)),
            Expr::Extension(_) => Err(QueryError::unsupported("extension expressions are not supported")),
        }
    }

    /// The series a selector selected, in selection order.
    pub fn series(&self, vs: &VectorSelector) -> &[Series] {
        self.data.get(&key(vs)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The newest sample of each series within the lookback window, unless
    /// that sample is a stale marker.
    fn instant(&self, vs: &VectorSelector, t: i64) -> Vec<Sample> {
        self.instant_with_time(vs, t).into_iter().map(|(s, _)| s).collect()
    }

    /// `instant` with each sample's own timestamp.
    pub fn instant_with_time(&self, vs: &VectorSelector, t: i64) -> Vec<(Sample, i64)> {
        let at = selector_time(vs, t, self.start, self.end);
        let mut out = Vec::new();
        for s in self.series(vs) {
            let end = s.points.partition_point(|p| p.0 <= at);
            if end == 0 {
                continue;
            }
            let (pt, v) = s.points[end - 1];
            // Prometheus 2.x: a sample exactly 5 minutes old still counts.
            if pt >= at - LOOKBACK_MS && !is_stale(v) {
                out.push((Sample { metric: s.metric.clone(), v }, pt));
            }
        }
        out
    }

    /// Samples of each series in `[t - range, t]`, stale markers removed.
    pub fn range(&self, vs: &VectorSelector, range: i64, t: i64) -> Vec<Series> {
        let at = selector_time(vs, t, self.start, self.end);
        let from = at.saturating_sub(range);
        let mut out = Vec::new();
        for s in self.series(vs) {
            let lo = s.points.partition_point(|p| p.0 < from);
            let hi = s.points.partition_point(|p| p.0 <= at);
            let points: Vec<(i64, f64)> = s.points[lo..hi].iter().copied().filter(|p| !is_stale(p.1)).collect();
            if !points.is_empty() {
                out.push(Series { metric: s.metric.clone(), points });
            }
        }
        out
    }

    /// A subquery's evaluation time at query time `t`.
    pub fn subquery_time(&self, sq: &SubqueryExpr, t: i64) -> i64 {
        modified_time(&sq.at, &sq.offset, t, self.start, self.end)
    }

    /// A subquery: the inner expression at every multiple of its step in
    /// `[at - range, at]`, as series. The step defaults to one minute
    /// (Prometheus's default evaluation interval).
    pub fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<Vec<Series>, QueryError> {
        let at = self.subquery_time(sq, t);
        let range = millis(&sq.range);
        let step = sq.step.as_ref().map_or(SUBQUERY_STEP_MS, millis).max(1);
        if range / step > MAX_SUBQUERY_STEPS {
            return Err(QueryError::bad(format!(
                "subquery {sq} would evaluate more than {MAX_SUBQUERY_STEPS} steps; use a larger step"
            )));
        }
        let mut first = (at - range).div_euclid(step) * step;
        if first < at - range {
            first += step;
        }
        let mut by_metric: BTreeMap<Metric, Vec<(i64, f64)>> = BTreeMap::new();
        let mut ti = first;
        while ti <= at {
            let evals = self.subquery_evals.get() + 1;
            if evals > MAX_SUBQUERY_EVALS {
                return Err(QueryError::bad(format!(
                    "subqueries of this query would evaluate more than {MAX_SUBQUERY_EVALS} steps; use larger steps or fewer nested subqueries"
                )));
            }
            self.subquery_evals.set(evals);
            for s in self.vector(&sq.expr, ti, "a subquery")? {
                by_metric.entry(s.metric).or_default().push((ti, s.v));
            }
            ti += step;
        }
        Ok(by_metric.into_iter().map(|(metric, points)| Series { metric, points }).collect())
    }

    /// Evaluates `expr` expecting an instant vector.
    pub fn vector(&self, expr: &Expr, t: i64, what: &str) -> Result<Vec<Sample>, QueryError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::bad(format!("{what} expects an instant vector, got {}", other.kind()))),
        }
    }

    /// Evaluates `expr` expecting a scalar.
    pub fn scalar(&self, expr: &Expr, t: i64, what: &str) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(QueryError::bad(format!("{what} expects a scalar, got {}", other.kind()))),
        }
    }
}

/// `wc` over every step's window of each of `series`, walking each series
/// once: `out` holds `steps` slots per series.
fn windows_of(
    series: &[Series],
    out: &mut [Option<f64>],
    wc: &WindowCall<'_>,
    (start, end, step): (i64, i64, i64),
    steps: usize,
) {
    let mut clean = Vec::new();
    // drops[i]: values below their predecessor among points 1..=i, so a
    // window [lo, hi) holds a counter reset iff drops[hi - 1] > drops[lo].
    let mut drops: Vec<u32> = Vec::new();
    for (s, slots) in series.iter().zip(out.chunks_mut(steps)) {
        let p = &s.points;
        let stale = p.iter().any(|x| is_stale(x.1));
        drops.clear();
        drops.extend(p.iter().scan((0u32, f64::NAN), |(n, prev), x| {
            *n += u32::from(x.1 < *prev);
            *prev = x.1;
            Some(*n)
        }));
        let (mut lo, mut hi) = (0, 0);
        for (i, slot) in slots.iter_mut().enumerate() {
            let at = selector_time(wc.vs, start + i as i64 * step, start, end);
            let from = at.saturating_sub(wc.range);
            while hi < p.len() && p[hi].0 <= at {
                hi += 1;
            }
            while lo < hi && p[lo].0 < from {
                lo += 1;
            }
            if lo == hi {
                continue;
            }
            let window = if stale && p[lo..hi].iter().any(|x| is_stale(x.1)) {
                clean.clear();
                clean.extend(p[lo..hi].iter().copied().filter(|x| !is_stale(x.1)));
                Window::unknown(&clean)
            } else {
                Window { points: &p[lo..hi], monotonic: drops[hi - 1] == drops[lo] }
            };
            if !window.points.is_empty() {
                *slot = (wc.value)(window, at);
            }
        }
    }
}

/// Metric of a selected series, as the evaluator sees it.
pub fn metric_of(labels: &crate::roles::tsdb::storage::Labels) -> Metric {
    Metric::from_pairs(labels.iter())
}
