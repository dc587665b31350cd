//! The tsdb storage engine on the shared store.
//!
//! Prometheus's design, on redb: an append applies its samples to the
//! in-memory heads (head.rs) and commits one write-ahead-log record
//! (wal.rs) durably before it is acknowledged, so kill -9 loses nothing
//! acknowledged. A checkpoint (checkpoint.rs) periodically writes sealed
//! chunks, merges out-of-order samples into them, saves each open head and
//! drops the log records it covers, all in one transaction; a restart
//! loads the heads and replays the log after the checkpoint. Chunks use the
//! smaller of Gorilla and a decimal encoding (chunk.rs). The series index
//! lives in memory, rebuilt from `tsdb.series`.

pub mod blocks;
mod checkpoint;
pub mod chunk;
pub mod chunk_rows;
pub mod head;
pub mod index;
pub mod labels;
mod queue;
pub mod rollup;
mod slots;
mod tables;
mod varint;
pub mod wal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::ReadableTable;

use crate::core::store::{Durability, Store};
use head::Heads;
pub use index::{Index, MatchOp, Matcher, SeriesEntry};
pub use labels::Labels;
pub use rollup::{Column, RollupPolicy};
pub use tables::MIGRATIONS;
use tables::{CHUNK_ROWS, FORWARD, HEAD_BLOCKS, HEAD_CODEC, META, SERIES_BLOCKS, SERIES_CODEC, WAL};

/// Log bytes after which a checkpoint is asked for early.
const WAL_CHECKPOINT_BYTES: u64 = 64 << 20;

/// One sample to append, with the input line it came from (for errors).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub line: usize,
}

/// A sample whose series is already resolved to an id.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub id: u64,
    pub t: i64,
    pub v: f64,
    pub line: usize,
}

/// Limits checked on every append.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub out_of_order_ms: i64,
    pub max_future_ms: i64,
    pub max_series: usize,
    pub max_series_per_metric: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{0}")]
    Cardinality(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Log sequence bookkeeping.
struct Seqs {
    next: u64,
    applying: std::collections::BTreeSet<u64>,
}

impl Seqs {
    fn begin(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.applying.insert(seq);
        seq
    }

    fn applied(&mut self, seq: u64) {
        self.applying.remove(&seq);
    }

    /// Every sequence up to this one is wholly in the heads.
    fn settled(&self) -> u64 {
        self.applying.first().map_or(self.next, |&first| first) - 1
    }
}

/// How long data is kept: raw samples (None: forever) and each rollup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub raw_ms: Option<i64>,
    pub rollups: RollupPolicy,
}

/// What an append kept and refused.
#[derive(Debug, Default)]
pub struct AppendOutcome {
    pub accepted: usize,
    /// (input line, reason) per refused sample.
    pub rejected: Vec<(usize, String)>,
}

pub struct Storage {
    store: Store,
    index: RwLock<Index>,
    heads: Arc<Heads>,
    /// Log sequences: the next one, and those whose samples are still
    /// being applied to the heads (a checkpoint covers only what is below).
    seqs: Mutex<Seqs>,
    next_series_id: AtomicU64,
    /// One series creation at a time, so two requests naming the same new
    /// series get the same id.
    creating: tokio::sync::Mutex<()>,
    /// One checkpoint at a time.
    checkpointing: tokio::sync::Mutex<()>,
    wal_bytes: AtomicU64,
    limits: Limits,
    retention: Retention,
    /// Samples per queued remote_write batch; None: no forwarding.
    forward_batch: Option<usize>,
    /// Wakes the forwarder when a batch is queued.
    pub forward_queued: tokio::sync::Notify,
    /// Wakes the checkpoint loop when the log grew past its bound.
    pub checkpoint_wanted: tokio::sync::Notify,
}

impl Storage {
    /// Loads the index and the heads, replaying the log after the last
    /// checkpoint. Blocking: call off the async workers.
    pub fn open(store: Store, limits: Limits) -> anyhow::Result<Storage> {
        let heads = Heads::default();
        let (index, next_id, next_seq, replayed) = store.read_blocking(|txn| {
            let mut ix = Index::default();
            let series = txn.open_table(SERIES_BLOCKS)?;
            for (id, key) in blocks::entries(&series, SERIES_CODEC, "tsdb.series_blocks")? {
                let labels = Labels::decode(&key).map_err(|e| anyhow::anyhow!("tsdb.series_blocks id {id}: {e}"))?;
                ix.insert(id, labels);
            }
            let chunks = txn.open_table(CHUNK_ROWS)?;
            for id in ix.ids() {
                if let Some(floor) = chunk_rows::newest(&chunks, id)? {
                    heads.with(id, |h| h.set_floor(floor));
                }
            }
            let saved = txn.open_table(HEAD_BLOCKS)?;
            for (id, v) in blocks::entries(&saved, HEAD_CODEC, "tsdb.head_blocks")? {
                let samples = chunk::decode(&v).map_err(|e| anyhow::anyhow!("tsdb.head_blocks id {id}: {e}"))?;
                heads.with(id, |h| h.restore(&samples));
            }
            let meta = txn.open_table(META)?;
            let next_id = meta.get("next_series_id")?.map_or(1, |v| v.value());
            let checkpoint = meta.get("checkpoint_seq")?.map_or(0, |v| v.value());
            let mut last_seq = checkpoint;
            let mut replayed = 0usize;
            for row in txn.open_table(WAL)?.range(checkpoint + 1..)? {
                let (seq, rec) = row?;
                last_seq = seq.value();
                let entries =
                    wal::decode(rec.value()).map_err(|e| anyhow::anyhow!("tsdb.wal record {last_seq}: {e}"))?;
                for e in &entries {
                    heads.with(e.id, |h| h.push(e.t, e.v));
                }
                replayed += entries.len();
            }
            Ok((ix, next_id, last_seq + 1, replayed))
        })?;
        if replayed > 0 {
            tracing::info!(samples = replayed, "tsdb replayed the write-ahead log");
        }
        metrics::gauge!("edgebox_tsdb_series").set(index.len() as f64);
        Ok(Storage {
            store,
            index: RwLock::new(index),
            heads: Arc::new(heads),
            seqs: Mutex::new(Seqs { next: next_seq, applying: std::collections::BTreeSet::new() }),
            next_series_id: AtomicU64::new(next_id),
            creating: tokio::sync::Mutex::new(()),
            checkpointing: tokio::sync::Mutex::new(()),
            wal_bytes: AtomicU64::new(0),
            limits,
            retention: Retention::default(),
            forward_batch: None,
            forward_queued: tokio::sync::Notify::new(),
            checkpoint_wanted: tokio::sync::Notify::new(),
        })
    }

    /// How long raw data and rollups are kept, which reads need to know
    /// where raw data ends.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Queues every accepted sample for the upstream from now on, in
    /// remote_write batches of at most `batch` samples.
    pub fn with_forwarding(mut self, batch: usize) -> Self {
        self.forward_batch = Some(batch.max(1));
        self
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, Seqs> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.index().len()
    }

    /// Appends samples durably. Samples outside the time window are refused
    /// one by one; a batch that would break a series limit is refused whole.
    pub async fn append(&self, batch: Vec<Incoming>, now_ms: i64) -> Result<AppendOutcome, AppendError> {
        let ids = self.resolve(batch.iter().map(|s| &s.labels)).await?;
        let resolved = batch.iter().zip(ids).map(|(s, id)| Resolved { id, t: s.t, v: s.v, line: s.line }).collect();
        self.append_resolved(resolved, now_ms).await
    }

    /// Series ids of label sets, creating the missing series durably (all
    /// or none: a set that would break a limit refuses the whole batch).
    pub async fn resolve<'a>(&self, sets: impl Iterator<Item = &'a Labels>) -> Result<Vec<u64>, AppendError> {
        let mut ids = Vec::new();
        let mut missing: HashMap<Labels, Vec<usize>> = HashMap::new();
        {
            let ix = self.index();
            for (i, labels) in sets.enumerate() {
                match ix.id_of(labels) {
                    Some(id) => ids.push(id),
                    None => {
                        ids.push(0);
                        missing.entry(labels.clone()).or_default().push(i);
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        let _one_at_a_time = self.creating.lock().await;
        let mut fresh: Vec<(u64, Labels)> = Vec::new();
        {
            let ix = self.index();
            missing.retain(|labels, positions| match ix.id_of(labels) {
                Some(id) => {
                    positions.iter().for_each(|&i| ids[i] = id);
                    false
                }
                None => true,
            });
            self.check_cardinality(&ix, missing.keys())?;
            for (labels, positions) in missing {
                let id = self.next_series_id.fetch_add(1, Ordering::Relaxed);
                positions.iter().for_each(|&i| ids[i] = id);
                fresh.push((id, labels));
            }
        }
        if fresh.is_empty() {
            return Ok(ids);
        }
        let rows: Vec<(u64, Vec<u8>)> = fresh.iter().map(|(id, l)| (*id, l.encode())).collect();
        let next = self.next_series_id.load(Ordering::Relaxed);
        self.store
            .write(Durability::Immediate, move |txn| {
                let mut series = txn.open_table(SERIES_BLOCKS)?;
                let changes = rows.iter().map(|(id, key)| (*id, Some(key.clone()))).collect();
                blocks::apply(&mut series, changes, SERIES_CODEC, "tsdb.series_blocks")?;
                txn.open_table(META)?.insert("next_series_id", next)?;
                Ok(())
            })
            .await?;
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (id, labels) in fresh {
            ix.insert(id, labels);
        }
        metrics::gauge!("edgebox_tsdb_series").set(ix.len() as f64);
        Ok(ids)
    }

    /// The id of a series that exists.
    pub fn id_of(&self, labels: &Labels) -> Option<u64> {
        self.index().id_of(labels)
    }

    /// Appends samples of known series: applies them to the heads, then
    /// commits their log record durably before returning.
    pub async fn append_resolved(&self, batch: Vec<Resolved>, now_ms: i64) -> Result<AppendOutcome, AppendError> {
        let mut outcome = AppendOutcome::default();
        let horizon = now_ms.saturating_add(self.limits.max_future_ms);
        let mut by_shard: Vec<Vec<Resolved>> = vec![Vec::new(); Heads::shard_count()];
        for s in batch {
            if s.t > horizon {
                outcome.rejected.push((s.line, format!("timestamp {} ms is too far in the future", s.t)));
                metrics::counter!("edgebox_tsdb_samples_rejected_total", "reason" => "future").increment(1);
                continue;
            }
            by_shard[Heads::shard_of(s.id)].push(s);
        }
        let mut accepted = Vec::new();
        let mut late = Vec::new();
        let seq = self.seqs().begin();
        {
            // Shard by shard, concurrent appends interleave; each series
            // still sees one request's samples in order.
            for (shard, samples) in by_shard.iter().enumerate() {
                if samples.is_empty() {
                    continue;
                }
                let mut heads = self.heads.lock(shard);
                for s in samples {
                    let h = heads.get_or_insert_with(s.id, Default::default);
                    if s.t < h.max_t().saturating_sub(self.limits.out_of_order_ms) {
                        late.push(*s);
                        continue;
                    }
                    h.push(s.t, s.v);
                    accepted.push(wal::Entry { id: s.id, t: s.t, v: s.v });
                }
            }
        }
        self.seqs().applied(seq);
        if !late.is_empty() {
            let ix = self.index();
            for s in late {
                let series = ix.get(s.id).map_or_else(|| format!("series {}", s.id), |e| e.labels.to_string());
                outcome.rejected.push((
                    s.line,
                    format!(
                        "sample for {series} at {} ms is more than {} s older than its newest sample",
                        s.t,
                        self.limits.out_of_order_ms / 1000
                    ),
                ));
                metrics::counter!("edgebox_tsdb_samples_rejected_total", "reason" => "out_of_order").increment(1);
            }
        }
        outcome.rejected.sort_by_key(|r| r.0);
        outcome.accepted = accepted.len();
        if accepted.is_empty() {
            return Ok(outcome);
        }
        let record = wal::encode(&accepted);
        let queued = match self.forward_batch {
            Some(batch) => self.forward_bodies(&accepted, batch),
            None => Vec::new(),
        };
        let forwarding = !queued.is_empty();
        let bytes = record.len() as u64;
        self.store
            .write(Durability::Immediate, move |txn| {
                txn.open_table(WAL)?.insert(seq, record.as_slice())?;
                if !queued.is_empty() {
                    // Queued in the same transaction: a sample is forwarded
                    // exactly when it was stored.
                    let mut meta = txn.open_table(META)?;
                    let mut forward = txn.open_table(FORWARD)?;
                    let mut next = meta.get("forward_next_seq")?.map_or(1, |v| v.value());
                    for body in &queued {
                        forward.insert(next, body.as_slice())?;
                        next += 1;
                    }
                    meta.insert("forward_next_seq", next)?;
                }
                Ok(())
            })
            .await?;
        metrics::counter!("edgebox_tsdb_samples_appended_total").increment(outcome.accepted as u64);
        if self.wal_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > WAL_CHECKPOINT_BYTES {
            self.checkpoint_wanted.notify_one();
        }
        if forwarding {
            self.forward_queued.notify_one();
        }
        Ok(outcome)
    }

    fn check_cardinality<'a>(&self, ix: &Index, new: impl Iterator<Item = &'a Labels>) -> Result<(), AppendError> {
        let mut adds = 0;
        let mut per_metric: HashMap<&str, usize> = HashMap::new();
        for labels in new {
            adds += 1;
            *per_metric.entry(labels.metric().unwrap_or("")).or_default() += 1;
        }
        if adds == 0 {
            return Ok(());
        }
        let hit = |msg: String| {
            metrics::counter!("edgebox_tsdb_cardinality_limit_hits_total").increment(1);
            Err(AppendError::Cardinality(msg))
        };
        if ix.len() + adds > self.limits.max_series {
            return hit(format!(
                "series limit reached: {} series exist, this write adds {adds}, tsdb.max_series is {}",
                ix.len(),
                self.limits.max_series
            ));
        }
        for (metric, n) in per_metric {
            if ix.series_of_metric(metric) + n > self.limits.max_series_per_metric {
                return hit(format!(
                    "series limit for metric `{metric}` reached: tsdb.max_series_per_metric is {}",
                    self.limits.max_series_per_metric
                ));
            }
        }
        Ok(())
    }

    /// Series matching every matcher, with their labels.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<(u64, Arc<Labels>)> {
        let ix = self.index();
        ix.select(matchers).into_iter().filter_map(|id| Some((id, ix.get(id)?.labels.clone()))).collect()
    }

    /// Label names, and values of one label, over every series.
    pub fn label_names(&self) -> Vec<String> {
        self.index().label_names()
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.index().label_values(name)
    }

    /// The series (of `ids`) holding samples between `from` and `to`, judged
    /// by their oldest and newest timestamps, as Prometheus's `/series`
    /// judges by block ranges.
    pub async fn with_data_between(&self, ids: Vec<u64>, from: i64, to: i64) -> anyhow::Result<Vec<u64>> {
        let spans: Vec<(u64, i64, Option<i64>)> = ids
            .into_iter()
            .map(|id| (id, self.heads.newest_of(id).unwrap_or(i64::MIN), self.heads.oldest_of(id)))
            .collect();
        self.store
            .read(move |txn| {
                let chunks = txn.open_table(CHUNK_ROWS)?;
                let mut out = Vec::new();
                for (id, newest, in_memory) in spans {
                    let stored =
                        chunks.range((id, i64::MIN)..=(id, i64::MAX))?.next().transpose()?.map(|(k, _)| k.value().1);
                    let oldest = match (stored, in_memory) {
                        (Some(a), Some(b)) => a.min(b),
                        (a, b) => a.or(b).unwrap_or(i64::MAX),
                    };
                    if newest >= from && oldest <= to {
                        out.push(id);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Samples of each series in `[from, to]` (ms), oldest first: chunks
    /// from the store merged with the heads, later writes winning.
    pub async fn read(&self, ids: Vec<u64>, from: i64, to: i64) -> anyhow::Result<Vec<(u64, Vec<(i64, f64)>)>> {
        self.read_within(ids, from, to, usize::MAX).await
    }

    /// As [`Storage::read`], refused with [`TooManySamples`] as soon as the
    /// samples found pass `limit`: stored chunks wholly inside the window
    /// count while they are copied out of the store, each series once it is
    /// decoded. A refused read so never holds more than `limit` decoded
    /// samples (16 bytes each) plus one series per core.
    pub async fn read_within(
        &self,
        ids: Vec<u64>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, Vec<(i64, f64)>)>> {
        let mem: Vec<(u64, head::MemParts)> = ids.iter().map(|&id| (id, self.heads.parts(id, from, to))).collect();
        // Chunks in the store hold nothing newer than a series' floor.
        let need_store = mem.iter().any(|(_, p)| p.floor_t >= from);
        // Chunk values are copied out of the read transaction and decoded
        // with the heads' parts below, split over the cores.
        let stored: Vec<Vec<Vec<u8>>> = if need_store {
            let wanted: Vec<(u64, bool)> = mem.iter().map(|(id, p)| (*id, p.floor_t >= from)).collect();
            self.store
                .read(move |txn| {
                    let chunks = txn.open_table(CHUNK_ROWS)?;
                    let (mut out, mut surely) = (Vec::with_capacity(wanted.len()), 0usize);
                    for (id, want) in wanted {
                        let values = if want { chunk_rows::overlapping(&chunks, id, from, to)? } else { Vec::new() };
                        for (first, v) in &values {
                            if *first >= from && chunk::last_t(v).is_ok_and(|newest| newest <= to) {
                                surely = surely.saturating_add(chunk::sample_count(v).unwrap_or(0));
                            }
                        }
                        if surely > limit {
                            return Err(TooManySamples.into());
                        }
                        out.push(values.into_iter().map(|(_, v)| v).collect());
                    }
                    Ok(out)
                })
                .await?
        } else {
            Vec::new()
        };
        // Decoding and merging is CPU work of up to seconds: on the blocking
        // pool, so a large query does not hold a runtime worker.
        tokio::task::spawn_blocking(move || {
            let series: Vec<(u64, &[Vec<u8>], head::MemParts)> = mem
                .into_iter()
                .enumerate()
                .map(|(i, (id, p))| (id, stored.get(i).map_or(&[][..], Vec::as_slice), p))
                .collect();
            let work = series.iter().map(|(_, s, p)| s.len() + p.sealed.len() + 1).sum::<usize>() * head::CUT_SAMPLES;
            let left = AtomicUsize::new(limit);
            let parts = crate::roles::tsdb::cores::split(&series, work, |part| {
                part.iter()
                    .map(|(id, stored, p)| {
                        let points = merge(decode_parts(*id, stored, p)?, from, to);
                        left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(points.len()))
                            .map_err(|_| TooManySamples)?;
                        Ok((*id, points))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            });
            let mut out = Vec::with_capacity(series.len());
            for part in parts {
                out.extend(part?);
            }
            Ok(out)
        })
        .await?
    }
}

/// A read that passed its sample limit (see [`Storage::read_within`]).
#[derive(Debug, thiserror::Error)]
#[error("the read passed its sample limit")]
pub struct TooManySamples;

/// One series' runs for `merge`, oldest write first: its stored chunks,
/// sealed chunks, the open chunk, then late and out-of-order samples.
fn decode_parts(id: u64, stored: &[Vec<u8>], p: &head::MemParts) -> anyhow::Result<Vec<Vec<(i64, f64)>>> {
    let mut parts = Vec::with_capacity(stored.len() + p.sealed.len() + 3);
    for v in stored {
        parts.push(chunk::decode(v).map_err(|e| anyhow::anyhow!("tsdb.chunk_rows {id}: {e}"))?);
    }
    for v in &p.sealed {
        parts.push(chunk::decode(v)?);
    }
    if let Some(open) = &p.open {
        parts.push(
            crate::roles::tsdb::gorilla::decode(open)
                .map_err(|e| anyhow::anyhow!("the open chunk of series {id}: {e}"))?,
        );
    }
    parts.push(p.late.clone());
    parts.push(p.ooo.clone());
    Ok(parts)
}

/// Merges sample runs given oldest write first into one run in `[from,
/// to]`, a later run's sample replacing an earlier one's at the same time.
/// Runs in arrival order (late samples) are sorted first, the last of
/// equal times kept.
fn merge(parts: Vec<Vec<(i64, f64)>>, from: i64, to: i64) -> Vec<(i64, f64)> {
    let mut acc: Vec<(i64, f64)> = Vec::new();
    for mut run in parts {
        if run.is_empty() {
            continue;
        }
        if !run.windows(2).all(|w| w[0].0 < w[1].0) {
            run.sort_by_key(|s| s.0);
            let mut kept: Vec<(i64, f64)> = Vec::with_capacity(run.len());
            for s in run {
                match kept.last_mut() {
                    Some(last) if last.0 == s.0 => *last = s,
                    _ => kept.push(s),
                }
            }
            run = kept;
        }
        acc = match acc.last() {
            None => run,
            Some(last) if last.0 < run[0].0 => {
                acc.extend(run);
                acc
            }
            Some(_) => merge_two(&acc, &run),
        };
    }
    let lo = acc.partition_point(|s| s.0 < from);
    let hi = acc.partition_point(|s| s.0 <= to);
    acc.truncate(hi);
    acc.drain(..lo);
    acc
}

/// Two sorted runs into one; `newer` wins equal timestamps.
fn merge_two(older: &[(i64, f64)], newer: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        match older[i].0.cmp(&newer[j].0) {
            std::cmp::Ordering::Less => {
                out.push(older[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(newer[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(newer[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

#[cfg(test)]
mod merge_tests {
    use super::merge;

    #[test]
    fn later_runs_win_and_the_range_is_cut() {
        let chunk = vec![(1, 1.0), (2, 2.0), (3, 3.0)];
        let head = vec![(4, 4.0), (5, 5.0)];
        let late = vec![(2, 20.0), (0, 0.5), (2, 21.0)];
        assert_eq!(merge(vec![chunk.clone(), head.clone()], 2, 4), vec![(2, 2.0), (3, 3.0), (4, 4.0)]);
        assert_eq!(
            merge(vec![chunk, head, late], i64::MIN, i64::MAX),
            vec![(0, 0.5), (1, 1.0), (2, 21.0), (3, 3.0), (4, 4.0), (5, 5.0)]
        );
        assert!(merge(vec![vec![], vec![]], 0, 10).is_empty());
    }
}
