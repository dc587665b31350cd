//! The schema history: each table's columns as the DDL read so far left
//! them. TABLE_MAP events name a table's column types but, unless the
//! server writes binlog_row_metadata=FULL, not their names, signedness,
//! ENUM/SET labels or primary key; the history fills those in, so rows
//! decode right after an ALTER TABLE whatever the server's setting.
//!
//! Applying a statement is idempotent where the server's own rules allow
//! (adding a column that exists, dropping one that does not, renaming one
//! already renamed are no-ops): a statement read again after a restart, or
//! one already reflected in a captured schema, leaves the history as it was.
//!
//! The history lives in the store (table `streamer.schema`, one JSON value
//! per table) and is written in the same transaction as the position it
//! belongs with; docs/streamer-format.md describes it.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::ddl::{AlterOp, ColumnDef, Ddl, Name, Place};
use crate::roles::streamer::binlog::TableMap;
use crate::roles::streamer::binlog::table_map::ty;

pub const SCHEMA_TABLE: TableDefinition<&str, &str> = TableDefinition::new("streamer.schema");

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub columns: Vec<ColumnDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
}

impl TableSchema {
    fn find(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(column))
    }

    fn insert(&mut self, col: ColumnDef, place: &Place, default_at: usize) {
        let at = match place {
            Place::Keep => default_at.min(self.columns.len()),
            Place::First => 0,
            Place::After(x) => self.find(x).map_or(self.columns.len(), |i| i + 1),
        };
        self.columns.insert(at, col);
    }

    fn rename_in_key(&mut self, from: &str, to: &str) {
        for k in &mut self.primary_key {
            if k.eq_ignore_ascii_case(from) {
                *k = to.to_owned();
            }
        }
    }

    fn apply(&mut self, op: &AlterOp) {
        match op {
            AlterOp::Add(col, place) => {
                if self.find(&col.name).is_none() {
                    self.insert(col.clone(), place, usize::MAX);
                }
            }
            AlterOp::Drop(name) => {
                if let Some(i) = self.find(name) {
                    self.columns.remove(i);
                    self.primary_key.retain(|k| !k.eq_ignore_ascii_case(name));
                }
            }
            AlterOp::Redefine(old, col, place) => {
                // A CHANGE read again finds the column under its new name.
                let Some(i) = self.find(old).or_else(|| self.find(&col.name)) else { return };
                let was = self.columns.remove(i);
                self.rename_in_key(&was.name, &col.name);
                self.insert(col.clone(), place, i);
            }
            AlterOp::RenameColumn(from, to) => {
                if let Some(i) = self.find(from) {
                    self.columns[i].name = to.clone();
                    self.rename_in_key(from, to);
                }
            }
            AlterOp::AddPrimaryKey(cols) => self.primary_key = cols.clone(),
            AlterOp::DropPrimaryKey => self.primary_key.clear(),
            AlterOp::RenameTable(_) => {}
        }
    }
}

/// Tables whose entry changed: the new schema, or `None` where the table
/// is gone or no longer known.
pub type Changes = Vec<(Name, Option<TableSchema>)>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    tables: BTreeMap<Name, TableSchema>,
}

impl History {
    pub fn get(&self, name: &Name) -> Option<&TableSchema> {
        self.tables.get(name)
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub fn put(&mut self, name: Name, schema: TableSchema) -> Changes {
        self.tables.insert(name.clone(), schema.clone());
        vec![(name, Some(schema))]
    }

    /// Drops what is known of `name` (a statement about it that could not
    /// be followed): its rows fall back to the binlog's own metadata.
    pub fn forget(&mut self, name: &Name) -> Changes {
        self.tables.remove(name).map(|_| (name.clone(), None)).into_iter().collect()
    }

    pub fn apply(&mut self, ddl: &Ddl) -> Changes {
        match ddl {
            Ddl::Create { name, columns, primary_key } => {
                self.put(name.clone(), TableSchema { columns: columns.clone(), primary_key: primary_key.clone() })
            }
            Ddl::CreateLike { name, like } => match self.tables.get(like).cloned() {
                Some(s) => self.put(name.clone(), s),
                None => self.forget(name),
            },
            Ddl::Alter { name, ops } => {
                let Some(mut s) = self.tables.remove(name) else { return Vec::new() };
                let mut target = name.clone();
                for op in ops {
                    match op {
                        AlterOp::RenameTable(to) => target = to.clone(),
                        op => s.apply(op),
                    }
                }
                let mut changes = Vec::new();
                if &target != name {
                    changes.push((name.clone(), None));
                }
                changes.extend(self.put(target, s));
                changes
            }
            Ddl::Drop(names) => names.iter().flat_map(|n| self.forget(n)).collect(),
            Ddl::Rename(pairs) => {
                let mut changes = Vec::new();
                for (from, to) in pairs {
                    if let Some(s) = self.tables.remove(from) {
                        changes.push((from.clone(), None));
                        changes.extend(self.put(to.clone(), s));
                    }
                }
                changes
            }
            Ddl::DropDatabase(db) => {
                let gone: Vec<Name> = self.tables.keys().filter(|n| &n.db == db).cloned().collect();
                gone.iter().flat_map(|n| self.forget(n)).collect()
            }
            Ddl::None => Vec::new(),
        }
    }

    /// Fills in what `map` lacks (names, signedness, ENUM/SET labels,
    /// primary key) from the table's history. `Ok(false)`: no history for
    /// it; an error names how the history and the binlog disagree (the
    /// history is then not used for this map).
    pub fn enrich(&self, map: &mut TableMap) -> Result<bool, String> {
        let name = Name { db: map.schema.clone(), table: map.table.clone() };
        let Some(s) = self.tables.get(&name) else { return Ok(false) };
        if s.columns.len() != map.columns.len() {
            return Err(format!(
                "the schema history has {} columns for {name}, the binlog's table map {}",
                s.columns.len(),
                map.columns.len()
            ));
        }
        for (c, d) in map.columns.iter().zip(&s.columns) {
            if !compatible(c.ty, &d.ty) {
                return Err(format!(
                    "{name} column {}: the schema history says {}, the binlog {}",
                    d.name,
                    d.ty,
                    ty::name(c.ty)
                ));
            }
        }
        for (c, d) in map.columns.iter_mut().zip(&s.columns) {
            c.name.get_or_insert_with(|| d.name.clone());
            c.declared = Some(d.ty.clone());
            if ty::is_numeric(c.ty) {
                c.unsigned.get_or_insert(d.unsigned);
            }
            if c.ty == ty::ENUM && c.enum_values.is_none() && !d.values.is_empty() {
                c.enum_values = Some(d.values.clone());
            }
            if c.ty == ty::SET && c.set_values.is_none() && !d.values.is_empty() {
                c.set_values = Some(d.values.clone());
            }
        }
        if map.primary_key.is_none() && !s.primary_key.is_empty() {
            map.primary_key = s.primary_key.iter().map(|k| s.find(k)).collect();
        }
        Ok(true)
    }

    /// Every table, as the store keeps it.
    pub fn all(&self) -> Changes {
        self.tables.iter().map(|(n, s)| (n.clone(), Some(s.clone()))).collect()
    }
}

/// Whether a binlog column type can be a column declared as `declared`;
/// type names this does not know (UUID, INET6, …) are taken on trust.
fn compatible(code: u8, declared: &str) -> bool {
    let family: &[u8] = match declared {
        "tinyint" | "bool" | "boolean" | "int1" => &[ty::TINY],
        "smallint" | "int2" => &[ty::SHORT],
        "mediumint" | "middleint" | "int3" => &[ty::INT24],
        "int" | "integer" | "int4" => &[ty::LONG],
        "bigint" | "int8" | "serial" => &[ty::LONGLONG],
        "float" | "double" | "real" | "float4" | "float8" => &[ty::FLOAT, ty::DOUBLE],
        "decimal" | "numeric" | "dec" | "fixed" => &[ty::NEWDECIMAL, ty::DECIMAL],
        "date" => &[ty::DATE, ty::NEWDATE],
        "time" => &[ty::TIME, ty::TIME2],
        "datetime" => &[ty::DATETIME, ty::DATETIME2],
        "timestamp" => &[ty::TIMESTAMP, ty::TIMESTAMP2],
        "year" => &[ty::YEAR],
        "char" | "varchar" | "binary" | "varbinary" | "nchar" | "nvarchar" | "character" | "national" | "varchar2"
        | "nvarchar2" | "raw" => &[ty::STRING, ty::VARCHAR, ty::VAR_STRING, ty::MARIADB_VARCHAR_COMPRESSED],
        "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "long"
        | "clob" => &[ty::BLOB, ty::TINY_BLOB, ty::MEDIUM_BLOB, ty::LONG_BLOB, ty::MARIADB_BLOB_COMPRESSED],
        "json" => &[ty::JSON, ty::BLOB, ty::LONG_BLOB],
        "enum" => &[ty::ENUM],
        "set" => &[ty::SET],
        "bit" => &[ty::BIT],
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" | "geomcollection" => &[ty::GEOMETRY],
        _ => return true,
    };
    family.contains(&code)
}

fn key(n: &Name) -> String {
    format!("{}\u{1f}{}", n.db, n.table)
}

/// Writes `changes` inside the caller's transaction (with the position).
pub fn write(txn: &WriteTransaction, changes: &Changes) -> anyhow::Result<()> {
    let mut table = txn.open_table(SCHEMA_TABLE)?;
    for (name, schema) in changes {
        match schema {
            Some(s) => {
                table.insert(key(name).as_str(), serde_json::to_string(s)?.as_str())?;
            }
            None => {
                table.remove(key(name).as_str())?;
            }
        }
    }
    Ok(())
}

/// Replaces the whole history inside the caller's transaction.
pub fn replace(txn: &WriteTransaction, history: &History) -> anyhow::Result<()> {
    txn.open_table(SCHEMA_TABLE)?.retain(|_, _| false)?;
    write(txn, &history.all())
}

pub fn read(txn: &redb::ReadTransaction) -> anyhow::Result<History> {
    let mut h = History::default();
    let Ok(table) = txn.open_table(SCHEMA_TABLE) else { return Ok(h) };
    for entry in table.iter()? {
        let (k, v) = entry?;
        let Some((db, t)) = k.value().split_once('\u{1f}') else {
            anyhow::bail!("store table streamer.schema: key {:?} is not database\\x1ftable", k.value());
        };
        let s: TableSchema = serde_json::from_str(v.value())
            .map_err(|e| anyhow::anyhow!("store table streamer.schema: entry for {db}.{t}: {e}"))?;
        h.tables.insert(Name { db: db.to_owned(), table: t.to_owned() }, s);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::streamer::binlog::table_map::Column;
    use crate::roles::streamer::schema::ddl::parse;

    fn run(h: &mut History, sql: &str) -> Changes {
        h.apply(&parse(sql, "shop").unwrap())
    }

    fn names(h: &History, t: &str) -> Vec<String> {
        let n = Name { db: "shop".into(), table: t.into() };
        h.get(&n).map(|s| s.columns.iter().map(|c| c.name.clone()).collect()).unwrap_or_default()
    }

    #[test]
    fn ddl_moves_columns_and_reading_it_again_changes_nothing() {
        let mut h = History::default();
        run(&mut h, "CREATE TABLE t (id INT PRIMARY KEY, a INT, b TEXT)");
        let script = [
            "ALTER TABLE t ADD COLUMN c INT FIRST",
            "ALTER TABLE t DROP COLUMN b",
            "ALTER TABLE t CHANGE a a2 BIGINT AFTER id",
            "ALTER TABLE t RENAME COLUMN id TO ident",
        ];
        for s in script {
            run(&mut h, s);
        }
        assert_eq!(names(&h, "t"), ["c", "ident", "a2"]);
        let t = Name { db: "shop".into(), table: "t".into() };
        assert_eq!(h.get(&t).unwrap().primary_key, ["ident"]);
        let before = h.clone();
        for s in script {
            run(&mut h, s);
        }
        assert_eq!(h, before, "replayed statements are no-ops");
        let changes = run(&mut h, "RENAME TABLE t TO u");
        assert_eq!(changes.len(), 2);
        assert_eq!(names(&h, "u"), ["c", "ident", "a2"]);
        assert!(names(&h, "t").is_empty());
        run(&mut h, "DROP DATABASE shop");
        assert!(h.is_empty());
    }

    #[test]
    fn enrich_fills_what_the_table_map_lacks_and_refuses_a_stale_history() {
        let mut h = History::default();
        run(&mut h, "CREATE TABLE t (id INT UNSIGNED, e ENUM('x','y'), PRIMARY KEY (id))");
        let anon = |t: u8| Column { ty: t, ..Column::default() };
        let mut map = TableMap {
            table_id: 1,
            schema: "shop".into(),
            table: "t".into(),
            columns: vec![anon(ty::LONG), anon(ty::ENUM)],
            primary_key: None,
        };
        assert_eq!(h.enrich(&mut map), Ok(true));
        assert_eq!(map.columns[0].name.as_deref(), Some("id"));
        assert_eq!(map.columns[0].unsigned, Some(true));
        assert_eq!(map.columns[1].enum_values, Some(vec!["x".into(), "y".into()]));
        assert_eq!(map.primary_key, Some(vec![0]));
        let mut stale = TableMap { columns: vec![anon(ty::VARCHAR), anon(ty::ENUM)], ..map.clone() };
        assert!(h.enrich(&mut stale).unwrap_err().contains("column id"));
        let mut short = TableMap { columns: vec![anon(ty::LONG)], ..map.clone() };
        assert!(h.enrich(&mut short).unwrap_err().contains("2 columns"));
        let mut other = TableMap { table: "u".into(), ..map };
        assert_eq!(h.enrich(&mut other), Ok(false));
    }
}
