//! The initial snapshot (`start = "snapshot"`): every selected table's rows
//! as of one binlog position, published as reads (Debezium op "r", Maxwell
//! "bootstrap-insert"), then streaming from exactly that position, so the
//! topics hold each row's state once and every change after it.
//!
//! Consistency: one REPEATABLE READ transaction started WITH CONSISTENT
//! SNAPSHOT reads every table. On MariaDB the server reports the binlog
//! position of that very snapshot (`binlog_snapshot_file/position`), with no
//! lock. Elsewhere (MySQL) a global read lock is held from before the
//! transaction starts until the position and the schemas are read
//! (milliseconds; the account needs RELOAD). Schemas are read after each
//! table's metadata lock is taken, so a DDL racing the snapshot either
//! waits for it or makes the server refuse the read (and the snapshot is
//! retried).
//!
//! A snapshot interrupted (crash, source gone, Kafka failure) starts over:
//! the position is saved only once Kafka acknowledged every row. With
//! exactly-once delivery the rows commit in Kafka transactions every
//! second, so a snapshot started over repeats the rows committed before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::binlog::TableMap;
use super::binlog::rows::RowChange;
use super::binlog::table_map::{Column, ty};
use super::config::StreamerConfig;
use super::envelope::{self, Op, Source};
use super::mysql::conn::{ColumnInfo, column_flag};
use super::mysql::{Conn, Target};
use super::position::Position;
use super::publish::{Ack, Publisher};
use super::schema::{self, History, Name};

/// How the snapshot's binlog position is made consistent with its reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// MariaDB: the transaction's own position, no lock.
    SnapshotStatus,
    /// A brief FLUSH TABLES WITH READ LOCK around the start.
    GlobalReadLock,
}

/// Snapshot progress for /v1/roles.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<Option<Value>>>);

impl Progress {
    pub fn get(&self) -> Option<Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, v: Option<Value>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

pub struct Snapshot {
    pub position: Position,
    pub history: History,
}

/// What the snapshot needs from the pipeline.
pub struct Sink<'a> {
    pub cfg: &'a StreamerConfig,
    pub publisher: &'a mut Publisher,
    pub acks: &'a mut Vec<Ack>,
    pub progress: &'a Progress,
    pub shutdown: &'a CancellationToken,
}

pub async fn run(t: &Target, consistency: Option<Consistency>, sink: Sink<'_>) -> anyhow::Result<Snapshot> {
    let mut conn = Conn::connect(t).await?;
    let mariadb = conn.server_version.contains("MariaDB");
    let consistency = consistency.unwrap_or(match mariadb {
        true => Consistency::SnapshotStatus,
        false => Consistency::GlobalReadLock,
    });
    for s in [
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET time_zone = '+00:00'",
        "SET NAMES utf8mb4",
        // Kafka backpressure may pause reading for a while.
        "SET SESSION net_write_timeout = 3600",
    ] {
        conn.query(s).await?;
    }
    let server_id = conn.query("SELECT @@server_id AS s").await?.first("s").and_then(|s| s.parse().ok()).unwrap_or(0);
    if consistency == Consistency::GlobalReadLock {
        conn.query("FLUSH TABLES WITH READ LOCK")
            .await
            .context("the snapshot's global read lock (the source account needs the RELOAD privilege)")?;
    }
    conn.query("START TRANSACTION WITH CONSISTENT SNAPSHOT").await?;
    let position = position(&mut conn, consistency, mariadb).await?;
    let tables = schema::list_tables(&mut conn).await?;
    let wanted: Vec<&(Name, u64)> = tables.iter().filter(|(n, _)| sink.cfg.wants(&n.db, &n.table)).collect();
    // Hold each wanted table's metadata lock before reading its schema.
    for (n, _) in &wanted {
        conn.query(&format!("SELECT 1 FROM {} LIMIT 0", schema::quote(n))).await?;
    }
    let history = schema::capture(&mut conn, tables.iter().map(|(n, _)| n)).await?;
    if consistency == Consistency::GlobalReadLock {
        conn.query("UNLOCK TABLES").await?;
    }
    tracing::info!(position = %position, tables = wanted.len(), "streamer: snapshot started");
    metrics::gauge!("edgebox_streamer_snapshot_running").set(1.0);
    let mut copy =
        Copy { sink, position: &position, server_id, started: Instant::now(), rows: 0, last_report: Instant::now() };
    let result = copy.tables(&mut conn, &wanted, &history).await;
    metrics::gauge!("edgebox_streamer_snapshot_running").set(0.0);
    copy.sink.progress.set(None);
    result?;
    conn.query("COMMIT").await?;
    let rows = copy.rows;
    tokio::select! {
        _ = copy.sink.shutdown.cancelled() => bail!("stopped before Kafka acknowledged the snapshot"),
        r = async {
            copy.sink.publisher.commit(None, copy.sink.acks).await?;
            copy.sink.publisher.drain().await
        } => r?,
    }
    copy.sink.publisher.ready_acks(copy.sink.acks)?;
    tracing::info!(rows, tables = wanted.len(), seconds = copy.started.elapsed().as_secs_f64(), position = %position, "streamer: snapshot acknowledged; streaming from its position");
    Ok(Snapshot { position, history })
}

async fn position(conn: &mut Conn, consistency: Consistency, mariadb: bool) -> anyhow::Result<Position> {
    let (file, pos) = match consistency {
        Consistency::SnapshotStatus => {
            let rs = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
            let get = |name: &str| {
                rs.rows
                    .iter()
                    .find(|r| r.first().and_then(|c| c.as_deref()).is_some_and(|c| c.eq_ignore_ascii_case(name)))
                    .and_then(|r| r.get(1).cloned().flatten())
            };
            let file = get("Binlog_snapshot_file").filter(|f| !f.is_empty());
            let pos = get("Binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok());
            match (file, pos) {
                (Some(f), Some(p)) => (f, p),
                _ => bail!("the source reports no binlog_snapshot_file/position (is log_bin on?)"),
            }
        }
        Consistency::GlobalReadLock => {
            let rs = match conn.query("SHOW MASTER STATUS").await {
                Ok(rs) => rs,
                // MySQL 8.4 renamed it.
                Err(_) => conn.query("SHOW BINARY LOG STATUS").await?,
            };
            let file = rs.first("File").ok_or_else(|| anyhow!("SHOW MASTER STATUS is empty: no binary log"))?;
            (file.to_owned(), rs.first("Position").and_then(|p| p.parse().ok()).unwrap_or(4))
        }
    };
    let gtid = if mariadb {
        let q = format!("SELECT BINLOG_GTID_POS('{}', {pos}) AS g", file.replace('\'', "''"));
        conn.query(&q).await?.first("g").map(str::to_owned)
    } else {
        conn.query("SELECT @@GLOBAL.gtid_executed AS g").await.ok().and_then(|rs| rs.first("g").map(str::to_owned))
    };
    let gtid = gtid.map(|g| g.replace('\n', "")).filter(|g| !g.is_empty());
    Ok(Position { file, pos, gtid, skip_rows: 0 })
}

struct Copy<'a, 'b> {
    sink: Sink<'a>,
    position: &'b Position,
    server_id: u32,
    started: Instant,
    rows: u64,
    last_report: Instant,
}

impl Copy<'_, '_> {
    async fn tables(&mut self, conn: &mut Conn, wanted: &[&(Name, u64)], history: &History) -> anyhow::Result<()> {
        for (i, (name, estimate)) in wanted.iter().enumerate() {
            metrics::gauge!("edgebox_streamer_snapshot_tables_remaining").set((wanted.len() - i) as f64);
            let last_table = i + 1 == wanted.len();
            self.table(conn, name, *estimate, history, (i, wanted.len()), last_table)
                .await
                .with_context(|| format!("snapshot of {name}"))?;
        }
        metrics::gauge!("edgebox_streamer_snapshot_tables_remaining").set(0.0);
        Ok(())
    }

    async fn table(
        &mut self,
        conn: &mut Conn,
        name: &Name,
        estimate: u64,
        history: &History,
        (index, count): (usize, usize),
        last_table: bool,
    ) -> anyhow::Result<()> {
        let cols = conn.query_start(&format!("SELECT * FROM {}", schema::quote(name))).await?;
        let map = table_map(name, &cols, history);
        let names = envelope::column_names(&map);
        let topic = self.sink.cfg.topic_for(&self.sink.cfg.topic, &name.db, &name.table);
        let ts = u32::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
        let mut done = 0u64;
        // Each row is held back one step so the snapshot's last is marked.
        let mut held: Option<RowChange> = None;
        loop {
            let row = conn.next_row().await?;
            let last = row.is_none();
            if let Some(change) = held.take() {
                self.publish(&map, &names, &topic, change, ts, last_table && last).await?;
                done += 1;
            }
            let Some(row) = row else { break };
            let image = cols.iter().zip(row).map(|(c, v)| Some(text_value(v.as_deref(), c))).collect();
            held = Some(RowChange { before: None, after: Some(image) });
            if self.sink.shutdown.is_cancelled() {
                bail!("stopped");
            }
            if self.last_report.elapsed() >= Duration::from_secs(1) {
                self.last_report = Instant::now();
                // With exactly-once delivery the rows so far commit (a
                // transaction must not outlive transaction.timeout.ms).
                self.sink.publisher.commit(None, self.sink.acks).await?;
                self.sink.publisher.ready_acks(self.sink.acks)?;
                let p = json!({"table": name.to_string(), "table_index": index + 1, "tables": count, "rows": done, "estimated_rows": estimate, "total_rows": self.rows});
                tracing::info!(table = %name, rows = done, estimated = estimate, tables_done = index, tables = count, "streamer: snapshot progress");
                self.sink.progress.set(Some(p));
            }
        }
        tracing::info!(table = %name, rows = done, "streamer: snapshot of a table read");
        Ok(())
    }

    async fn publish(
        &mut self,
        map: &TableMap,
        names: &[String],
        topic: &str,
        change: RowChange,
        ts: u32,
        last: bool,
    ) -> anyhow::Result<()> {
        let src = Source {
            server_id: self.server_id,
            gtid: self.position.gtid.as_deref(),
            file: &self.position.file,
            pos: self.position.pos,
            row: 0,
            ts,
            xid: None,
            last,
            snapshot: Some(if last { "last" } else { "true" }),
        };
        let value =
            envelope::value(self.sink.cfg.format, map, names, Op::Read, &change, &src, super::pipeline::now_ms());
        let payload = serde_json::to_vec(&value)?;
        let key = envelope::key(map, names, &change).as_ref().map(serde_json::to_vec).transpose()?;
        if payload.len() > self.sink.cfg.kafka.max_message_bytes {
            bail!(
                "a row of {} bytes is over kafka.max_message_bytes {}; raise it to snapshot this table",
                payload.len(),
                self.sink.cfg.kafka.max_message_bytes
            );
        }
        self.sink.publisher.send(topic, key.as_deref(), &payload, self.position.clone(), ts, self.sink.acks).await?;
        self.rows += 1;
        metrics::counter!("edgebox_streamer_snapshot_rows_total").increment(1);
        Ok(())
    }
}

/// A table map for the envelope: the result's columns, named and keyed
/// by the captured schema.
fn table_map(name: &Name, cols: &[ColumnInfo], history: &History) -> TableMap {
    let columns = cols.iter().map(|c| Column { ty: c.ty, name: Some(c.name.clone()), ..Column::default() }).collect();
    let primary_key = history
        .get(name)
        .and_then(|s| s.primary_key.iter().map(|k| cols.iter().position(|c| c.name.eq_ignore_ascii_case(k))).collect());
    TableMap { table_id: 0, schema: name.db.clone(), table: name.table.clone(), columns, primary_key }
}

/// A text-protocol value in the representation the binlog decoder gives
/// the same value (see binlog/value.rs), so a row reads the same whether
/// it came from the snapshot or from a change.
pub fn text_value(v: Option<&[u8]>, c: &ColumnInfo) -> Value {
    let Some(b) = v else { return Value::Null };
    let text = || String::from_utf8_lossy(b).into_owned();
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    let number = |s: &str| -> Value {
        let unsigned = c.flags & column_flag::UNSIGNED != 0;
        let n = if unsigned { s.parse::<u64>().ok().map(Value::from) } else { s.parse::<i64>().ok().map(Value::from) };
        n.unwrap_or_else(|| Value::String(s.to_owned()))
    };
    let float = |f: Option<f64>| f.and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number);
    match c.ty {
        ty::TINY | ty::SHORT | ty::INT24 | ty::LONG | ty::LONGLONG | ty::YEAR => number(&text()),
        // Through f32 as the binlog's four bytes are.
        ty::FLOAT => float(text().parse::<f32>().ok().map(f64::from)),
        ty::DOUBLE => float(text().parse::<f64>().ok()),
        ty::DATETIME | ty::DATETIME2 => Value::String(text().replacen(' ', "T", 1)),
        ty::TIMESTAMP | ty::TIMESTAMP2 => Value::String(format!("{}Z", text().replacen(' ', "T", 1))),
        ty::BIT => Value::from(b.iter().take(8).fold(0u64, |acc, &x| acc << 8 | u64::from(x))),
        ty::GEOMETRY => match b.split_first_chunk::<4>() {
            Some((srid, wkb)) => {
                json!({"srid": u32::from_le_bytes(*srid), "wkb": base64::engine::general_purpose::STANDARD.encode(wkb)})
            }
            None => b64(b),
        },
        ty::NULL => Value::Null,
        _ if c.flags & (column_flag::ENUM | column_flag::SET) != 0 => Value::String(text()),
        ty::STRING | ty::VAR_STRING | ty::VARCHAR | ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB
            if c.charset == 63 =>
        {
            b64(b)
        }
        _ => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => b64(b),
        },
    }
}
