//! Kafka records for row changes: the key (the primary key as a JSON
//! object; null for a table without one, whose changes then all go to
//! partition 0 so they stay in order) and the value in Debezium's envelope
//! (before, after, source, op, ts_ms) or Maxwell's (database, table, type,
//! data, old, position, gtid, xid, commit).

use serde_json::{Map, Value, json};

use super::binlog::TableMap;
use super::binlog::event::RowsKind;
use super::binlog::rows::{Image, RowChange};
use super::config::Format;

/// Where a change came from, for the envelope's source block.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub server_id: u32,
    pub gtid: Option<&'a str>,
    pub file: &'a str,
    /// Start of the rows event in `file`.
    pub pos: u64,
    /// Row number within the rows event.
    pub row: usize,
    /// The transaction's commit time, seconds since the epoch.
    pub ts: u32,
    pub xid: Option<u64>,
    /// The transaction's last row.
    pub last: bool,
    /// Debezium's source.snapshot: "true" for a snapshot read, "last" for
    /// the snapshot's final row, `None` while streaming ("false").
    pub snapshot: Option<&'a str>,
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// Read by the initial snapshot.
    Read,
}

impl From<RowsKind> for Op {
    fn from(k: RowsKind) -> Op {
        match k {
            RowsKind::Insert => Op::Create,
            RowsKind::Update => Op::Update,
            RowsKind::Delete => Op::Delete,
        }
    }
}

impl Op {
    pub fn debezium(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }

    fn maxwell(self) -> &'static str {
        match self {
            Op::Create => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Read => "bootstrap-insert",
        }
    }
}

/// Column names: the table map's (binlog_row_metadata=FULL), else the
/// positional names `col_1`, `col_2`, … .
pub fn column_names(map: &TableMap) -> Vec<String> {
    map.columns.iter().enumerate().map(|(i, c)| c.name.clone().unwrap_or_else(|| format!("col_{}", i + 1))).collect()
}

fn object(names: &[String], image: &Image) -> Value {
    let mut m = Map::new();
    for (name, v) in names.iter().zip(image) {
        if let Some(v) = v {
            m.insert(name.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// The record key: the primary key columns of the after image (the before
/// image for a delete), or `None` without a primary key.
pub fn key(map: &TableMap, names: &[String], change: &RowChange) -> Option<Value> {
    let pk = map.primary_key.as_ref().filter(|pk| !pk.is_empty())?;
    let image = change.after.as_ref().or(change.before.as_ref())?;
    let mut m = Map::new();
    for &i in pk {
        m.insert(names.get(i)?.clone(), image.get(i)?.clone().unwrap_or(Value::Null));
    }
    Some(Value::Object(m))
}

pub fn value(
    format: Format,
    map: &TableMap,
    names: &[String],
    op: Op,
    change: &RowChange,
    src: &Source<'_>,
    now_ms: u64,
) -> Value {
    let before = change.before.as_ref().map(|i| object(names, i));
    let after = change.after.as_ref().map(|i| object(names, i));
    match format {
        Format::Debezium => json!({
            "before": before,
            "after": after,
            "source": {
                "version": env!("CARGO_PKG_VERSION"),
                "connector": "mysql",
                "name": "edgebox",
                "ts_ms": u64::from(src.ts) * 1000,
                "db": map.schema,
                "table": map.table,
                "server_id": src.server_id,
                "gtid": src.gtid,
                "file": src.file,
                "pos": src.pos,
                "row": src.row,
                "snapshot": src.snapshot.unwrap_or("false"),
            },
            "op": op.debezium(),
            "ts_ms": now_ms,
        }),
        Format::Maxwell => {
            let mut v = json!({
                "database": map.schema,
                "table": map.table,
                "type": op.maxwell(),
                "ts": src.ts,
                "position": format!("{}:{}", src.file, src.pos),
                "server_id": src.server_id,
                "data": if op == Op::Delete { before.clone() } else { after.clone() },
            });
            if let Some(g) = src.gtid {
                v["gtid"] = json!(g);
            }
            if let Some(x) = src.xid {
                v["xid"] = json!(x);
            }
            if src.last {
                v["commit"] = json!(true);
            }
            // Maxwell's "old": the before values of the columns that changed.
            if let (Op::Update, Some(Value::Object(b)), Some(Value::Object(a))) = (op, &before, &after) {
                let old: Map<String, Value> =
                    b.iter().filter(|(k, v)| a.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
                v["old"] = Value::Object(old);
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::streamer::binlog::table_map::Column;

    #[test]
    fn debezium_and_maxwell_envelopes_carry_the_images_key_and_position() {
        let col = |n: &str| Column { name: Some(n.into()), ..Column::default() };
        let map = TableMap {
            table_id: 1,
            schema: "shop".into(),
            table: "orders".into(),
            columns: vec![col("id"), col("status")],
            primary_key: Some(vec![0]),
        };
        let names = column_names(&map);
        let change = RowChange {
            before: Some(vec![Some(json!(7)), Some(json!("new"))]),
            after: Some(vec![Some(json!(7)), Some(json!("paid"))]),
        };
        let src = Source {
            server_id: 1,
            gtid: Some("0-1-5"),
            file: "binlog.000001",
            pos: 900,
            row: 0,
            ts: 1_700_000_000,
            xid: Some(42),
            last: true,
            snapshot: None,
        };
        assert_eq!(key(&map, &names, &change), Some(json!({"id": 7})));
        let d = value(Format::Debezium, &map, &names, Op::Update, &change, &src, 1);
        assert_eq!(d["op"], "u");
        assert_eq!(d["before"]["status"], "new");
        assert_eq!(d["after"]["status"], "paid");
        assert_eq!(d["source"]["gtid"], "0-1-5");
        assert_eq!(d["source"]["ts_ms"], 1_700_000_000_000u64);
        let m = value(Format::Maxwell, &map, &names, Op::Update, &change, &src, 1);
        assert_eq!(m["type"], "update");
        assert_eq!(m["old"], json!({"status": "new"}));
        assert_eq!(m["commit"], true);
        let keyless = TableMap { primary_key: None, ..map };
        assert_eq!(key(&keyless, &names, &change), None);
    }
}
