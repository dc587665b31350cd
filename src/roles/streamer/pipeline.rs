//! One run of the stream: source session → decoded events → transactions →
//! Kafka records → acknowledged position → checkpoint. Any failure (the
//! source goes away, a delivery fails, an event does not decode) ends the
//! run; the role starts the next one from the last checkpoint, so a change
//! is published at least once and, past the checkpoint, exactly in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::binlog::event::{EventBody, RowsKind};
use super::binlog::{TableMap, rows};
use super::config::{Oversized, SourceConfig, Start, StreamerConfig};
use super::envelope::{self, Op, Source};
use super::exactly_once::{self, OffsetsRecord};
use super::gtid::{MariadbPosition, MysqlGtidSet};
use super::mysql::Conn;
use super::position::{self, Position, SchemaUpdate};
use super::publish::{Ack, Publisher};
use super::schema::{self, Changes, History, ddl};
use super::snapshot::{self, Progress, Sink};
use super::source::{Located, Session, SourceMisconfigured};
use crate::core::store::Store;

/// Events read ahead of publishing.
const READ_AHEAD: usize = 1024;
/// How long shutdown waits for outstanding acknowledgements.
const DRAIN: Duration = Duration::from_secs(10);

/// A transaction being read.
struct Txn {
    /// Where to resume to re-read it from its start.
    start: Position,
    gtid: Option<String>,
    /// Row changes seen so far (published, filtered or skipped).
    rows: u64,
    in_begin: bool,
}

/// A table as the pipeline uses it, built once per TABLE_MAP event and
/// shared by every row of it.
struct Table {
    map: TableMap,
    names: Vec<String>,
    topic: String,
    wanted: bool,
}

/// A row change held back until the next one (or the commit) shows whether
/// it is the transaction's last.
struct Held {
    key: Option<serde_json::Value>,
    table: Arc<Table>,
    kind: RowsKind,
    change: rows::RowChange,
    file: String,
    pos: u64,
    row: usize,
    ts: u32,
    server_id: u32,
    resume: Position,
}

pub struct Pipeline<'a> {
    cfg: &'a StreamerConfig,
    publisher: Publisher,
    tables: HashMap<u64, Arc<Table>>,
    mariadb: MariadbPosition,
    mysql: MysqlGtidSet,
    is_mariadb: bool,
    /// The server that wrote the event being handled (after a failover to
    /// a replica, still the old primary for the changes it made).
    origin: u32,
    /// Where the next event starts.
    file: String,
    next_pos: u64,
    txn: Option<Txn>,
    held: Option<Held>,
    /// Row changes of the first transaction already acknowledged earlier.
    skip: u64,
    /// The event just handled ended a transaction.
    committed: bool,
    acks: Vec<Ack>,
    history: History,
    /// History changes not saved yet, each with the sequence number of the
    /// boundary after its statement (`None` until that is marked): saved
    /// with the first checkpoint at or past it.
    pending_schema: Vec<(Option<u64>, Changes)>,
    /// Schema disagreements already warned about.
    warned: HashSet<String>,
    /// Exactly-once delivery: the offsets topic and transactional.id.
    offsets: Option<(String, String)>,
    /// Kafka transactions committed so far (exactly-once).
    commit_n: u64,
    /// The position, transaction number and schema changes of the last
    /// commit, not saved to the store yet (exactly-once).
    kafka_committed: Option<(Position, u64, Changes)>,
    /// A commit failed: nothing after the last good one may be saved.
    commit_failed: bool,
}

/// Runs until shutdown (Ok) or a failure (Err); `store` keeps the position
/// and the schema history. A fresh start with `start = "snapshot"` first
/// publishes the snapshot (its progress in `progress`).
pub async fn run(
    cfg: &StreamerConfig,
    src: &SourceConfig,
    store: &Store,
    shutdown: &CancellationToken,
    progress: &Progress,
) -> anyhow::Result<()> {
    let target = super::source::target(src)?;
    let txn_id = cfg.transactional_id();
    let mut publisher = Publisher::new(&cfg.kafka, txn_id.as_deref()).await?;
    let commit_n = match &txn_id {
        Some(id) => exactly_once::reconcile(cfg, id, store).await?,
        None => 0,
    };
    let saved = position::load(store).await?;
    let mut acks = Vec::new();
    let start_snapshot = saved.is_none() && Start::parse(&src.start).map_err(SourceMisconfigured)? == Start::Snapshot;
    let (saved, history) = if start_snapshot {
        let sink = Sink { cfg, publisher: &mut publisher, acks: &mut acks, progress, shutdown };
        let snap = snapshot::run(&target, None, sink).await.context("initial snapshot")?;
        let commit = txn_id.as_ref().map(|_| commit_n);
        position::save(store, &snap.position, commit, SchemaUpdate::Replace(snap.history.clone())).await?;
        (Some(snap.position), snap.history)
    } else {
        (saved, position::load_history(store).await?)
    };
    let (mut session, start) = Session::open(src, &target, saved.as_ref(), true).await?;
    let (history, saved) = match saved {
        Some(s) => (history, Some(s)),
        None => {
            // A fresh stream: the schemas of the tables as they stand now,
            // saved with the start, so a restart does not move the start.
            let mut conn = Conn::connect(&target).await?;
            let tables = schema::list_tables(&mut conn).await?;
            let h = schema::capture(&mut conn, tables.iter().map(|(n, _)| n)).await?;
            position::save(store, &start, txn_id.as_ref().map(|_| commit_n), SchemaUpdate::Replace(h.clone())).await?;
            (h, Some(start.clone()))
        }
    };
    tracing::info!(source = %format!("{}:{}", src.host, src.port), position = %start, mariadb = session.mariadb, tables_known = history.len(), "streamer: streaming");
    metrics::gauge!("edgebox_streamer_connected").set(1.0);
    let mut p = Pipeline {
        cfg,
        publisher,
        tables: HashMap::new(),
        mariadb: MariadbPosition::default(),
        mysql: MysqlGtidSet::default(),
        is_mariadb: session.mariadb,
        origin: session.server_id,
        file: start.file.clone(),
        next_pos: start.pos,
        txn: None,
        held: None,
        skip: start.skip_rows,
        committed: false,
        acks,
        history,
        pending_schema: Vec::new(),
        warned: HashSet::new(),
        offsets: txn_id.map(|id| (exactly_once::offsets_topic(cfg), id)),
        commit_n,
        kafka_committed: None,
        commit_failed: false,
    };
    if let Some(g) = &start.gtid {
        match p.is_mariadb {
            true => p.mariadb = MariadbPosition::parse(g).map_err(|e| anyhow!("saved position: {e}"))?,
            false => p.mysql = MysqlGtidSet::parse(g).map_err(|e| anyhow!("saved position: {e}"))?,
        }
    }
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Located>>(READ_AHEAD);
    let reader = tokio::spawn(async move {
        loop {
            let ev = session.next().await.and_then(|e| e.ok_or_else(|| anyhow!("the source ended the binlog stream")));
            let failed = ev.is_err();
            if tx.send(ev).await.is_err() || failed {
                return;
            }
        }
    });
    let _stop_reader = AbortOnDrop(reader);
    let period = Duration::from_millis(cfg.checkpoint_interval_ms);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut saved = saved;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            ev = rx.recv() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => break Err(e),
                    None => break Err(anyhow!("the binlog reader stopped")),
                };
                if let Err(e) = p.handle(ev).await {
                    break Err(e);
                }
            }
            ack = p.publisher.next_ack(), if p.publisher.in_flight() > 0 => {
                let more = ack.map(|a| p.acks.push(a)).and_then(|()| p.publisher.ready_acks(&mut p.acks));
                if let Err(e) = more {
                    break Err(e);
                }
            }
            _ = tick.tick() => {
                if let Err(e) = p.commit_kafka().await {
                    break Err(e);
                }
                if let Err(e) = p.publisher.ready_acks(&mut p.acks) {
                    break Err(e);
                }
                p.record_acks();
                if let Err(e) = p.checkpoint(store, &mut saved).await {
                    break Err(e);
                }
            }
        }
    };
    // Whatever happened, save what Kafka has confirmed.
    if let Err(e) = p.commit_kafka().await {
        tracing::warn!(error = %format!("{e:#}"), "streamer: the last Kafka transaction did not commit");
    }
    if tokio::time::timeout(DRAIN, p.publisher.drain()).await.is_err() {
        tracing::warn!(waiting = p.publisher.in_flight(), "streamer: acknowledgements still outstanding at stop");
    }
    p.record_acks();
    p.checkpoint(store, &mut saved).await?;
    result
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Pipeline<'_> {
    /// Saves the acknowledged position with the schema changes read before
    /// it, when either moved.
    async fn checkpoint(&mut self, store: &Store, saved: &mut Option<Position>) -> anyhow::Result<()> {
        let (acked, commit, confirmed) = match &self.offsets {
            // Exactly-once: only what a Kafka transaction committed.
            Some(_) => match self.kafka_committed.take() {
                Some((p, n, c)) => (p, Some(n), c),
                None => return Ok(()),
            },
            None => {
                let Some(acked) = self.publisher.tracker.acked().cloned() else { return Ok(()) };
                let next = self.publisher.tracker.next_unacked();
                let through = self.pending_schema.iter().take_while(|(s, _)| s.is_some_and(|s| s < next)).count();
                (acked, None, self.pending_schema.drain(..through).flat_map(|(_, c)| c).collect())
            }
        };
        if saved.as_ref() == Some(&acked) && confirmed.is_empty() {
            return Ok(());
        }
        position::save(store, &acked, commit, SchemaUpdate::Changes(confirmed))
            .await
            .context("saving the streamer position")?;
        metrics::counter!("edgebox_streamer_checkpoints_total").increment(1);
        metrics::gauge!("edgebox_streamer_position_offset").set(acked.pos as f64);
        if let Some(n) = acked.file.rsplit('.').next().and_then(|n| n.parse::<f64>().ok()) {
            metrics::gauge!("edgebox_streamer_position_file_number").set(n);
        }
        *saved = Some(acked);
        Ok(())
    }

    /// Exactly-once: commits the open Kafka transaction with the position
    /// after everything in it (and the schema changes it covers) on the
    /// offsets topic. Where nothing was published since the last commit,
    /// the position still moves on (past changes to tables not streamed).
    async fn commit_kafka(&mut self) -> anyhow::Result<()> {
        let Some((topic, id)) = &self.offsets else { return Ok(()) };
        if self.commit_failed {
            return Ok(());
        }
        let Some(position) = self.publisher.tracker.last_pushed().cloned() else { return Ok(()) };
        // Every statement read so far has its boundary marked (handle()).
        let changes: Changes = self.pending_schema.drain(..).flat_map(|(_, c)| c).collect();
        if self.publisher.in_transaction_open() {
            let record = OffsetsRecord::new(self.commit_n + 1, position.clone(), &changes);
            let payload = serde_json::to_vec(&record)?;
            if let Err(e) = self.publisher.commit(Some((topic, id.as_bytes(), &payload)), &mut self.acks).await {
                self.commit_failed = true;
                return Err(e);
            }
            self.commit_n += 1;
        }
        let mut all = self.kafka_committed.take().map(|(_, _, c)| c).unwrap_or_default();
        all.extend(changes);
        self.kafka_committed = Some((position, self.commit_n, all));
        Ok(())
    }

    /// Follows a DDL statement in the schema history.
    fn follow_ddl(&mut self, db: &str, statement: &str) {
        let changes = match ddl::parse(statement, db) {
            Ok(d) => self.history.apply(&d),
            Err(e) => {
                metrics::counter!("edgebox_streamer_ddl_unparsed_total").increment(1);
                tracing::warn!(database = db, error = %e, statement, "streamer: a DDL statement the schema history cannot follow; the table's rows use the binlog's own metadata from here");
                e.table.as_ref().map(|t| self.history.forget(t)).unwrap_or_default()
            }
        };
        if !changes.is_empty() {
            self.pending_schema.push((None, changes));
        }
    }

    fn record_acks(&mut self) {
        let now = now_ms();
        for a in self.acks.drain(..) {
            metrics::histogram!("edgebox_streamer_publish_seconds").record(a.sent.elapsed().as_secs_f64());
            let lag = (now as f64 / 1000.0) - f64::from(a.source_ts);
            metrics::histogram!("edgebox_streamer_lag_seconds").record(lag.max(0.0));
        }
        metrics::gauge!("edgebox_streamer_in_flight").set(self.publisher.in_flight() as f64);
        metrics::gauge!("edgebox_streamer_unacknowledged").set(self.publisher.tracker.waiting() as f64);
    }

    fn gtid_state(&self) -> Option<String> {
        let s = if self.is_mariadb { self.mariadb.to_string() } else { self.mysql.to_string() };
        (!s.is_empty()).then_some(s)
    }

    fn boundary(&self) -> Position {
        Position { file: self.file.clone(), pos: self.next_pos, gtid: self.gtid_state(), skip_rows: 0 }
    }

    fn begin(&mut self, at: u64, gtid: Option<String>) {
        let start = Position { file: self.file.clone(), pos: at, gtid: self.gtid_state(), skip_rows: 0 };
        self.txn = Some(Txn { start, gtid, rows: 0, in_begin: false });
    }

    async fn handle(&mut self, ev: Located) -> anyhow::Result<()> {
        let Located { event, file, pos, bytes } = ev;
        metrics::counter!("edgebox_streamer_bytes_total").increment(bytes as u64);
        let header = event.header;
        self.file = file;
        self.origin = header.server_id;
        self.dispatch(event.body, pos, header.timestamp).await?;
        if header.log_pos != 0 {
            self.next_pos = u64::from(header.log_pos);
        }
        if std::mem::take(&mut self.committed) {
            let boundary = self.boundary();
            let seq = self.publisher.mark(boundary);
            for (s, _) in self.pending_schema.iter_mut().rev().take_while(|(s, _)| s.is_none()) {
                *s = Some(seq);
            }
        }
        Ok(())
    }

    async fn dispatch(&mut self, body: EventBody, pos: u64, ts: u32) -> anyhow::Result<()> {
        let kind = event_kind(&body);
        metrics::counter!("edgebox_streamer_events_total", "type" => kind).increment(1);
        match body {
            EventBody::Rotate { position, next_file } => {
                self.file = next_file;
                self.next_pos = position;
            }
            EventBody::MariadbGtidList { gtids } if self.mariadb.0.is_empty() => {
                gtids.into_iter().for_each(|g| self.mariadb.apply(g));
            }
            EventBody::PreviousGtids { set } if self.mysql.0.is_empty() => self.mysql = set,
            EventBody::MariadbGtid { gtid, .. } => self.begin(pos, Some(gtid.to_string())),
            EventBody::MysqlGtid { sid, gno } => self.begin(pos, Some(format!("{sid}:{gno}"))),
            EventBody::AnonymousGtid => self.begin(pos, None),
            EventBody::Query { query, schema, .. } => {
                let q = query.trim();
                if q.eq_ignore_ascii_case("BEGIN") {
                    if self.txn.is_none() {
                        self.begin(pos, None);
                    }
                    if let Some(t) = &mut self.txn {
                        t.in_begin = true;
                    }
                } else if q.eq_ignore_ascii_case("COMMIT") {
                    self.commit(None).await?;
                } else {
                    if is_schema_change(q) {
                        self.follow_ddl(&schema, q);
                        self.schema_change(&schema, q, pos, ts).await?;
                    }
                    if !self.txn.as_ref().is_some_and(|t| t.in_begin) {
                        self.commit(None).await?;
                    }
                }
            }
            EventBody::TableMap(mut map) => {
                if let Err(e) = self.history.enrich(&mut map) {
                    metrics::counter!("edgebox_streamer_schema_mismatch_total").increment(1);
                    if self.warned.insert(e.clone()) {
                        tracing::warn!(error = %e, "streamer: the schema history disagrees with the binlog; using the binlog's own metadata for this table");
                    }
                }
                let table = Table {
                    names: envelope::column_names(&map),
                    topic: self.cfg.topic_for(&self.cfg.topic, &map.schema, &map.table),
                    wanted: self.cfg.wants(&map.schema, &map.table),
                    map,
                };
                self.tables.insert(table.map.table_id, Arc::new(table));
            }
            EventBody::Rows(r) => {
                let table = self
                    .tables
                    .get(&r.table_id)
                    .cloned()
                    .ok_or_else(|| anyhow!("rows for table id {} without its table map", r.table_id))?;
                let changes =
                    rows::decode(&r, &table.map).with_context(|| format!("rows event at {}:{pos}", self.file))?;
                if self.txn.is_none() {
                    self.begin(pos, None);
                }
                for (i, change) in changes.into_iter().enumerate() {
                    let txn = self.txn.as_mut().expect("begun above");
                    txn.rows += 1;
                    if txn.rows <= self.skip || !table.wanted {
                        continue;
                    }
                    let resume = Position { skip_rows: txn.rows, ..txn.start.clone() };
                    let key = envelope::key(&table.map, &table.names, &change);
                    let held = Held {
                        key,
                        table: table.clone(),
                        kind: r.kind,
                        change,
                        file: self.file.clone(),
                        pos,
                        row: i,
                        ts,
                        server_id: self.origin,
                        resume,
                    };
                    if let Some(prev) = self.held.replace(held) {
                        self.publish(prev, false, None).await?;
                    }
                }
            }
            EventBody::Xid { xid } => self.commit(Some(xid)).await?,
            EventBody::TransactionPayload { events } => {
                for inner in events {
                    self.origin = inner.header.server_id;
                    Box::pin(self.dispatch(inner.body, pos, inner.header.timestamp)).await?;
                }
            }
            EventBody::Unknown => {
                tracing::debug!(file = %self.file, pos, "streamer: skipping an event of an unknown type");
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the transaction: the held row goes out as its last, the GTID is
    /// applied, and (in `handle`) the boundary after it is marked.
    async fn commit(&mut self, xid: Option<u64>) -> anyhow::Result<()> {
        if let Some(held) = self.held.take() {
            self.publish(held, true, xid).await?;
        }
        if let Some(txn) = self.txn.take()
            && let Some(g) = &txn.gtid
        {
            match self.is_mariadb {
                true => self.mariadb = merge_mariadb(&self.mariadb, g)?,
                false => {
                    let set = MysqlGtidSet::parse(g).map_err(|e| anyhow!("GTID {g}: {e}"))?;
                    for (sid, iv) in set.0 {
                        for (s, _) in iv {
                            self.mysql.add(sid, s);
                        }
                    }
                }
            }
        }
        self.skip = 0;
        self.committed = true;
        Ok(())
    }

    async fn publish(&mut self, h: Held, last: bool, xid: Option<u64>) -> anyhow::Result<()> {
        let gtid = self.txn.as_ref().and_then(|t| t.gtid.clone());
        let src = Source {
            server_id: h.server_id,
            gtid: gtid.as_deref(),
            file: &h.file,
            pos: h.pos,
            row: h.row,
            ts: h.ts,
            xid,
            last,
            snapshot: None,
        };
        let t = &h.table;
        let op = Op::from(h.kind);
        let value = envelope::value(self.cfg.format, &t.map, &t.names, op, &h.change, &src, now_ms());
        let payload = serde_json::to_vec(&value)?;
        let key = h.key.as_ref().map(serde_json::to_vec).transpose()?;
        let op = op.debezium();
        if payload.len() > self.cfg.kafka.max_message_bytes {
            metrics::counter!("edgebox_streamer_oversized_total").increment(1);
            let what = format!(
                "{}.{} change at {}:{} row {} is {} bytes, over kafka.max_message_bytes {}",
                t.map.schema,
                t.map.table,
                h.file,
                h.pos,
                h.row,
                payload.len(),
                self.cfg.kafka.max_message_bytes
            );
            if self.cfg.oversized == Oversized::Fail {
                bail!("{what} (oversized = \"fail\")");
            }
            tracing::warn!(detail = %what, "streamer: change too large for Kafka; recorded on the error topic");
            let topic = self.cfg.topic_for(&self.cfg.error_topic, &t.map.schema, &t.map.table);
            let record = json!({"error": "message too large", "db": t.map.schema, "table": t.map.table, "key": h.key, "op": op, "file": h.file, "pos": h.pos, "row": h.row, "bytes": payload.len()});
            let body = serde_json::to_vec(&record)?;
            return self.publisher.send(&topic, key.as_deref(), &body, h.resume, h.ts, &mut self.acks).await;
        }
        metrics::counter!("edgebox_streamer_rows_total", "op" => op).increment(1);
        self.publisher.send(&t.topic, key.as_deref(), &payload, h.resume, h.ts, &mut self.acks).await
    }

    async fn schema_change(&mut self, schema: &str, ddl: &str, pos: u64, ts: u32) -> anyhow::Result<()> {
        if let Some(held) = self.held.take() {
            self.publish(held, false, None).await?;
        }
        let topic = self.cfg.topic_for(&self.cfg.schema_topic, schema, "");
        let gtid = self.txn.as_ref().and_then(|t| t.gtid.clone());
        let record = json!({
            "source": {"server_id": self.origin, "file": self.file, "pos": pos, "gtid": gtid, "ts_ms": u64::from(ts) * 1000},
            "databaseName": schema,
            "ddl": ddl,
            "ts_ms": now_ms(),
        });
        let key = serde_json::to_vec(&json!({"databaseName": schema}))?;
        let resume = match &self.txn {
            Some(t) => Position { skip_rows: t.rows, ..t.start.clone() },
            None => self.boundary(),
        };
        self.publisher.send(&topic, Some(&key), &serde_json::to_vec(&record)?, resume, ts, &mut self.acks).await
    }
}

/// Statements that change a database's or table's shape (not accounts,
/// grants or session settings): these go to the schema-changes topic.
fn is_schema_change(q: &str) -> bool {
    let mut words = q.split_ascii_whitespace().map(str::to_ascii_uppercase);
    let first = words.next().unwrap_or_default();
    let object = words.find(|w| {
        !matches!(w.as_str(), "OR" | "REPLACE" | "IF" | "NOT" | "EXISTS" | "TEMPORARY" | "ONLINE" | "IGNORE")
    });
    matches!(first.as_str(), "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE")
        && !matches!(object.as_deref(), Some("USER" | "ROLE" | "SERVER" | "EVENT" | "DEFINER=CURRENT_USER"))
}

fn merge_mariadb(state: &MariadbPosition, gtid: &str) -> anyhow::Result<MariadbPosition> {
    let one = MariadbPosition::parse(gtid).map_err(|e| anyhow!("GTID {gtid}: {e}"))?;
    let mut next = state.clone();
    for g in one.0.into_values() {
        next.apply(g);
    }
    Ok(next)
}

#[cfg(test)]
#[test]
fn schema_changes_are_told_from_account_statements() {
    assert!(is_schema_change("CREATE TABLE shop.t (id INT)"));
    assert!(is_schema_change("alter table t add column c int"));
    assert!(is_schema_change("DROP TABLE IF EXISTS t"));
    assert!(is_schema_change("CREATE OR REPLACE VIEW v AS SELECT 1"));
    assert!(!is_schema_change("CREATE USER 'x'@'%' IDENTIFIED BY 'y'"));
    assert!(!is_schema_change("GRANT SELECT ON *.* TO x"));
    assert!(!is_schema_change("DROP USER IF EXISTS x"));
}

fn event_kind(b: &EventBody) -> &'static str {
    match b {
        EventBody::FormatDescription(_) => "format_description",
        EventBody::Rotate { .. } => "rotate",
        EventBody::Query { .. } => "query",
        EventBody::Xid { .. } => "xid",
        EventBody::TableMap(_) => "table_map",
        EventBody::Rows(_) => "rows",
        EventBody::MariadbGtid { .. } | EventBody::MysqlGtid { .. } | EventBody::AnonymousGtid => "gtid",
        EventBody::MariadbGtidList { .. } | EventBody::PreviousGtids { .. } => "gtid_list",
        EventBody::BinlogCheckpoint { .. } => "binlog_checkpoint",
        EventBody::RowsQuery { .. } => "rows_query",
        EventBody::Heartbeat { .. } => "heartbeat",
        EventBody::TransactionPayload { .. } => "transaction_payload",
        EventBody::Stop => "stop",
        EventBody::Other => "other",
        EventBody::Unknown => "unknown",
    }
}
