//! Checkpoints and retention: moving what the heads hold into chunks in
//! one transaction that also drops the log records it covers, and dropping
//! data past the time and size limits.

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata, Table};

use super::super::gorilla;
use super::blocks;
use super::head::{CUT_SAMPLES, Heads, Taken};
use super::tables::{CHUNK_ROWS, HEAD_BLOCKS, HEAD_CODEC, META, WAL};
use super::{Storage, chunk, chunk_rows};
use crate::core::store::Durability;

/// Series a checkpoint copies out of the heads at a time.
const CHECKPOINT_BATCH: usize = 2048;

/// What one checkpoint did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Series whose state was written.
    pub series: usize,
    /// Samples written as sealed chunks or merged out-of-order samples.
    pub sealed_samples: usize,
    /// Log records dropped.
    pub records: u64,
}

impl Storage {
    /// Writes sealed chunks, merges out-of-order samples into the chunks
    /// they fall in, saves changed open heads and drops the log records
    /// this covers; with `horizon`, drops chunks and heads wholly older.
    pub async fn checkpoint(&self, horizon: Option<i64>) -> anyhow::Result<CheckpointStats> {
        let _one_at_a_time = self.checkpointing.lock().await;
        // Every record up to `cut` is wholly in the heads before the
        // series are taken. Appends running meanwhile may land partly in
        // what is saved; their records are after `cut` and replay over it.
        let cut = self.seqs().settled();
        let mut taken = self.heads.take_dirty(horizon);
        match self.write_checkpoint(&mut taken, cut, horizon).await {
            Ok(stats) => {
                self.heads.release(&taken, horizon);
                self.wal_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!("edgebox_tsdb_checkpoints_total").increment(1);
                metrics::counter!("edgebox_tsdb_sealed_samples_total").increment(stats.sealed_samples as u64);
                Ok(stats)
            }
            Err(e) => {
                self.heads.mark_dirty(&taken);
                Err(e)
            }
        }
    }

    /// Saves the taken series, a batch of CHECKPOINT_BATCH per
    /// transaction, then drops the log records up to `cut` in a last one.
    /// Appends wait for the store behind one batch, not behind the whole
    /// checkpoint (100 000 series took 0.3–0.6 s in one transaction). A
    /// crash between the transactions leaves the log whole: replaying it
    /// over the batches already saved writes the same samples again (last
    /// write wins, with equal values).
    async fn write_checkpoint(
        &self,
        taken: &mut [Taken],
        cut: u64,
        horizon: Option<i64>,
    ) -> anyhow::Result<CheckpointStats> {
        let mut stats = CheckpointStats { series: taken.len(), ..Default::default() };
        // In id order, so a batch's head rows are neighbours.
        for batch in taken.chunks_mut(CHECKPOINT_BATCH) {
            let (heads, work) = (self.heads.clone(), batch.to_vec());
            let (sealed_samples, done) = self
                .store
                .write(Durability::Immediate, move |txn| {
                    let mut work = work.clone();
                    let sealed_samples = save_batch(txn, &heads, &mut work)?;
                    Ok((sealed_samples, work))
                })
                .await?;
            stats.sealed_samples += sealed_samples;
            batch.copy_from_slice(&done);
        }
        stats.records = self
            .store
            .write(Durability::Immediate, move |txn| {
                if let Some(h) = horizon {
                    drop_older(&mut txn.open_table(CHUNK_ROWS)?, h)?;
                }
                let mut wal = txn.open_table(WAL)?;
                let before = wal.len()?;
                wal.retain_in(..=cut, |_, _| false)?;
                let records = before - wal.len()?;
                txn.open_table(META)?.insert("checkpoint_seq", cut)?;
                Ok(records)
            })
            .await?;
        Ok(stats)
    }

    /// Drops the oldest chunks (across all series) until chunks, heads and
    /// log take at most `max_bytes`; returns the chunks dropped. Freed pages
    /// are reused by later writes, so the store file stops growing near
    /// that size rather than shrinking.
    pub async fn enforce_size(&self, max_bytes: u64) -> anyhow::Result<usize> {
        let dropped = self
            .store
            .write(Durability::Immediate, move |txn| {
                let mut chunks = txn.open_table(CHUNK_ROWS)?;
                let used = chunks.stats()?.stored_bytes()
                    + txn.open_table(HEAD_BLOCKS)?.stats()?.stored_bytes()
                    + txn.open_table(WAL)?.stats()?.stored_bytes();
                if used <= max_bytes {
                    return Ok(0);
                }
                let mut all: Vec<(i64, u64, u64)> = chunk_rows::all(&chunks)?
                    .into_iter()
                    .map(|(id, first, v)| (first, id, v.len() as u64 + 4))
                    .collect();
                all.sort_unstable();
                let mut excess = used - max_bytes;
                let mut dropped = 0;
                let mut by_series: BTreeMap<u64, chunk_rows::Changes> = BTreeMap::new();
                for (first, id, size) in all {
                    if excess == 0 {
                        break;
                    }
                    by_series.entry(id).or_default().insert(first, None);
                    excess = excess.saturating_sub(size);
                    dropped += 1;
                }
                for (id, changes) in by_series {
                    chunk_rows::apply(&mut chunks, id, changes)?;
                }
                Ok(dropped)
            })
            .await?;
        if dropped > 0 {
            metrics::counter!("edgebox_tsdb_size_retention_chunks_dropped_total").increment(dropped as u64);
        }
        Ok(dropped)
    }

    /// Bytes of chunks, heads and log; samples in chunks and saved heads;
    /// log records not yet checkpointed.
    pub async fn footprint(&self) -> anyhow::Result<(u64, u64, u64)> {
        self.store
            .read(|txn| {
                let chunks = txn.open_table(CHUNK_ROWS)?;
                let heads = txn.open_table(HEAD_BLOCKS)?;
                let wal = txn.open_table(WAL)?;
                let mut samples = 0u64;
                for (_, _, value) in chunk_rows::all(&chunks)? {
                    samples += chunk::sample_count(&value)? as u64;
                }
                for value in blocks::entries(&heads, HEAD_CODEC, "tsdb.head_blocks")?.values() {
                    samples += chunk::sample_count(value)? as u64;
                }
                let bytes =
                    chunks.stats()?.stored_bytes() + heads.stats()?.stored_bytes() + wal.stats()?.stored_bytes();
                Ok((bytes, samples, wal.len()?))
            })
            .await
    }
}

/// One batch of a checkpoint: each series' sealed chunks and late samples
/// into its chunk rows, its open chunk (or, expired, none) into the head
/// rows; records in `batch` what was taken. Returns the samples sealed.
fn save_batch(txn: &redb::WriteTransaction, heads: &Heads, batch: &mut [Taken]) -> anyhow::Result<usize> {
    let mut chunks = txn.open_table(CHUNK_ROWS)?;
    let mut sealed_samples = 0;
    // Per series: Some(open chunk) to store, None to drop.
    let mut open_rows: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    for series in batch {
        if series.expired {
            open_rows.insert(series.id, None);
            continue;
        }
        let snap = heads.snapshot(series);
        if !snap.sealed.is_empty() {
            for (_, value) in &snap.sealed {
                sealed_samples += chunk::sample_count(value)?;
            }
            let sealed = snap.sealed.into_iter().map(|(first, value)| (first, Some(value))).collect();
            chunk_rows::apply(&mut chunks, series.id, sealed)?;
        }
        if !snap.ooo.is_empty() {
            sealed_samples += merge_late(&mut chunks, series.id, &snap.ooo)?;
        }
        let open = if snap.open.is_empty() { None } else { Some(chunk::encode(&gorilla::decode(&snap.open)?)) };
        open_rows.insert(series.id, open);
    }
    blocks::apply(&mut txn.open_table(HEAD_BLOCKS)?, open_rows, HEAD_CODEC, "tsdb.head_blocks")?;
    Ok(sealed_samples)
}

/// Drops the chunks whose newest sample is older than `horizon`. Only rows
/// starting before it can hold such chunks.
fn drop_older(chunks: &mut Table<'_, (u64, i64), &'static [u8]>, horizon: i64) -> anyhow::Result<()> {
    let mut by_series: BTreeMap<u64, chunk_rows::Changes> = BTreeMap::new();
    for row in chunks.iter()? {
        let (k, row) = row?;
        let (id, first) = k.value();
        if first >= horizon {
            continue;
        }
        for (first, newest) in chunk_rows::spans(id, first, row.value())? {
            if newest < horizon {
                by_series.entry(id).or_default().insert(first, None);
            }
        }
    }
    for (id, changes) in by_series {
        chunk_rows::apply(chunks, id, changes)?;
    }
    Ok(())
}

/// Merges out-of-order samples (arrival order, the last winning) into the
/// chunks they overlap, rewriting those; returns the samples merged.
fn merge_late(
    chunks: &mut Table<'_, (u64, i64), &'static [u8]>,
    id: u64,
    late: &[(i64, f64)],
) -> anyhow::Result<usize> {
    let lo = late.iter().map(|s| s.0).min().unwrap_or(i64::MIN);
    let hi = late.iter().map(|s| s.0).max().unwrap_or(i64::MAX);
    let mut merged: BTreeMap<i64, f64> = BTreeMap::new();
    let mut changes = chunk_rows::Changes::new();
    for (first, value) in chunk_rows::overlapping(chunks, id, lo, hi)? {
        changes.insert(first, None);
        merged.extend(chunk::decode(&value).map_err(|e| anyhow::anyhow!("tsdb.chunk_rows {id}: {e}"))?);
    }
    merged.extend(late.iter().copied());
    let merged: Vec<(i64, f64)> = merged.into_iter().collect();
    for part in merged.chunks(CUT_SAMPLES) {
        changes.insert(part[0].0, Some(chunk::encode(part)));
    }
    chunk_rows::apply(chunks, id, changes)?;
    Ok(late.len())
}
