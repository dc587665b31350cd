//! Storage-engine tests on a real store: durability across reopen, the
//! out-of-order window, last-write-wins, checkpoints, retention and
//! cardinality limits.

use std::sync::Arc;

use super::storage::{AppendError, Incoming, Labels, Limits, Matcher, Storage};
use crate::core::store::{CORE_SCHEMA, SchemaOwner, Store, StoreOptions};

const OWNERS: &[SchemaOwner] = &[CORE_SCHEMA, SchemaOwner { name: "tsdb", migrations: super::storage::MIGRATIONS }];

fn limits() -> Limits {
    Limits { out_of_order_ms: 3_600_000, max_future_ms: 600_000, max_series: 1000, max_series_per_metric: 100 }
}

fn open(dir: &tempfile::TempDir, limits: Limits) -> Arc<Storage> {
    let store = Store::open(&dir.path().join("s.redb"), OWNERS, &StoreOptions::default()).unwrap();
    Arc::new(Storage::open(store, limits).unwrap())
}

fn labels(name: &str, inst: &str) -> Labels {
    Labels::new(vec![("__name__".into(), name.into()), ("instance".into(), inst.into())]).unwrap()
}

fn sample(name: &str, inst: &str, t: i64, v: f64) -> Incoming {
    Incoming { labels: labels(name, inst), t, v, line: 1 }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn read_all(s: &Storage, name: &str) -> Vec<(i64, f64)> {
    let ids: Vec<u64> = s.select(&[Matcher::equal("__name__", name)]).into_iter().map(|(id, _)| id).collect();
    s.read(ids, i64::MIN, i64::MAX).await.unwrap().into_iter().flat_map(|(_, p)| p).collect()
}

#[test]
fn writes_survive_reopen_and_duplicates_keep_the_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let s = open(&dir, limits());
        let o = s
            .append(
                vec![sample("up", "a", 1000, 1.0), sample("up", "a", 2000, 2.0), sample("up", "b", 1000, 5.0)],
                10_000,
            )
            .await
            .unwrap();
        assert_eq!((o.accepted, o.rejected.len()), (3, 0));
        s.append(vec![sample("up", "a", 2000, 20.0)], 10_000).await.unwrap();
    });
    rt.block_on(async {
        let s = open(&dir, limits());
        assert_eq!(s.series_count(), 2);
        let ids: Vec<u64> = s.select(&[Matcher::equal("instance", "a")]).into_iter().map(|(id, _)| id).collect();
        let data = s.read(ids, 0, 5000).await.unwrap();
        assert_eq!(data[0].1, vec![(1000, 1.0), (2000, 20.0)]);
    });
}

#[test]
fn the_time_window_refuses_old_and_future_samples_by_line() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir, limits());
        s.append(vec![sample("up", "a", 10_000_000, 1.0)], 10_000_000).await.unwrap();
        let mut late = sample("up", "a", 10_000_000 - 3_600_001, 1.0);
        late.line = 7;
        let mut future = sample("up", "a", 10_000_000 + 600_001, 1.0);
        future.line = 9;
        let ok = sample("up", "a", 10_000_000 - 3_599_000, 3.0);
        let o = s.append(vec![late, future, ok], 10_000_000).await.unwrap();
        assert_eq!(o.accepted, 1);
        let lines: Vec<usize> = o.rejected.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![7, 9], "{:?}", o.rejected);
        assert!(o.rejected[0].1.contains("older than its newest sample"));
        assert!(o.rejected[1].1.contains("future"));
    });
}

#[test]
fn checkpoints_change_nothing_a_reader_sees_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    // A day-long out-of-order window, so a late write can land in a sealed chunk.
    let lim = Limits { out_of_order_ms: 86_400_000, ..limits() };
    let end = 2000 * 15_000;
    let expected = rt.block_on(async {
        let s = open(&dir, lim);
        let mut batch = Vec::new();
        for i in 0..2000i64 {
            batch.push(sample("temp", "a", i * 15_000, (i as f64 * 0.1).sin()));
            batch.push(sample("temp", "b", i * 15_000 + 7, i as f64 * 0.25));
        }
        s.append(batch, end).await.unwrap();
        let before = read_all(&s, "temp").await;
        assert_eq!(before.len(), 4000);
        let stats = s.checkpoint(None).await.unwrap();
        assert_eq!((stats.series, stats.records), (2, 1));
        assert!(read_all(&s, "temp").await == before, "the checkpoint changed the data");
        // A late write lands inside a chunk already in the store.
        s.append(vec![sample("temp", "a", 15_000, 42.0)], end).await.unwrap();
        let mut expected = before.clone();
        let i = expected.iter().position(|p| p.0 == 15_000).unwrap();
        expected[i].1 = 42.0;
        assert!(read_all(&s, "temp").await == expected, "the late write must win over the chunk");
        s.checkpoint(None).await.unwrap();
        assert!(read_all(&s, "temp").await == expected, "the checkpoint must merge the late sample");
        let (bytes, stored, log) = s.footprint().await.unwrap();
        assert_eq!((stored, log), (4000, 0));
        assert!((bytes as f64) / 4000.0 < 6.0, "{} bytes per sample", bytes as f64 / 4000.0);
        // Written after the checkpoint: only in the log.
        s.append(vec![sample("temp", "b", end, 1.5)], end).await.unwrap();
        expected.push((end, 1.5));
        expected
    });
    rt.block_on(async {
        let s = open(&dir, lim);
        let mut again = read_all(&s, "temp").await;
        again.sort_by_key(|p| p.0);
        let mut want = expected.clone();
        want.sort_by_key(|p| p.0);
        assert!(again == want, "a restart must see the checkpoint plus the replayed log");
        // A bare selector and one inside an expression read the same data.
        for q in ["temp", "temp + 0"] {
            let out = super::query::evaluate(&s, q, end, end, 1, super::query::QueryLimits::NONE).await.unwrap();
            let super::promql::Value::Vector(v) = &out[0].1 else { panic!("{q}: not a vector") };
            assert_eq!(v.len(), 2, "{q}: {v:?}");
        }
        // Retention drops whole chunks past the horizon.
        s.checkpoint(Some(end / 2)).await.unwrap();
        let left = read_all(&s, "temp").await;
        assert!(left.len() < 4000 && left.iter().all(|p| p.0 >= end / 2 - 240 * 15_000), "{}", left.len());
    });
}

#[test]
fn checkpoints_of_many_series_save_every_batch() {
    // 5 000 series: three of the checkpoint's transactions of 2 048.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let lim = Limits { max_series: 10_000, max_series_per_metric: 10_000, ..limits() };
    let n = 5000;
    rt.block_on(async {
        let s = open(&dir, lim);
        let batch = (0..n)
            .flat_map(|i| {
                let inst = format!("i{i}");
                [sample("m", &inst, 1000, i as f64), sample("m", &inst, 2000, -(i as f64))]
            })
            .collect();
        s.append(batch, 10_000).await.unwrap();
        let stats = s.checkpoint(None).await.unwrap();
        assert_eq!((stats.series, stats.records), (n, 1));
        let (_, stored, log) = s.footprint().await.unwrap();
        assert_eq!((stored, log), (2 * n as u64, 0), "every head saved, the log emptied");
        assert_eq!(s.checkpoint(None).await.unwrap().series, 0, "nothing left to save");
    });
    rt.block_on(async {
        let s = open(&dir, lim);
        let data = read_all(&s, "m").await;
        assert_eq!(data.len(), 2 * n);
        assert_eq!(data.iter().filter(|p| p.0 == 1000).map(|p| p.1).sum::<f64>(), (n * (n - 1) / 2) as f64);
        assert_eq!(data.iter().map(|p| p.1).sum::<f64>(), 0.0);
    });
}

#[test]
fn series_limits_refuse_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir, Limits { max_series: 3, max_series_per_metric: 2, ..limits() });
        s.append(vec![sample("a", "1", 1, 1.0), sample("a", "2", 1, 1.0)], 10).await.unwrap();
        let err = s.append(vec![sample("a", "3", 1, 1.0)], 10).await.unwrap_err();
        assert!(matches!(&err, AppendError::Cardinality(m) if m.contains("metric `a`")), "{err}");
        s.append(vec![sample("b", "1", 1, 1.0)], 10).await.unwrap();
        let err = s.append(vec![sample("c", "1", 1, 1.0), sample("a", "1", 2, 2.0)], 10).await.unwrap_err();
        assert!(err.to_string().contains("max_series is 3"), "{err}");
        assert_eq!(s.series_count(), 3);
        assert_eq!(read_all(&s, "a").await.len(), 2, "a refused batch stores nothing");
    });
}

#[test]
fn size_retention_drops_the_oldest_chunks_first() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir, Limits { out_of_order_ms: i64::MAX / 4, ..limits() });
        let mut batch = Vec::new();
        for i in 0..4800i64 {
            batch.push(sample("big", "a", i * 15_000, (i as f64 * 1.37).sin() * 1e6));
        }
        s.append(batch, i64::MAX / 4).await.unwrap();
        s.checkpoint(None).await.unwrap();
        let (before, _, _) = s.footprint().await.unwrap();
        assert_eq!(s.enforce_size(before * 10).await.unwrap(), 0, "under the limit nothing goes");
        let dropped = s.enforce_size(before / 2).await.unwrap();
        assert!(dropped >= 4, "{dropped}");
        let (after, _, _) = s.footprint().await.unwrap();
        assert!(after <= before / 2 + 8192, "{after} > {}", before / 2);
        let left = read_all(&s, "big").await;
        assert_eq!(left.last().unwrap().0, 4799 * 15_000, "the newest data stays");
        assert!(left[0].0 > 0, "the oldest data went");
    });
}

#[test]
fn rollups_answer_for_time_raw_retention_dropped() {
    use super::storage::{Retention, RollupPolicy};
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let retention = Retention {
            raw_ms: Some(24 * HOUR),
            rollups: RollupPolicy { keep_5m_ms: 240 * HOUR, keep_1h_ms: 720 * HOUR },
        };
        let store = Store::open(&dir.path().join("s.redb"), OWNERS, &StoreOptions::default()).unwrap();
        let s = Storage::open(store, limits()).unwrap().with_retention(retention);
        // Ten hours of 15 s samples, two days ago.
        let start = (now - 48 * HOUR).div_euclid(HOUR) * HOUR;
        let raw: Vec<(i64, f64)> = (0..2400i64).map(|i| (start + i * 15_000, (i % 17) as f64 * 0.5)).collect();
        s.append(raw.iter().map(|&(t, v)| sample("m", "a", t, v)).collect(), now).await.unwrap();
        s.checkpoint(None).await.unwrap();
        let mut passes = 0;
        while s.roll_up(now).await.unwrap().is_some() {
            passes += 1;
            assert!(passes < 10, "the rollup passes do not converge");
        }
        let horizon = s.raw_horizon(now).await.unwrap();
        assert_eq!(horizon, Some(now - 24 * HOUR), "rolled up past the horizon");
        s.checkpoint(horizon).await.unwrap();
        assert!(read_all(&s, "m").await.is_empty(), "raw retention must have dropped the samples");

        for (q, agg) in [
            ("max_over_time(m[1h])", "max"),
            ("min_over_time(m[1h])", "min"),
            ("sum_over_time(m[1h])", "sum"),
            ("count_over_time(m[1h])", "count"),
            ("avg_over_time(m[1h])", "avg"),
        ] {
            let out =
                super::query::evaluate(&s, q, start + HOUR, start + 9 * HOUR, HOUR, super::query::QueryLimits::NONE)
                    .await
                    .unwrap();
            assert_eq!(out.len(), 9, "{q}");
            for (t, value) in out {
                // Buckets cover [t - 1h, t).
                let w: Vec<f64> = raw.iter().filter(|p| p.0 >= t - HOUR && p.0 < t).map(|p| p.1).collect();
                let want = match agg {
                    "max" => w.iter().copied().fold(f64::MIN, f64::max),
                    "min" => w.iter().copied().fold(f64::MAX, f64::min),
                    "sum" => w.iter().sum(),
                    "count" => w.len() as f64,
                    _ => w.iter().sum::<f64>() / w.len() as f64,
                };
                let super::promql::Value::Vector(v) = value else { panic!("{q}: not a vector") };
                assert_eq!(v.len(), 1, "{q} at {t}");
                assert!((v[0].v - want).abs() < 1e-9, "{q} at {t}: {} != {want}", v[0].v);
            }
        }
    });
}

#[test]
fn a_read_past_its_sample_limit_is_refused_before_it_holds_them_all() {
    use super::storage::TooManySamples;
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir, limits());
        let batch = |from: i64, n: i64| -> Vec<Incoming> {
            (from..from + n)
                .flat_map(|i| ["a", "b", "c"].map(|inst| sample("load", inst, i * 1000, i as f64)))
                .collect()
        };
        s.append(batch(0, 1000), 10_000_000).await.unwrap();
        s.checkpoint(None).await.unwrap();
        // Newer samples stay in the heads: those count once decoded.
        s.append(batch(1000, 200), 10_000_000).await.unwrap();
        let ids: Vec<u64> = s.select(&[Matcher::equal("__name__", "load")]).into_iter().map(|(id, _)| id).collect();
        let count = |r: Vec<(u64, Vec<(i64, f64)>)>| r.iter().map(|(_, p)| p.len()).sum::<usize>();
        let refused = |r: anyhow::Result<_>| r.is_err_and(|e: anyhow::Error| e.is::<TooManySamples>());

        // The stored chunks alone (960 samples a series) pass the limit:
        // refused while still compressed.
        assert!(refused(s.read_within(ids.clone(), 0, 999_000, 2000).await));
        assert_eq!(count(s.read_within(ids.clone(), i64::MIN, i64::MAX, 3600).await.unwrap()), 3600);
        assert!(refused(s.read_within(ids.clone(), i64::MIN, i64::MAX, 3599).await));
        // Only the samples inside the window count, not whole edge chunks.
        assert_eq!(count(s.read_within(ids.clone(), 500_000, 1_099_000, 1800).await.unwrap()), 1800);
        assert!(refused(s.read_within(ids.clone(), 500_000, 1_099_000, 1799).await));
    });
}

#[test]
fn a_query_past_its_timeout_answers_503_timeout() {
    use super::query::{QueryLimits, evaluate};
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir, limits());
        s.append(vec![sample("up", "a", 1000, 1.0)], 10_000).await.unwrap();
        let none = QueryLimits { max_samples: 1000, timeout: std::time::Duration::ZERO };
        let e = evaluate(&s, "up", 1000, 61_000, 1000, none).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.kind), (503, "timeout"), "{}", e.message);
        assert!(e.message.contains("tsdb.query_timeout_s"), "{}", e.message);
        let ample = QueryLimits { max_samples: 1000, timeout: std::time::Duration::from_secs(60) };
        assert_eq!(evaluate(&s, "up", 1000, 61_000, 1000, ample).await.unwrap().len(), 61);
    });
}

#[test]
fn queries_past_the_concurrency_limit_wait_their_turn_within_their_timeout() {
    use super::query::{Queries, QueryLimits};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir, limits());
        s.append(vec![sample("up", "a", 1000, 1.0)], 10_000).await.unwrap();
        let queries = Queries::new(QueryLimits { max_samples: 1000, timeout: Duration::from_millis(300) }, 1);
        let held = queries.occupy();
        let e = queries.evaluate(&s, "up", 1000, 1000, 1).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.kind), (503, "timeout"), "{}", e.message);
        assert!(e.message.contains("tsdb.max_concurrent_queries"), "{}", e.message);

        // A waiting query runs as soon as the slot frees.
        let asked = Instant::now();
        let (answer, ()) = tokio::join!(queries.evaluate(&s, "up", 1000, 1000, 1), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(held);
        });
        assert_eq!(answer.unwrap().len(), 1);
        assert!(asked.elapsed() >= Duration::from_millis(100), "it waited for the slot");
        // Its slot came back when it ended.
        drop(queries.occupy());
    });
}
