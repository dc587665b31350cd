//! The tsdb as a library: open it on a directory (a store of its own) or on
//! an existing shared store, write samples, and ask for aggregates over a
//! time range with tag filters, group-by and step-aligned buckets. It is the
//! same storage engine the role serves over HTTP.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use edgebox::roles::tsdb::db::{Aggregate, Db, Func};
//! let db = Db::open(std::path::Path::new("/var/lib/myapp/tsdb"))?;
//! db.write("temperature", 1_700_000_000_000, 21.5, &[("room", "kitchen")]).await?;
//! let rows = db.aggregate(&Aggregate::new("temperature", Func::Avg, 1_699_999_000_000, 1_700_000_000_000)).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::promql::is_stale;
use super::storage::{Incoming, Labels, Limits, Matcher, Storage};
use crate::core::store::{CORE_SCHEMA, SchemaOwner, Store, StoreOptions};

/// One sample to write.
#[derive(Debug, Clone)]
pub struct Point {
    pub metric: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    pub value: f64,
    pub tags: Vec<(String, String)>,
}

/// The function applied to the points of each group (and bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Func {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    /// φ in 0..=1, linear interpolation between ranks.
    Quantile(f64),
}

/// What to aggregate.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub metric: String,
    pub func: Func,
    /// Inclusive range, milliseconds.
    pub from: i64,
    pub to: i64,
    /// Only series whose tags equal these.
    pub filters: Vec<(String, String)>,
    /// One result row per distinct combination of these tags.
    pub group_by: Vec<String>,
    /// Bucket width in milliseconds, buckets aligned to `from`; None: one
    /// value for the whole range.
    pub step: Option<i64>,
}

impl Aggregate {
    pub fn new(metric: &str, func: Func, from: i64, to: i64) -> Self {
        Self { metric: metric.into(), func, from, to, filters: Vec::new(), group_by: Vec::new(), step: None }
    }
    pub fn filter(mut self, tag: &str, value: &str) -> Self {
        self.filters.push((tag.into(), value.into()));
        self
    }
    pub fn group_by(mut self, tag: &str) -> Self {
        self.group_by.push(tag.into());
        self
    }
    pub fn step(mut self, ms: i64) -> Self {
        self.step = Some(ms);
        self
    }
}

/// One group's results: its group-by tags and (bucket start, value) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub tags: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}

/// Group-by tags → bucket start → values.
type Groups = BTreeMap<Vec<(String, String)>, BTreeMap<i64, Vec<f64>>>;

pub struct Db {
    storage: Arc<Storage>,
}

const OWNERS: &[SchemaOwner] = &[CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: super::storage::MIGRATIONS }];

fn library_limits() -> Limits {
    // A library caller owns its data: no time window, generous limits.
    Limits {
        out_of_order_ms: i64::MAX / 4,
        max_future_ms: i64::MAX / 4,
        max_series: 10_000_000,
        max_series_per_metric: 10_000_000,
    }
}

impl Db {
    /// Opens (or creates) a database in `dir` (file `dir/tsdb.redb`).
    /// Blocking.
    pub fn open(dir: &Path) -> anyhow::Result<Db> {
        std::fs::create_dir_all(dir)?;
        let store = Store::open(&dir.join("tsdb.redb"), OWNERS, &StoreOptions::default())?;
        Self::on_store(store)
    }

    /// Uses an already open store (for example the appliance's). Blocking.
    pub fn on_store(store: Store) -> anyhow::Result<Db> {
        Ok(Db { storage: Arc::new(Storage::open(store, library_limits())?) })
    }

    /// Writes one sample durably.
    pub async fn write(&self, metric: &str, ts: i64, value: f64, tags: &[(&str, &str)]) -> anyhow::Result<()> {
        let point = Point {
            metric: metric.into(),
            ts,
            value,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        self.write_batch(&[point]).await.map(|_| ())
    }

    /// Writes many samples in one durable commit; returns how many.
    pub async fn write_batch(&self, points: &[Point]) -> anyhow::Result<usize> {
        let mut batch = Vec::with_capacity(points.len());
        for (i, p) in points.iter().enumerate() {
            let mut pairs = p.tags.clone();
            pairs.push(("__name__".into(), p.metric.clone()));
            let labels = Labels::new(pairs).map_err(|e| anyhow::anyhow!("point {i} ({}): {e}", p.metric))?;
            batch.push(Incoming { labels, t: p.ts, v: p.value, line: i + 1 });
        }
        let outcome = self.storage.append(batch, 0).await?;
        if let Some((line, why)) = outcome.rejected.first() {
            anyhow::bail!("point {}: {why}", line - 1);
        }
        Ok(outcome.accepted)
    }

    /// Computes `a.func` per group (and per bucket) over the raw points.
    pub async fn aggregate(&self, a: &Aggregate) -> anyhow::Result<Vec<Row>> {
        anyhow::ensure!(a.from <= a.to, "aggregate: `from` is after `to`");
        anyhow::ensure!(a.step.is_none_or(|s| s > 0), "aggregate: step must be positive");
        let mut matchers = vec![Matcher::equal("__name__", &a.metric)];
        matchers.extend(a.filters.iter().map(|(k, v)| Matcher::equal(k, v)));
        let series = self.storage.select(&matchers);
        let labels: BTreeMap<u64, Arc<Labels>> = series.iter().cloned().collect();
        let data = self.storage.read(series.into_iter().map(|(id, _)| id).collect(), a.from, a.to).await?;
        let mut groups: Groups = BTreeMap::new();
        for (id, points) in data {
            let l = &labels[&id];
            let key: Vec<(String, String)> =
                a.group_by.iter().filter_map(|g| l.get(g).map(|v| (g.clone(), v.to_owned()))).collect();
            let buckets = groups.entry(key).or_default();
            for (t, v) in points {
                if is_stale(v) {
                    continue;
                }
                let bucket = a.step.map_or(a.from, |s| a.from + (t - a.from) / s * s);
                buckets.entry(bucket).or_default().push(v);
            }
        }
        Ok(groups
            .into_iter()
            .map(|(tags, buckets)| Row {
                tags,
                points: buckets
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(t, mut v)| (t, apply(a.func, &mut v)))
                    .collect(),
            })
            .filter(|r| !r.points.is_empty())
            .collect())
    }
}

fn apply(func: Func, v: &mut [f64]) -> f64 {
    let n = v.len() as f64;
    match func {
        Func::Avg => v.iter().sum::<f64>() / n,
        Func::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
        Func::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Func::Sum => v.iter().sum(),
        Func::Count => n,
        Func::Last => v[v.len() - 1],
        Func::Quantile(q) => super::promql::quantile(q, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_then_aggregate_with_filters_groups_and_steps() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut points = Vec::new();
        for i in 0..60i64 {
            for (room, base) in [("kitchen", 20.0), ("hall", 15.0)] {
                points.push(Point {
                    metric: "temp".into(),
                    ts: i * 1000,
                    value: base + (i % 10) as f64,
                    tags: vec![("room".into(), room.into()), ("floor".into(), "1".into())],
                });
            }
        }
        assert_eq!(db.write_batch(&points).await.unwrap(), 120);
        db.write("temp", 30_000, 100.0, &[("room", "attic"), ("floor", "2")]).await.unwrap();

        let all = db.aggregate(&Aggregate::new("temp", Func::Count, 0, 59_000)).await.unwrap();
        assert_eq!(all, vec![Row { tags: vec![], points: vec![(0, 121.0)] }]);
        let kitchen =
            db.aggregate(&Aggregate::new("temp", Func::Avg, 0, 59_000).filter("room", "kitchen")).await.unwrap();
        assert_eq!(kitchen[0].points, vec![(0, 24.5)]);
        let by_floor = db.aggregate(&Aggregate::new("temp", Func::Max, 0, 59_000).group_by("floor")).await.unwrap();
        let maxes: Vec<f64> = by_floor.iter().map(|r| r.points[0].1).collect();
        assert_eq!(maxes, vec![29.0, 100.0]);
        let stepped = db
            .aggregate(&Aggregate::new("temp", Func::Sum, 0, 19_999).filter("room", "hall").step(10_000))
            .await
            .unwrap();
        assert_eq!(stepped[0].points, vec![(0, 195.0), (10_000, 195.0)]);
        let q =
            db.aggregate(&Aggregate::new("temp", Func::Quantile(0.5), 0, 9_000).filter("room", "hall")).await.unwrap();
        assert_eq!(q[0].points, vec![(0, 19.5)]);
        let last = db.aggregate(&Aggregate::new("temp", Func::Last, 0, 59_000).filter("room", "hall")).await.unwrap();
        assert_eq!(last[0].points, vec![(0, 24.0)]);
        assert!(db.write("9bad", 0, 1.0, &[]).await.unwrap_err().to_string().contains("metric name"));
        assert!(db.aggregate(&Aggregate::new("temp", Func::Sum, 10, 0)).await.is_err());
        drop(db);
        // Reopening finds everything.
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(
            db.aggregate(&Aggregate::new("temp", Func::Count, 0, 59_000)).await.unwrap()[0].points,
            vec![(0, 121.0)]
        );
    }
}
