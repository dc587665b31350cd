//! The store-and-forward queue's storage side: accepted samples become
//! snappy remote_write bodies in `tsdb.forward`, written in the same
//! transaction as their log record, and leave when the upstream took them.

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata};

use super::super::remote_write::{Label, Sample, TimeSeries, WriteRequest, encode};
use super::tables::FORWARD;
use super::{Storage, wal};
use crate::core::store::Durability;

impl Storage {
    /// Accepted samples as remote_write bodies of at most `batch` samples.
    pub(super) fn forward_bodies(&self, accepted: &[wal::Entry], batch: usize) -> Vec<Vec<u8>> {
        let mut by_id: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
        for e in accepted {
            by_id.entry(e.id).or_default().push(Sample { value: e.v, timestamp: e.t });
        }
        let ix = self.index();
        let mut bodies = Vec::new();
        let mut current = WriteRequest::default();
        let mut count = 0;
        for (id, mut samples) in by_id {
            let Some(entry) = ix.get(id) else { continue };
            let labels: Vec<Label> =
                entry.labels.iter().map(|(n, v)| Label { name: n.to_owned(), value: v.to_owned() }).collect();
            samples.sort_by_key(|s| s.timestamp);
            while !samples.is_empty() {
                let take = (batch - count).min(samples.len());
                let rest = samples.split_off(take);
                count += samples.len();
                current
                    .timeseries
                    .push(TimeSeries { labels: labels.clone(), samples: std::mem::replace(&mut samples, rest) });
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
}
