//! The Kafka side: an idempotent producer (acks=all, ordered retries), the
//! deliveries in flight, and the acknowledged position.
//!
//! Every record and every transaction boundary gets a sequence number with
//! the position to resume from once it is through. Acknowledgements come
//! back out of order across partitions; the acknowledged position only
//! advances over an unbroken prefix of sequence numbers, so a checkpoint
//! never passes a change Kafka has not confirmed. Messages wait in
//! librdkafka without a timeout while brokers are away; when its queue is
//! full, sending waits, the binlog is no longer read, and the source's
//! TCP window does the rest (backpressure, no loss).
//!
//! With exactly-once delivery the producer is transactional: records go
//! out inside a Kafka transaction that `commit` closes together with a
//! record of the position on the offsets topic (exactly_once.rs), and the
//! messages then time out with the transaction (librdkafka allows no
//! unbounded message timeout there): a broker away for longer fails the
//! transaction, which is aborted and sent again from the last commit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::config::KafkaConfig;
use super::position::Position;

/// Sequence numbers in order, each done or not, with their resume points.
#[derive(Debug, Default)]
pub struct Tracker {
    first: u64,
    pending: VecDeque<(Position, bool)>,
    acked: Option<Position>,
}

impl Tracker {
    pub fn push(&mut self, resume: Position, done: bool) -> u64 {
        self.pending.push_back((resume, done));
        let seq = self.first + self.pending.len() as u64 - 1;
        self.advance();
        seq
    }

    pub fn done(&mut self, seq: u64) {
        if let Some(slot) = seq.checked_sub(self.first).and_then(|i| self.pending.get_mut(i as usize)) {
            slot.1 = true;
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.pending.front().is_some_and(|p| p.1) {
            let (pos, _) = self.pending.pop_front().expect("front exists");
            self.first += 1;
            self.acked = Some(pos);
        }
    }

    /// The first sequence number not yet acknowledged: everything before it is.
    pub fn next_unacked(&self) -> u64 {
        self.first
    }

    /// The resume point of the last record or boundary pushed.
    pub fn last_pushed(&self) -> Option<&Position> {
        self.pending.back().map(|p| &p.0).or(self.acked.as_ref())
    }

    /// The position every change before which Kafka has acknowledged.
    pub fn acked(&self) -> Option<&Position> {
        self.acked.as_ref()
    }

    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

type Delivered = (u64, Result<(), String>, Instant, u32);

pub struct Publisher {
    producer: FutureProducer,
    inflight: FuturesUnordered<BoxFuture<'static, Delivered>>,
    pub tracker: Tracker,
    /// Transactional: whether a transaction is open.
    transactional: Option<bool>,
}

/// How long a transaction's commit or abort may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// One acknowledged record: when it was sent and its commit time.
pub struct Ack {
    pub sent: Instant,
    pub source_ts: u32,
}

impl Publisher {
    /// An idempotent producer; a transactional one with `transactional_id`
    /// (its earlier incarnations fenced and their open transactions aborted).
    pub async fn new(cfg: &KafkaConfig, transactional_id: Option<&str>) -> anyhow::Result<Publisher> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.brokers)
            .set("linger.ms", cfg.linger_ms.to_string())
            .set("message.max.bytes", (cfg.max_message_bytes + 4096).to_string())
            .set("client.id", "edgebox-streamer");
        if transactional_id.is_none() {
            c.set("message.timeout.ms", "0");
        }
        for (k, v) in &cfg.properties {
            c.set(k, v);
        }
        // Not overridable: the delivery guarantee rests on these.
        c.set("enable.idempotence", "true").set("acks", "all");
        if let Some(id) = transactional_id {
            c.set("transactional.id", id);
        }
        let producer: FutureProducer = c.create().context("streamer.kafka: creating the producer")?;
        if transactional_id.is_some() {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || p.init_transactions(TXN_TIMEOUT))
                .await?
                .context("streamer.kafka: initialising transactions (does the broker support them?)")?;
        }
        let transactional = transactional_id.map(|_| false);
        Ok(Publisher { producer, inflight: FuturesUnordered::new(), tracker: Tracker::default(), transactional })
    }

    /// Whether records went out since the last commit (transactional only).
    pub fn in_transaction_open(&self) -> bool {
        self.transactional == Some(true)
    }

    fn in_transaction(&mut self) -> anyhow::Result<()> {
        if self.transactional == Some(false) {
            self.producer.begin_transaction().context("beginning a Kafka transaction")?;
            self.transactional = Some(true);
        }
        Ok(())
    }

    /// Commits the open transaction with `last` (the offsets record) as its
    /// final record; everything in it is then acknowledged. Nothing to do
    /// without a transaction open. A failed commit aborts the transaction
    /// and is an error (the run restarts from the last commit).
    pub async fn commit(&mut self, last: Option<(&str, &[u8], &[u8])>, acks: &mut Vec<Ack>) -> anyhow::Result<()> {
        if self.transactional != Some(true) {
            return Ok(());
        }
        if let Some((topic, key, payload)) = last {
            let record = FutureRecord::<[u8], [u8]>::to(topic).key(key).payload(payload).partition(0);
            // Its delivery is the commit's to confirm.
            drop(self.producer.send_result(record).map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?);
        }
        let p = self.producer.clone();
        let committed = tokio::task::spawn_blocking(move || p.commit_transaction(TXN_TIMEOUT)).await?;
        self.transactional = Some(false);
        if let Err(e) = committed {
            let p = self.producer.clone();
            let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT)).await?;
            return Err(anyhow!("committing the Kafka transaction: {e} (aborted: {aborted:?})"));
        }
        metrics::counter!("edgebox_streamer_kafka_commits_total").increment(1);
        while !self.inflight.is_empty() {
            acks.push(self.next_ack().await?);
        }
        Ok(())
    }

    /// Queues one record (partition 0 when it has no key); waits while
    /// librdkafka's queue is full, handling acknowledgements meanwhile.
    pub async fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        resume: Position,
        source_ts: u32,
        acks: &mut Vec<Ack>,
    ) -> anyhow::Result<()> {
        self.in_transaction()?;
        let seq = self.tracker.push(resume, false);
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        match key {
            Some(k) => record = record.key(k),
            None => record = record.partition(0),
        }
        loop {
            match self.producer.send_result(record) {
                Ok(fut) => {
                    let sent = Instant::now();
                    self.inflight.push(Box::pin(async move {
                        let outcome = match fut.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(e.to_string()),
                            Err(_) => Err("the producer was dropped".to_owned()),
                        };
                        (seq, outcome, sent, source_ts)
                    }));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    metrics::counter!("edgebox_streamer_backpressure_waits_total").increment(1);
                    match self.inflight.is_empty() {
                        true => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        false => acks.push(self.next_ack().await?),
                    }
                }
                Err((e, _)) => return Err(anyhow!("producing to {topic}: {e}")),
            }
        }
    }

    /// A boundary with nothing to publish (a commit, a skipped table); its
    /// sequence number.
    pub fn mark(&mut self, resume: Position) -> u64 {
        self.tracker.push(resume, true)
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Waits for the next acknowledgement; a failed delivery is an error
    /// (the pipeline restarts from the last checkpoint).
    pub async fn next_ack(&mut self) -> anyhow::Result<Ack> {
        let Some((seq, outcome, sent, source_ts)) = self.inflight.next().await else {
            return std::future::pending().await;
        };
        outcome.map_err(|e| anyhow!("Kafka did not take a change: {e}"))?;
        self.tracker.done(seq);
        Ok(Ack { sent, source_ts })
    }

    /// Every acknowledgement that has already arrived, without waiting: the
    /// acknowledged position must not lag behind Kafka.
    pub fn ready_acks(&mut self, acks: &mut Vec<Ack>) -> anyhow::Result<()> {
        while let Some(Some((seq, outcome, sent, source_ts))) = self.inflight.next().now_or_never() {
            outcome.map_err(|e| anyhow!("Kafka did not take a change: {e}"))?;
            self.tracker.done(seq);
            acks.push(Ack { sent, source_ts });
        }
        Ok(())
    }

    /// Waits until everything sent is acknowledged.
    pub async fn drain(&mut self) -> anyhow::Result<()> {
        while !self.inflight.is_empty() {
            self.next_ack().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pos: u64) -> Position {
        Position { file: "f".into(), pos, ..Position::default() }
    }

    #[test]
    fn the_acknowledged_position_only_passes_an_unbroken_prefix() {
        let mut t = Tracker::default();
        let a = t.push(at(10), false);
        let b = t.push(at(20), false);
        t.push(at(25), true);
        let c = t.push(at(30), false);
        assert_eq!(t.acked(), None);
        t.done(b);
        t.done(c);
        assert_eq!(t.acked(), None, "a is still out");
        t.done(a);
        assert_eq!(t.acked().map(|p| p.pos), Some(30));
        assert_eq!(t.waiting(), 0);
        t.done(a); // late duplicates are ignored
        assert_eq!(t.acked().map(|p| p.pos), Some(30));
    }
}
