//! The Prometheus HTTP API's read side: `/api/v1/query`, `/query_range`,
//! `/series`, `/labels`, `/label/<name>/values`, and the engine entry point
//! shared with `edgebox tsdb query`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use super::http::{Api, ApiError};
use super::params::Params;
use super::promql::{self, ApiFloat, ApiTime, Evaluator, Metric, QueryError, Series, Value, format_time, format_value};
use super::storage::rollup::Resolution;
use super::storage::{Labels, Storage, TooManySamples};

/// Most steps of a range query.
pub const MAX_STEPS: i64 = 11_000;

/// What one query may take: samples loaded, and time.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    pub max_samples: usize,
    pub timeout: Duration,
}

impl QueryLimits {
    /// No limits (tests, and callers that bound the work themselves).
    pub const NONE: QueryLimits = QueryLimits { max_samples: usize::MAX, timeout: Duration::MAX };
}

/// The query slots (Prometheus's `--query.max-concurrency`): at most
/// `tsdb.max_concurrent_queries` evaluate at once, each holding its
/// samples until it ends; the others wait their turn, and the wait counts
/// toward the query's timeout.
pub struct Queries {
    limits: QueryLimits,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

impl Queries {
    pub fn new(limits: QueryLimits, concurrency: usize) -> Queries {
        Queries { limits, slots: Arc::new(Semaphore::new(concurrency)), concurrency }
    }

    /// Takes a slot as a running query would.
    #[cfg(test)]
    pub fn occupy(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots.clone().try_acquire_owned().expect("a free query slot")
    }

    /// [`evaluate`] once a slot is free. The slot stays taken until the
    /// evaluation ends, even if the caller stops waiting for it.
    pub async fn evaluate(
        &self,
        storage: &Storage,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<(i64, Value)>, ApiError> {
        let asked = Instant::now();
        let slot = {
            let _waiting = GaugeGuard::up(metrics::gauge!("edgebox_tsdb_queries_waiting"));
            tokio::time::timeout(self.limits.timeout, self.slots.clone().acquire_owned()).await
        };
        let slot = match slot {
            Ok(slot) => slot.map_err(|e| ApiError::internal(e.into()))?,
            Err(_) => {
                return Err(ApiError::timeout(format!(
                    "query timed out after {:?} (tsdb.query_timeout_s) waiting for one of the {} query slots \
                     (tsdb.max_concurrent_queries)",
                    self.limits.timeout, self.concurrency
                )));
            }
        };
        let running = (slot, GaugeGuard::up(metrics::gauge!("edgebox_tsdb_queries_running")));
        evaluate_holding(storage, query, (start, end, step), self.limits, asked, running).await
    }
}

/// A gauge raised by one while this lives.
struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    fn up(gauge: metrics::Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        if e.unsupported { ApiError::unsupported(e.message) } else { ApiError::bad_data(e.message) }
    }
}

/// Series matching any of the given series selectors.
pub fn selectors(api: &Api, exprs: &[&str]) -> Result<Vec<(u64, Arc<Labels>)>, ApiError> {
    let mut out: BTreeMap<u64, Arc<Labels>> = BTreeMap::new();
    for e in exprs {
        let expr = promql::parse(e)?;
        let promql_parser::parser::Expr::VectorSelector(_) = &expr else {
            return Err(ApiError::bad_data(format!("`{e}` is not a series selector")));
        };
        for sel in promql::plan(&expr, 0, 0)? {
            for alt in &sel.matchers {
                out.extend(api.storage.select(alt));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The parts of `[from, to]` older than raw retention, by the rollup
/// resolution that still covers them (finest first).
fn downsampled_spans(storage: &Storage, from: i64, to: i64, now: i64) -> Vec<(Resolution, i64, i64)> {
    let ret = storage.retention();
    let Some(raw_ms) = ret.raw_ms else { return Vec::new() };
    let mut newer = now - raw_ms;
    let mut out = Vec::new();
    for (res, keep) in ret.rollups.kept() {
        let oldest = now - keep;
        let (a, b) = (from.max(oldest), to.min(newer - 1));
        if a <= b {
            out.push((res, a, b));
        }
        newer = newer.min(oldest);
    }
    out
}

/// Puts rollup points in front of each series' raw points where raw
/// retention dropped the samples.
async fn with_rollups(
    storage: &Storage,
    ids: &[u64],
    sel: &promql::Selection,
    read: &mut [(u64, Vec<(i64, f64)>)],
) -> Result<(), ApiError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let spans = downsampled_spans(storage, sel.from, sel.to, now);
    if spans.is_empty() || ids.is_empty() {
        return Ok(());
    }
    // Coarsest (oldest) first, so each series' points stay in time order.
    let mut older: Vec<Vec<(i64, f64)>> = vec![Vec::new(); read.len()];
    for (res, a, b) in spans.into_iter().rev() {
        let got = storage.read_rollups(ids.to_vec(), res, a, b, sel.column).await.map_err(ApiError::internal)?;
        for (slot, (_, points)) in older.iter_mut().zip(got) {
            let after = slot.last().map_or(i64::MIN, |p| p.0);
            slot.extend(points.into_iter().filter(|p| p.0 > after));
        }
    }
    for ((_, raw), mut points) in read.iter_mut().zip(older) {
        let first_raw = raw.first().map_or(i64::MAX, |p| p.0);
        points.retain(|p| p.0 < first_raw);
        if !points.is_empty() {
            points.append(raw);
            *raw = points;
        }
    }
    Ok(())
}

/// Evaluates `query` at every step of `[start, end]`.
pub async fn evaluate(
    storage: &Storage,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
    limits: QueryLimits,
) -> Result<Vec<(i64, Value)>, ApiError> {
    evaluate_holding(storage, query, (start, end, step), limits, Instant::now(), ()).await
}

/// [`evaluate`] over `(start, end, step)` of a query asked at `asked` (its
/// timeout counts from there), keeping `held` until the evaluation ends:
/// the blocking evaluation outlives this future if the caller drops it.
async fn evaluate_holding<H: Send + 'static>(
    storage: &Storage,
    query: &str,
    (start, end, step): (i64, i64, i64),
    limits: QueryLimits,
    asked: Instant,
    held: H,
) -> Result<Vec<(i64, Value)>, ApiError> {
    let max_samples = limits.max_samples;
    // Checked between selectors and between evaluation steps.
    let deadline = asked.checked_add(limits.timeout);
    let timed_out = move || deadline.is_some_and(|d| Instant::now() >= d);
    let timeout = move || {
        ApiError::timeout(format!(
            "query timed out after {:?} (tsdb.query_timeout_s); narrow the selectors, the time range or the steps",
            limits.timeout
        ))
    };
    // Boxed: selections are keyed by their selector's address in the tree,
    // which must not move when the tree moves to the blocking pool below.
    let expr = Box::new(promql::parse(query)?);
    let mut data: HashMap<usize, Vec<Series>> = HashMap::new();
    let mut budget = max_samples;
    let too_many = || {
        ApiError::unsupported(format!(
            "query would read more than {max_samples} samples (tsdb.max_query_samples); narrow the selectors or the time range"
        ))
    };
    for sel in promql::plan(&expr, start, end)? {
        if timed_out() {
            return Err(timeout());
        }
        let mut chosen: BTreeMap<u64, Arc<Labels>> = BTreeMap::new();
        for alt in &sel.matchers {
            chosen.extend(storage.select(alt));
        }
        let ids: Vec<u64> = chosen.keys().copied().collect();
        let mut read = storage
            .read_within(ids.clone(), sel.from, sel.to, budget)
            .await
            .map_err(|e| if e.is::<TooManySamples>() { too_many() } else { ApiError::internal(e) })?;
        for (_, points) in read.iter_mut() {
            promql::eval::as_column(points, sel.column);
        }
        with_rollups(storage, &ids, &sel, &mut read).await?;
        let mut series = Vec::with_capacity(read.len());
        for (id, points) in read {
            budget = budget.checked_sub(points.len()).ok_or_else(too_many)?;
            series.push(Series { metric: promql::eval::metric_of(&chosen[&id]), points });
        }
        data.insert(sel.key, series);
    }
    // Evaluation is CPU work: on the blocking pool, off the runtime workers.
    tokio::task::spawn_blocking(move || {
        let _held = held;
        let ev = Evaluator::new(&data, start, end, step);
        let mut out = Vec::new();
        let mut t = start;
        while t <= end {
            if timed_out() {
                return Err(timeout());
            }
            out.push((t, ev.eval(&expr, t)?));
            t += step;
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("query evaluation: {e}")))?
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub async fn instant(api: Arc<Api>, params: Params) -> Result<serde_json::Value, ApiError> {
    let query = params.get("query").ok_or_else(|| ApiError::bad_data("missing parameter `query`"))?;
    let t = params.time("time", now_ms()).map_err(ApiError::bad_data)?;
    let mut results = api.queries.evaluate(&api.storage, query, t, t, 1).await?;
    let (_, value) = results.pop().ok_or_else(|| ApiError::bad_data("no evaluation"))?;
    Ok(instant_json(value, t))
}

/// A value as the instant-query API renders it.
pub fn instant_json(value: Value, t: i64) -> serde_json::Value {
    match value {
        Value::Scalar(v) => json!({"resultType": "scalar", "result": [format_time(t), format_value(v)]}),
        Value::String(s) => json!({"resultType": "string", "result": [format_time(t), s]}),
        Value::Vector(v) => json!({"resultType": "vector", "result": v.into_iter().map(|s| json!({
            "metric": s.metric.to_json(), "value": [format_time(t), format_value(s.v)]})).collect::<Vec<_>>()}),
        Value::Matrix(m) => {
            let series = m.into_iter().map(|s| (s.metric, s.points)).collect();
            serde_json::to_value(Matrix(series)).unwrap_or_default()
        }
    }
}

pub async fn range(api: Arc<Api>, params: Params) -> Result<Matrix, ApiError> {
    let query = params.get("query").ok_or_else(|| ApiError::bad_data("missing parameter `query`"))?;
    let start = params.time("start", i64::MIN).map_err(ApiError::bad_data)?;
    let end = params.time("end", i64::MIN).map_err(ApiError::bad_data)?;
    if start == i64::MIN || end == i64::MIN {
        return Err(ApiError::bad_data("query_range needs `start` and `end`"));
    }
    let step = params
        .duration("step")
        .map_err(ApiError::bad_data)?
        .ok_or_else(|| ApiError::bad_data("missing parameter `step`"))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted; try a positive integer",
        ));
    }
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time"));
    }
    if (end - start) / step > MAX_STEPS {
        return Err(ApiError::bad_data(format!(
            "exceeded maximum resolution of {MAX_STEPS} points per timeseries; try decreasing the query resolution (?step=XX)"
        )));
    }
    let steps = api.queries.evaluate(&api.storage, query, start, end, step).await?;
    range_json(steps)
}

/// Step results folded into the matrix the range API returns.
pub fn range_json(steps: Vec<(i64, Value)>) -> Result<Matrix, ApiError> {
    let mut series: BTreeMap<Metric, Vec<(i64, f64)>> = BTreeMap::new();
    for (t, value) in steps {
        match value {
            Value::Scalar(v) => series.entry(Metric::default()).or_default().push((t, v)),
            Value::Vector(samples) => {
                for s in samples {
                    series.entry(s.metric).or_default().push((t, s.v));
                }
            }
            other => {
                return Err(ApiError::bad_data(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    other.kind()
                )));
            }
        }
    }
    Ok(Matrix(series.into_iter().collect()))
}

/// A matrix as the API renders it, serialized straight from the series: a
/// tree of JSON values, one per point, took a sixth of a long range query.
pub struct Matrix(pub Vec<(Metric, Vec<(i64, f64)>)>);

impl serde::Serialize for Matrix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct One<'a>(&'a Metric, &'a [(i64, f64)]);
        impl serde::Serialize for One<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("metric", self.0)?;
                m.serialize_entry("values", &Points(self.1))?;
                m.end()
            }
        }
        struct Points<'a>(&'a [(i64, f64)]);
        impl serde::Serialize for Points<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|&(t, v)| (ApiTime(t), ApiFloat(v))))
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("resultType", "matrix")?;
        m.serialize_entry("result", &self.0.iter().map(|(metric, points)| One(metric, points)).collect::<Vec<_>>())?;
        m.end()
    }
}

pub async fn series(api: Arc<Api>, params: Params) -> Result<serde_json::Value, ApiError> {
    let matches = params.all("match[]");
    if matches.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = params.time("start", i64::MIN).map_err(ApiError::bad_data)?;
    let end = params.time("end", i64::MAX).map_err(ApiError::bad_data)?;
    let mut found = selectors(&api, &matches)?;
    if start > i64::MIN || end < i64::MAX {
        let ids = found.iter().map(|(id, _)| *id).collect();
        let active: std::collections::HashSet<u64> =
            api.storage.with_data_between(ids, start, end).await.map_err(ApiError::internal)?.into_iter().collect();
        found.retain(|(id, _)| active.contains(id));
    }
    Ok(serde_json::Value::Array(found.into_iter().map(|(_, l)| promql::eval::metric_of(&l).to_json()).collect()))
}

pub async fn labels(api: Arc<Api>, params: Params) -> Result<serde_json::Value, ApiError> {
    let matches = params.all("match[]");
    if matches.is_empty() {
        return Ok(json!(api.storage.label_names()));
    }
    let mut names: Vec<String> = selectors(&api, &matches)?
        .iter()
        .flat_map(|(_, l)| l.iter().map(|(n, _)| n.to_owned()).collect::<Vec<_>>())
        .collect();
    names.sort();
    names.dedup();
    Ok(json!(names))
}

pub async fn label_values(api: Arc<Api>, params: Params, name: String) -> Result<serde_json::Value, ApiError> {
    let matches = params.all("match[]");
    if matches.is_empty() {
        return Ok(json!(api.storage.label_values(&name)));
    }
    let mut values: Vec<String> =
        selectors(&api, &matches)?.iter().filter_map(|(_, l)| l.get(&name).map(str::to_owned)).collect();
    values.sort();
    values.dedup();
    Ok(json!(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_render_as_the_prometheus_api_does() {
        let metric = Metric::new(vec![("job".into(), "a\"b".into()), ("a".into(), "1".into())]);
        let points = vec![(1000, 1.5), (1500, f64::NAN), (2000, f64::INFINITY), (3000, -0.0), (-4000, 1e-7)];
        let rendered = serde_json::to_value(Matrix(vec![(metric, points)])).unwrap();
        assert_eq!(
            rendered,
            json!({"resultType": "matrix", "result": [{"metric": {"a": "1", "job": "a\"b"},
                "values": [[1, "1.5"], [1.5, "NaN"], [2, "+Inf"], [3, "-0"], [-4, "0.0000001"]]}]})
        );
        let instant =
            instant_json(Value::Matrix(vec![Series { metric: Metric::default(), points: vec![(0, 2.0)] }]), 0);
        assert_eq!(instant, json!({"resultType": "matrix", "result": [{"metric": {}, "values": [[0, "2"]]}]}));
    }
}
