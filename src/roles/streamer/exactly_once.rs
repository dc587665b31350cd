//! Exactly-once delivery: every Kafka transaction ends with a record on the
//! offsets topic naming the position after its last change, the number of
//! the transaction and the schema history changes it covers. Kafka is then
//! the authority on how far the stream got: the store is written after each
//! commit, so after a crash it can be one transaction behind, and a restart
//! takes the position (and schema changes) from the offsets topic.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::config::StreamerConfig;
use super::position::{self, Position, SchemaUpdate};
use super::schema::{Changes, Name, TableSchema};
use crate::core::store::Store;

/// One transaction's record on the offsets topic (key: transactional.id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffsetsRecord {
    /// Transactions committed by this transactional.id, this one included.
    pub commit: u64,
    pub position: Position,
    /// Schema history changes since the previous transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<SchemaEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaEntry {
    pub db: String,
    pub table: String,
    /// `null`: the table is gone or no longer known.
    pub schema: Option<TableSchema>,
}

impl OffsetsRecord {
    pub fn new(commit: u64, position: Position, changes: &Changes) -> OffsetsRecord {
        let schema = changes
            .iter()
            .map(|(n, s)| SchemaEntry { db: n.db.clone(), table: n.table.clone(), schema: s.clone() })
            .collect();
        OffsetsRecord { commit, position, schema }
    }

    pub fn changes(&self) -> Changes {
        self.schema.iter().map(|e| (Name { db: e.db.clone(), table: e.table.clone() }, e.schema.clone())).collect()
    }
}

/// The last committed record of `id` on `topic` (partition 0), reading
/// committed data only; `None` when it has none.
pub async fn last_committed(brokers: &str, topic: &str, id: &str) -> anyhow::Result<Option<OffsetsRecord>> {
    let (brokers, topic, id) = (brokers.to_owned(), topic.to_owned(), id.to_owned());
    tokio::task::spawn_blocking(move || read_last(&brokers, &topic, &id))
        .await?
        .with_context(|| "reading the last position committed to the offsets topic")
}

fn read_last(brokers: &str, topic: &str, id: &str) -> anyhow::Result<Option<OffsetsRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{id}-recovery"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let (low, high) = match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
        Ok(w) => w,
        // No offsets topic yet: nothing was ever committed.
        Err(KafkaError::MetadataFetch(_)) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("the watermarks of {topic}")),
    };
    // Commit markers and aborted transactions take offsets too: widen the
    // window from the end until a record of ours turns up.
    let mut window = 64i64;
    loop {
        let from = (high - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if m.key() == Some(id.as_bytes()) {
                        let payload = m.payload().unwrap_or_default();
                        let r: OffsetsRecord = serde_json::from_slice(payload)
                            .with_context(|| format!("{topic} offset {}: not an offsets record", m.offset()))?;
                        last = Some(r);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
                None if high <= from => break,
                None => anyhow::ensure!(Instant::now() < deadline, "reading {topic}: no end after 30 s"),
            }
        }
        if last.is_some() || from == low {
            return Ok(last);
        }
        window *= 64;
    }
}

/// Brings the store up to the offsets topic before a run: where Kafka
/// committed a transaction the store never heard of (a crash between the
/// two), its position and schema changes are saved. Returns the number of
/// the last transaction.
pub async fn reconcile(cfg: &StreamerConfig, id: &str, store: &Store) -> anyhow::Result<u64> {
    let stored = position::load_commit(store).await?;
    let topic = offsets_topic(cfg);
    let Some(k) = last_committed(&cfg.kafka.brokers, &topic, id).await? else { return Ok(stored) };
    if k.commit < stored {
        tracing::warn!(topic = %topic, kafka = k.commit, store = stored, "streamer: the offsets topic is behind the store (recreated?); resuming from the store's position");
        return Ok(stored);
    }
    if k.commit == stored {
        return Ok(stored);
    }
    if k.commit > stored + 1 {
        tracing::warn!(topic = %topic, kafka = k.commit, store = stored, "streamer: the store is several Kafka transactions behind; schema changes of those between are missing from its history");
    }
    tracing::info!(position = %k.position, commit = k.commit, "streamer: resuming from the position Kafka committed last");
    position::save(store, &k.position, Some(k.commit), SchemaUpdate::Changes(k.changes())).await?;
    Ok(k.commit)
}

pub fn offsets_topic(cfg: &StreamerConfig) -> String {
    cfg.topic_for(&cfg.offsets_topic, "", "")
}
