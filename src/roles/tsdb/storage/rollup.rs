//! Downsampling rollups: per series, 5-minute and 1-hour buckets holding
//! the min, max, sum and count of the raw samples in them, kept longer than
//! raw data so long-range queries still have an answer (and a cheap one)
//! after raw retention dropped the samples.
//!
//! Queries read rollups only where raw retention dropped the samples, so
//! buckets are made for raw data about to leave: a pass rolls up whole
//! hours older than a day before raw retention's horizon (and older than
//! the out-of-order window, so they can no longer change), and raw
//! retention keeps what is not rolled up yet. Rolling up everything as it
//! settled cost 40–70% on top of the raw data's bytes on disk for buckets
//! no query read. A pass reads the raw samples of every series for up to
//! a day past the watermark (`rollup_watermark` in `tsdb.meta`), and
//! merges the buckets into `tsdb.rollups` rows: one row per series,
//! resolution and day (5 m) or 30 days (1 h), each column chunk-encoded
//! (chunk.rs). Re-running a pass rewrites the same buckets, so a crash
//! mid-pass is harmless. Samples written later than the out-of-order
//! window allows (imports of old data into new series) stay raw-only.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::tables::{META, ROLLUPS};
use super::{Storage, chunk};
use crate::core::store::Durability;

/// One rollup resolution.
#[derive(Debug, Clone, Copy)]
pub struct Resolution {
    /// First key part in `tsdb.rollups`.
    pub index: u8,
    pub step_ms: i64,
    /// Time one row covers.
    pub row_ms: i64,
}

pub const FIVE_MINUTES: Resolution = Resolution { index: 0, step_ms: 300_000, row_ms: 86_400_000 };
pub const ONE_HOUR: Resolution = Resolution { index: 1, step_ms: 3_600_000, row_ms: 30 * 86_400_000 };

/// Series read per batch of a pass (bounds its memory).
const BATCH_SERIES: usize = 512;
/// Most raw time one pass rolls up, so a catch-up shows progress.
const PASS_MS: i64 = 86_400_000;
/// How long before raw retention drops them samples are rolled up.
const LEAD_MS: i64 = 86_400_000;

/// Which aggregate a query reads from the buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// sum / count: the bucket's mean, for plain selectors and most functions.
    Avg,
    Min,
    Max,
    Sum,
    Count,
}

/// One bucket's aggregates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: f64,
}

impl Bucket {
    pub fn get(&self, c: Column) -> f64 {
        match c {
            Column::Avg => self.sum / self.count,
            Column::Min => self.min,
            Column::Max => self.max,
            Column::Sum => self.sum,
            Column::Count => self.count,
        }
    }
}

/// Buckets of `step` ms over sorted samples; NaN (stale markers included)
/// does not count.
pub fn buckets(points: &[(i64, f64)], step: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for &(t, v) in points {
        if v.is_nan() {
            continue;
        }
        let start = t.div_euclid(step) * step;
        match out.last_mut() {
            Some(b) if b.start == start => {
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.sum += v;
                b.count += 1.0;
            }
            _ => out.push(Bucket { start, min: v, max: v, sum: v, count: 1.0 }),
        }
    }
    out
}

/// A row: the four columns as chunk values, each `varint length, bytes`.
fn encode_row(buckets: &[Bucket]) -> Vec<u8> {
    let mut out = Vec::new();
    for col in [Column::Min, Column::Max, Column::Sum, Column::Count] {
        let samples: Vec<(i64, f64)> = buckets.iter().map(|b| (b.start, b.get(col))).collect();
        let value = chunk::encode(&samples);
        super::varint::put_u64(&mut out, value.len() as u64);
        out.extend_from_slice(&value);
    }
    out
}

fn decode_row(row: &[u8]) -> Result<Vec<Bucket>, String> {
    let mut r = super::varint::Reader::new(row);
    let mut cols = Vec::with_capacity(4);
    for _ in 0..4 {
        let len = r.u64().map_err(|o| format!("byte {o}: column length"))?;
        let bytes = r.take(usize::try_from(len).unwrap_or(usize::MAX)).map_err(|o| format!("byte {o}: column"))?;
        cols.push(chunk::decode(bytes).map_err(|e| e.to_string())?);
    }
    let n = cols[0].len();
    if cols.iter().any(|c| c.len() != n) {
        return Err("columns of different lengths".into());
    }
    Ok((0..n)
        .map(|i| Bucket {
            start: cols[0][i].0,
            min: cols[0][i].1,
            max: cols[1][i].1,
            sum: cols[2][i].1,
            count: cols[3][i].1,
        })
        .collect())
}

/// How long each resolution is kept; 0 turns it off.
#[derive(Debug, Clone, Copy, Default)]
pub struct RollupPolicy {
    pub keep_5m_ms: i64,
    pub keep_1h_ms: i64,
}

impl RollupPolicy {
    pub fn kept(&self) -> Vec<(Resolution, i64)> {
        [(FIVE_MINUTES, self.keep_5m_ms), (ONE_HOUR, self.keep_1h_ms)].into_iter().filter(|r| r.1 > 0).collect()
    }
}

impl Storage {
    /// Rolls up the next stretch (up to a day) of settled raw data due to
    /// leave raw retention within a day, and drops rows past their
    /// resolution's retention. Returns the hour the watermark reached and
    /// the buckets written; None when nothing was due.
    pub async fn roll_up(&self, now_ms: i64) -> anyhow::Result<Option<(i64, usize)>> {
        let kept = self.retention.rollups.kept();
        let Some(raw_ms) = self.retention.raw_ms else { return Ok(None) };
        if kept.is_empty() {
            return Ok(None);
        }
        let settled = now_ms.saturating_sub(self.limits.out_of_order_ms).saturating_sub(FIVE_MINUTES.step_ms);
        let due = now_ms.saturating_sub(raw_ms).saturating_add(LEAD_MS);
        let upto = settled.min(due).div_euclid(ONE_HOUR.step_ms) * ONE_HOUR.step_ms;
        let mark = self.rollup_watermark().await?;
        // A first pass starts at the oldest sample stored.
        let from = match mark {
            Some(m) => m,
            None => match self.oldest_sample().await? {
                Some(t) => t.div_euclid(ONE_HOUR.step_ms) * ONE_HOUR.step_ms,
                None => upto,
            },
        };
        if from >= upto {
            return Ok(None);
        }
        let to = upto.min(from + PASS_MS);
        let ids = self.index().ids();
        let mut written = 0;
        for batch in ids.chunks(BATCH_SERIES) {
            let data = self.read(batch.to_vec(), from, to - 1).await?;
            let mut rows: Vec<(Resolution, u64, Vec<Bucket>)> = Vec::new();
            for (id, points) in data {
                for &(res, _) in &kept {
                    let b = buckets(&points, res.step_ms);
                    if !b.is_empty() {
                        written += b.len();
                        rows.push((res, id, b));
                    }
                }
            }
            if !rows.is_empty() {
                self.store.write(Durability::Immediate, move |txn| merge_rows(txn, &rows)).await?;
            }
        }
        let horizons: Vec<(u8, i64)> = kept.iter().map(|(r, keep)| (r.index, now_ms - keep - r.row_ms)).collect();
        self.store
            .write(Durability::Immediate, move |txn| {
                let mut rollups = txn.open_table(ROLLUPS)?;
                for &(res, horizon) in &horizons {
                    rollups.retain_in((res, 0, i64::MIN)..=(res, u64::MAX, i64::MAX), |k, _| k.2 >= horizon)?;
                }
                txn.open_table(META)?.insert("rollup_watermark", to as u64)?;
                Ok(())
            })
            .await?;
        metrics::counter!("edgebox_tsdb_rollup_buckets_total").increment(written as u64);
        metrics::gauge!("edgebox_tsdb_rollup_watermark_seconds").set(to as f64 / 1000.0);
        Ok(Some((to, written)))
    }

    /// Where the rollups reached: raw samples before it are rolled up.
    pub async fn rollup_watermark(&self) -> anyhow::Result<Option<i64>> {
        self.store.read(|txn| Ok(txn.open_table(META)?.get("rollup_watermark")?.map(|v| v.value() as i64))).await
    }

    /// What raw retention may drop at `now_ms`: samples older than its
    /// horizon, but only those already rolled up when rollups are kept.
    pub async fn raw_horizon(&self, now_ms: i64) -> anyhow::Result<Option<i64>> {
        let Some(raw_ms) = self.retention.raw_ms else { return Ok(None) };
        let horizon = now_ms.saturating_sub(raw_ms);
        if self.retention.rollups.kept().is_empty() {
            return Ok(Some(horizon));
        }
        Ok(self.rollup_watermark().await?.map(|mark| mark.min(horizon)))
    }

    /// The oldest timestamp in chunks or heads (a full scan: the first
    /// rollup pass only).
    async fn oldest_sample(&self) -> anyhow::Result<Option<i64>> {
        let in_memory = self.heads.oldest();
        let stored = self
            .store
            .read(|txn| {
                let mut oldest: Option<i64> = None;
                for row in txn.open_table(super::tables::CHUNK_ROWS)?.iter()? {
                    let first = row?.0.value().1;
                    oldest = Some(oldest.map_or(first, |o: i64| o.min(first)));
                }
                Ok(oldest)
            })
            .await?;
        Ok(match (in_memory, stored) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Bucket values of one column for each series, over buckets starting
    /// in `[from, to]`, as points at the bucket's last millisecond.
    pub async fn read_rollups(
        &self,
        ids: Vec<u64>,
        res: Resolution,
        from: i64,
        to: i64,
        column: Column,
    ) -> anyhow::Result<Vec<(u64, Vec<(i64, f64)>)>> {
        self.store
            .read(move |txn| {
                let rollups = txn.open_table(ROLLUPS)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let first_row = from.div_euclid(res.row_ms) * res.row_ms;
                    let mut points = Vec::new();
                    for row in rollups.range((res.index, id, first_row)..=(res.index, id, to))? {
                        let (_, v) = row?;
                        for b in decode_row(v.value()).map_err(|e| anyhow::anyhow!("tsdb.rollups {id}: {e}"))? {
                            if (from..=to).contains(&b.start) {
                                points.push((b.start + res.step_ms - 1, b.get(column)));
                            }
                        }
                    }
                    out.push((id, points));
                }
                Ok(out)
            })
            .await
    }
}

fn merge_rows(txn: &redb::WriteTransaction, rows: &[(Resolution, u64, Vec<Bucket>)]) -> anyhow::Result<()> {
    let mut table = txn.open_table(ROLLUPS)?;
    for (res, id, buckets) in rows {
        let (res, id) = (*res, *id);
        let mut by_row: BTreeMap<i64, Vec<Bucket>> = BTreeMap::new();
        for &b in buckets {
            by_row.entry(b.start.div_euclid(res.row_ms) * res.row_ms).or_default().push(b);
        }
        for (row_start, fresh) in by_row {
            let key = (res.index, id, row_start);
            let mut merged: BTreeMap<i64, Bucket> = match table.get(key)? {
                Some(v) => decode_row(v.value())
                    .map_err(|e| anyhow::anyhow!("tsdb.rollups {id}: {e}"))?
                    .into_iter()
                    .map(|b| (b.start, b))
                    .collect(),
                None => BTreeMap::new(),
            };
            merged.extend(fresh.into_iter().map(|b| (b.start, b)));
            let all: Vec<Bucket> = merged.into_values().collect();
            table.insert(key, encode_row(&all).as_slice())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_aggregate_and_skip_nan() {
        let pts = [(0, 1.0), (100, 3.0), (299_999, f64::NAN), (300_000, 5.0), (310_000, -1.0)];
        let b = buckets(&pts, 300_000);
        assert_eq!(
            b,
            vec![
                Bucket { start: 0, min: 1.0, max: 3.0, sum: 4.0, count: 2.0 },
                Bucket { start: 300_000, min: -1.0, max: 5.0, sum: 4.0, count: 2.0 },
            ]
        );
        assert_eq!(b[0].get(Column::Avg), 2.0);
        let row = encode_row(&b);
        assert_eq!(decode_row(&row).unwrap(), b);
        assert!(decode_row(&row[..row.len() - 1]).is_err());
        assert!(buckets(&[(-1, 1.0)], 300_000)[0].start == -300_000, "negative times floor");
    }
}
