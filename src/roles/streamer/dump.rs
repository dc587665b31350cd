//! `streamer dump`: every event as one JSON line (position, type, and what
//! the event says; rows decoded with their column names), from a binlog
//! file or from the source as a replica.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::binlog::event::{Event, EventBody};
use super::binlog::table_map::ty;
use super::binlog::{TableMap, file, rows};
use super::config::SourceConfig;
use super::envelope;
use super::source::Session;

/// Decodes events into JSON lines, remembering table maps.
#[derive(Default)]
pub struct Printer {
    maps: std::collections::HashMap<u64, TableMap>,
}

impl Printer {
    pub fn line(&mut self, file: &str, pos: u64, ev: &Event) -> anyhow::Result<Value> {
        let h = ev.header;
        let mut v = json!({"file": file, "pos": pos, "server_id": h.server_id, "timestamp": h.timestamp});
        let (kind, detail) = match &ev.body {
            EventBody::FormatDescription(f) => {
                ("format_description", json!({"server_version": f.server_version, "checksum": f.checksum}))
            }
            EventBody::Rotate { position, next_file } => {
                ("rotate", json!({"next_file": next_file, "position": position}))
            }
            EventBody::Query { schema, query, error_code, .. } => {
                ("query", json!({"schema": schema, "query": query, "error_code": error_code}))
            }
            EventBody::Xid { xid } => ("xid", json!({"xid": xid})),
            EventBody::TableMap(m) => {
                let cols: Vec<Value> = m.columns.iter().map(|c| json!({"name": c.name, "type": ty::name(c.ty), "nullable": c.nullable, "unsigned": c.unsigned})).collect();
                self.maps.insert(m.table_id, m.clone());
                (
                    "table_map",
                    json!({"table_id": m.table_id, "db": m.schema, "table": m.table, "columns": cols, "primary_key": m.primary_key}),
                )
            }
            EventBody::Rows(r) => {
                let map = self
                    .maps
                    .get(&r.table_id)
                    .with_context(|| format!("rows for table id {} before its table map", r.table_id))?;
                let names = envelope::column_names(map);
                let image = |i: &Option<rows::Image>| {
                    i.as_ref().map(|i| {
                        Value::Object(
                            names.iter().zip(i).filter_map(|(n, v)| v.clone().map(|v| (n.clone(), v))).collect(),
                        )
                    })
                };
                let changes: Vec<Value> = rows::decode(r, map)?
                    .iter()
                    .map(|c| json!({"before": image(&c.before), "after": image(&c.after)}))
                    .collect();
                ("rows", json!({"db": map.schema, "table": map.table, "op": r.kind, "rows": changes}))
            }
            EventBody::MariadbGtid { gtid, standalone } => {
                ("gtid", json!({"gtid": gtid.to_string(), "standalone": standalone}))
            }
            EventBody::MysqlGtid { sid, gno } => ("gtid", json!({"gtid": format!("{sid}:{gno}")})),
            EventBody::AnonymousGtid => ("anonymous_gtid", json!({})),
            EventBody::MariadbGtidList { gtids } => {
                ("gtid_list", json!({"gtids": gtids.iter().map(ToString::to_string).collect::<Vec<_>>()}))
            }
            EventBody::PreviousGtids { set } => ("previous_gtids", json!({"set": set.to_string()})),
            EventBody::BinlogCheckpoint { file } => ("binlog_checkpoint", json!({"binlog": file})),
            EventBody::RowsQuery { query } => ("rows_query", json!({"query": query})),
            EventBody::Heartbeat { log_file } => ("heartbeat", json!({"binlog": log_file})),
            EventBody::TransactionPayload { events } => {
                let inner: Vec<Value> =
                    events.iter().map(|e| self.line(file, pos, e)).collect::<anyhow::Result<_>>()?;
                ("transaction_payload", json!({"events": inner}))
            }
            EventBody::Stop => ("stop", json!({})),
            EventBody::Other => ("other", json!({"type_code": h.type_code})),
            EventBody::Unknown => ("unknown", json!({"type_code": h.type_code})),
        };
        v["type"] = json!(kind);
        if let (Value::Object(o), Value::Object(d)) = (&mut v, detail) {
            o.extend(d);
        }
        Ok(v)
    }
}

pub fn file(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut p = Printer::default();
    for item in file::events(&data).with_context(|| path.display().to_string())? {
        let (pos, ev) = item.with_context(|| path.display().to_string())?;
        writeln!(out, "{}", p.line(&name, pos, &ev)?)?;
    }
    Ok(())
}

pub async fn server(src: &SourceConfig, follow: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let target = super::source::target(src)?;
    // A replica id of its own: the source drops an older connection that
    // registers with the same id, which would cut off a running streamer.
    let src = SourceConfig { server_id: 0xed00_0000 | (std::process::id() & 0xffff), ..src.clone() };
    let (mut session, _) = Session::open(&src, &target, None, follow).await?;
    let mut p = Printer::default();
    while let Some(l) = session.next().await? {
        writeln!(out, "{}", p.line(&l.file, l.pos, &l.event)?)?;
        if follow {
            out.flush()?;
        }
    }
    Ok(())
}
