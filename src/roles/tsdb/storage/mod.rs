//! The tsdb storage engine on the shared store.
//!
//! Writes are acknowledged after a durable group commit of raw samples into
//! `tsdb.samples` (so an acknowledged write survives kill -9), which also
//! gives out-of-order writes and last-write-wins duplicates for free. A
//! background pass packs raw samples older than `compact_after_s` into
//! Gorilla chunks in `tsdb.chunks`, merging with any chunk they overlap, and
//! drops data past retention. Reads merge chunks and raw samples, raw
//! winning. The series index lives in memory, rebuilt from `tsdb.series`.

pub mod index;
pub mod labels;
mod tables;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use redb::{ReadableTable, ReadableTableMetadata};

use super::gorilla;
use crate::core::store::{Durability, Store};
pub use index::{Index, MatchOp, Matcher, SeriesEntry};
pub use labels::Labels;
pub use tables::MIGRATIONS;
use tables::{CHUNKS, FORWARD, META, SAMPLES, SERIES, SERIES_BY_KEY};

/// Samples per packed chunk.
const CHUNK_SAMPLES: usize = 480;

/// One sample to append, with the input line it came from (for errors).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub labels: Labels,
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
    limits: Limits,
    /// Samples per queued remote_write batch; None: no forwarding.
    forward_batch: Option<usize>,
    /// Wakes the forwarder when a batch is queued.
    pub forward_queued: tokio::sync::Notify,
}

type NewSeries = Vec<(Labels, Vec<(i64, f64)>)>;
/// New series of a batch by key, with their samples.
type NewByKey = HashMap<Vec<u8>, (Labels, Vec<(i64, f64)>)>;

impl Storage {
    /// Loads the index from the store. Blocking: call off the async workers.
    pub fn open(store: Store, limits: Limits) -> anyhow::Result<Storage> {
        let index = store.read_blocking(|txn| {
            let series = txn.open_table(SERIES)?;
            let samples = txn.open_table(SAMPLES)?;
            let chunks = txn.open_table(CHUNKS)?;
            let mut ix = Index::default();
            for row in series.iter()? {
                let (id, key) = row?;
                let id = id.value();
                let labels = Labels::decode(key.value()).map_err(|e| anyhow::anyhow!("tsdb.series id {id}: {e}"))?;
                let raw_max =
                    samples.range((id, i64::MIN)..=(id, i64::MAX))?.next_back().transpose()?.map(|(k, _)| k.value().1);
                let chunk_max = chunks
                    .range((id, i64::MIN)..=(id, i64::MAX))?
                    .next_back()
                    .transpose()?
                    .map(|(_, v)| chunk_last_t(v.value()))
                    .transpose()?;
                ix.insert(id, labels, raw_max.max(chunk_max).unwrap_or(i64::MIN));
            }
            Ok(ix)
        })?;
        metrics::gauge!("edgebox_tsdb_series").set(index.len() as f64);
        Ok(Storage {
            store,
            index: RwLock::new(index),
            limits,
            forward_batch: None,
            forward_queued: tokio::sync::Notify::new(),
        })
    }

    /// Queues every accepted sample for the upstream from now on, in
    /// remote_write batches of at most `batch` samples.
    pub fn with_forwarding(mut self, batch: usize) -> Self {
        self.forward_batch = Some(batch.max(1));
        self
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
        let mut outcome = AppendOutcome::default();
        let mut known: Vec<(u64, i64, f64)> = Vec::new();
        let mut new: NewByKey = HashMap::new();
        {
            let ix = self.index();
            for s in batch {
                if s.t > now_ms.saturating_add(self.limits.max_future_ms) {
                    outcome.rejected.push((s.line, format!("timestamp {} ms is too far in the future", s.t)));
                    continue;
                }
                let key = s.labels.encode();
                match ix.id_of(&key) {
                    Some(id) => {
                        let newest = ix.get(id).map_or(i64::MIN, |e| e.max_t);
                        if s.t < newest.saturating_sub(self.limits.out_of_order_ms) {
                            outcome.rejected.push((
                                s.line,
                                format!(
                                    "sample for {} at {} ms is more than {} s older than its newest sample",
                                    s.labels,
                                    s.t,
                                    self.limits.out_of_order_ms / 1000
                                ),
                            ));
                            continue;
                        }
                        known.push((id, s.t, s.v));
                    }
                    None => new.entry(key).or_insert_with(|| (s.labels, Vec::new())).1.push((s.t, s.v)),
                }
            }
            self.check_cardinality(&ix, &new)?;
        }
        for (_, reason) in &outcome.rejected {
            let kind = if reason.contains("future") { "future" } else { "out_of_order" };
            metrics::counter!("edgebox_tsdb_samples_rejected_total", "reason" => kind).increment(1);
        }
        outcome.accepted = known.len() + new.values().map(|(_, p)| p.len()).sum::<usize>();
        if outcome.accepted == 0 {
            return Ok(outcome);
        }
        let new: Arc<NewSeries> = Arc::new(new.into_values().collect());
        let known = Arc::new(known);
        let queued: Arc<Vec<Vec<u8>>> = Arc::new(match self.forward_batch {
            Some(batch) => self.forward_bodies(&new, &known, batch),
            None => Vec::new(),
        });
        let (n, k, q) = (new.clone(), known.clone(), queued.clone());
        let ids = self
            .store
            .write(Durability::Immediate, move |txn| {
                let mut samples = txn.open_table(SAMPLES)?;
                let mut by_key = txn.open_table(SERIES_BY_KEY)?;
                let mut series = txn.open_table(SERIES)?;
                let mut meta = txn.open_table(META)?;
                let mut next = meta.get("next_series_id")?.map_or(1, |v| v.value());
                let mut ids = Vec::with_capacity(n.len());
                for (labels, points) in n.iter() {
                    let key = labels.encode();
                    let existing = by_key.get(key.as_slice())?.map(|g| g.value());
                    let id = match existing {
                        Some(id) => id,
                        None => {
                            let id = next;
                            next += 1;
                            by_key.insert(key.as_slice(), id)?;
                            series.insert(id, key.as_slice())?;
                            id
                        }
                    };
                    for &(t, v) in points {
                        samples.insert((id, t), v)?;
                    }
                    ids.push(id);
                }
                meta.insert("next_series_id", next)?;
                for &(id, t, v) in k.iter() {
                    samples.insert((id, t), v)?;
                }
                if !q.is_empty() {
                    // Queued in the same transaction: a sample is forwarded
                    // exactly when it was stored.
                    let mut forward = txn.open_table(FORWARD)?;
                    let mut seq = meta.get("forward_next_seq")?.map_or(1, |v| v.value());
                    for body in q.iter() {
                        forward.insert(seq, body.as_slice())?;
                        seq += 1;
                    }
                    meta.insert("forward_next_seq", seq)?;
                }
                Ok(ids)
            })
            .await?;
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        for ((labels, points), id) in new.iter().zip(ids) {
            let max_t = points.iter().map(|p| p.0).max().unwrap_or(i64::MIN);
            ix.insert(id, labels.clone(), max_t);
        }
        for &(id, t, _) in known.iter() {
            ix.bump_max_t(id, t);
        }
        metrics::gauge!("edgebox_tsdb_series").set(ix.len() as f64);
        metrics::counter!("edgebox_tsdb_samples_appended_total").increment(outcome.accepted as u64);
        if !queued.is_empty() {
            self.forward_queued.notify_one();
        }
        Ok(outcome)
    }

    /// Accepted samples as snappy remote_write bodies of at most `batch`
    /// samples each.
    fn forward_bodies(&self, new: &NewSeries, known: &[(u64, i64, f64)], batch: usize) -> Vec<Vec<u8>> {
        use super::remote_write::{Label, Sample, TimeSeries, WriteRequest, encode};
        let ix = self.index();
        let series = |labels: &Labels, points: &mut dyn Iterator<Item = (i64, f64)>| TimeSeries {
            labels: labels.iter().map(|(n, v)| Label { name: n.to_owned(), value: v.to_owned() }).collect(),
            samples: points.map(|(t, v)| Sample { value: v, timestamp: t }).collect(),
        };
        let mut all: Vec<TimeSeries> = new.iter().map(|(l, p)| series(l, &mut p.iter().copied())).collect();
        let mut by_id: BTreeMap<u64, Vec<(i64, f64)>> = BTreeMap::new();
        for &(id, t, v) in known {
            by_id.entry(id).or_default().push((t, v));
        }
        for (id, points) in by_id {
            if let Some(e) = ix.get(id) {
                all.push(series(&e.labels, &mut points.into_iter()));
            }
        }
        let mut bodies = Vec::new();
        let mut current = WriteRequest::default();
        let mut count = 0;
        for mut ts in all {
            ts.samples.sort_by_key(|s| s.timestamp);
            while !ts.samples.is_empty() {
                let take = (batch - count).min(ts.samples.len());
                let rest = ts.samples.split_off(take);
                count += ts.samples.len();
                current
                    .timeseries
                    .push(TimeSeries { labels: ts.labels.clone(), samples: std::mem::replace(&mut ts.samples, rest) });
                if count == batch {
                    bodies.push(encode(&current));
                    current = WriteRequest::default();
                    count = 0;
                }
            }
        }
        if count > 0 {
            bodies.push(encode(&current));
        }
        bodies
    }

    /// The oldest queued forward batch, if any.
    pub async fn forward_peek(&self) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        self.store
            .read(|txn| {
                let q = txn.open_table(FORWARD)?;
                Ok(q.first()?.map(|(k, v)| (k.value(), v.value().to_vec())))
            })
            .await
    }

    /// Removes a batch the upstream took (or refused for good).
    pub async fn forward_ack(&self, seq: u64) -> anyhow::Result<()> {
        self.store
            .write(Durability::Immediate, move |txn| {
                txn.open_table(FORWARD)?.remove(seq)?;
                Ok(())
            })
            .await
    }

    /// Batches waiting for the upstream.
    pub async fn forward_backlog(&self) -> anyhow::Result<u64> {
        self.store.read(|txn| Ok(txn.open_table(FORWARD)?.len()?)).await
    }

    fn check_cardinality(&self, ix: &Index, new: &NewByKey) -> Result<(), AppendError> {
        if new.is_empty() {
            return Ok(());
        }
        let hit = |msg: String| {
            metrics::counter!("edgebox_tsdb_cardinality_limit_hits_total").increment(1);
            Err(AppendError::Cardinality(msg))
        };
        if ix.len() + new.len() > self.limits.max_series {
            return hit(format!(
                "series limit reached: {} series exist, this write adds {}, tsdb.max_series is {}",
                ix.len(),
                new.len(),
                self.limits.max_series
            ));
        }
        let mut per_metric: HashMap<&str, usize> = HashMap::new();
        for (labels, _) in new.values() {
            *per_metric.entry(labels.metric().unwrap_or("")).or_default() += 1;
        }
        for (metric, adds) in per_metric {
            if ix.series_of_metric(metric) + adds > self.limits.max_series_per_metric {
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

    /// Samples of each series in `[from, to]` (ms), oldest first.
    pub async fn read(&self, ids: Vec<u64>, from: i64, to: i64) -> anyhow::Result<Vec<(u64, Vec<(i64, f64)>)>> {
        self.store
            .read(move |txn| {
                let chunks = txn.open_table(CHUNKS)?;
                let samples = txn.open_table(SAMPLES)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let mut merged: BTreeMap<i64, f64> = BTreeMap::new();
                    for row in chunks.range((id, i64::MIN)..=(id, to))? {
                        let (_, v) = row?;
                        let bytes = v.value();
                        if chunk_last_t(bytes)? < from {
                            continue;
                        }
                        for (t, v) in gorilla::decode(&bytes[8..])? {
                            if (from..=to).contains(&t) {
                                merged.insert(t, v);
                            }
                        }
                    }
                    for row in samples.range((id, from)..=(id, to))? {
                        let (k, v) = row?;
                        merged.insert(k.value().1, v.value());
                    }
                    out.push((id, merged.into_iter().collect()));
                }
                Ok(out)
            })
            .await
    }

    /// Packs raw samples older than `cutoff` into chunks and drops data
    /// older than `horizon` (None: keep everything). Returns the number of
    /// samples packed.
    pub async fn compact(&self, cutoff: i64, horizon: Option<i64>) -> anyhow::Result<usize> {
        let ids: Arc<Vec<u64>> = Arc::new(self.index().ids());
        let packed = self
            .store
            .write(Durability::Immediate, move |txn| {
                let mut samples = txn.open_table(SAMPLES)?;
                let mut chunks = txn.open_table(CHUNKS)?;
                if let Some(h) = horizon {
                    samples.retain(|(_, t), _| t >= h)?;
                    chunks.retain(|_, v| chunk_last_t(v).map_or(true, |last| last >= h))?;
                }
                let mut packed = 0;
                // Raw keys sort by (series, t): each series' old samples are
                // a prefix of its range, so the scan reads only what it packs.
                for &id in ids.iter() {
                    let mut raw: Vec<(i64, f64)> = Vec::new();
                    for row in samples.range((id, i64::MIN)..(id, cutoff))? {
                        let (k, v) = row?;
                        raw.push((k.value().1, v.value()));
                    }
                    if raw.is_empty() {
                        continue;
                    }
                    let (lo, hi) = (raw[0].0, raw[raw.len() - 1].0);
                    let mut merged: BTreeMap<i64, f64> = BTreeMap::new();
                    let mut overlapping = Vec::new();
                    for row in chunks.range((id, i64::MIN)..=(id, hi))? {
                        let (k, v) = row?;
                        if chunk_last_t(v.value())? >= lo {
                            overlapping.push(k.value().1);
                            merged.extend(gorilla::decode(&v.value()[8..])?);
                        }
                    }
                    for start in overlapping {
                        chunks.remove((id, start))?;
                    }
                    for &(t, v) in &raw {
                        merged.insert(t, v);
                        samples.remove((id, t))?;
                    }
                    packed += raw.len();
                    let merged: Vec<(i64, f64)> = merged.into_iter().collect();
                    for part in merged.chunks(CHUNK_SAMPLES) {
                        let mut enc = gorilla::Encoder::new();
                        for &(t, v) in part {
                            enc.append(t, v)?;
                        }
                        let mut value = part[part.len() - 1].0.to_be_bytes().to_vec();
                        value.extend_from_slice(&enc.bytes());
                        chunks.insert((id, part[0].0), value.as_slice())?;
                    }
                }
                Ok(packed)
            })
            .await?;
        metrics::counter!("edgebox_tsdb_compacted_samples_total").increment(packed as u64);
        Ok(packed)
    }

    /// Drops the oldest chunks (across all series) until the packed and raw
    /// samples take at most `max_bytes`; returns the chunks dropped. Freed
    /// pages are reused by later writes, so the store file stops growing
    /// near that size rather than shrinking.
    pub async fn enforce_size(&self, max_bytes: u64) -> anyhow::Result<usize> {
        let dropped = self
            .store
            .write(Durability::Immediate, move |txn| {
                let mut chunks = txn.open_table(CHUNKS)?;
                let samples = txn.open_table(SAMPLES)?;
                let used = chunks.stats()?.stored_bytes() + samples.stats()?.stored_bytes();
                if used <= max_bytes {
                    return Ok(0);
                }
                let mut all: Vec<(i64, u64, u64)> = Vec::new();
                for row in chunks.iter()? {
                    let (k, v) = row?;
                    let (id, first) = k.value();
                    all.push((first, id, v.value().len() as u64 + 16));
                }
                all.sort_unstable();
                let mut excess = used - max_bytes;
                let mut dropped = 0;
                for (first, id, size) in all {
                    if excess == 0 {
                        break;
                    }
                    chunks.remove((id, first))?;
                    excess = excess.saturating_sub(size);
                    dropped += 1;
                }
                Ok(dropped)
            })
            .await?;
        if dropped > 0 {
            metrics::counter!("edgebox_tsdb_size_retention_chunks_dropped_total").increment(dropped as u64);
        }
        Ok(dropped)
    }

    /// Bytes and entries of the tsdb tables, for `bytes per sample`.
    pub async fn footprint(&self) -> anyhow::Result<(u64, u64, u64)> {
        self.store
            .read(|txn| {
                let chunks = txn.open_table(CHUNKS)?;
                let samples = txn.open_table(SAMPLES)?;
                let mut packed = 0u64;
                for row in chunks.iter()? {
                    let (_, v) = row?;
                    packed += v.value().get(8..10).map_or(0, |c| u64::from(u16::from_be_bytes([c[0], c[1]])));
                }
                Ok((chunks.stats()?.stored_bytes() + samples.stats()?.stored_bytes(), packed, samples.len()?))
            })
            .await
    }
}

/// The last timestamp stored in front of a chunk.
fn chunk_last_t(value: &[u8]) -> anyhow::Result<i64> {
    let head: [u8; 8] = value
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("tsdb.chunks: value shorter than 8 bytes"))?;
    Ok(i64::from_be_bytes(head))
}
