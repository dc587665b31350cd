//! The source's current schemas, read with SHOW CREATE TABLE and parsed by
//! the same DDL reader as the binlog's statements: where a stream starts
//! fresh, the tables created before its first binlog event are known too.

use anyhow::Context;

use super::ddl::{self, Ddl, Name};
use super::history::History;
use crate::roles::streamer::mysql::Conn;

/// Every base table outside the system schemas, with its estimated rows.
pub async fn list_tables(conn: &mut Conn) -> anyhow::Result<Vec<(Name, u64)>> {
    let rs = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2",
        )
        .await?;
    Ok(rs
        .rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let (db, table) = (it.next().flatten()?, it.next().flatten()?);
            let rows = it.next().flatten().and_then(|n| n.parse().ok()).unwrap_or(0);
            Some((Name { db, table }, rows))
        })
        .collect())
}

/// `db`.`table`, quoted for a statement.
pub fn quote(n: &Name) -> String {
    format!("`{}`.`{}`", n.db.replace('`', "``"), n.table.replace('`', "``"))
}

/// The schemas of `tables` as the source has them now. A table whose
/// definition cannot be read is left out (with a warning): its rows then
/// rely on the binlog's own metadata.
pub async fn capture<'a>(conn: &mut Conn, tables: impl Iterator<Item = &'a Name>) -> anyhow::Result<History> {
    let mut history = History::default();
    for name in tables {
        let rs = conn
            .query(&format!("SHOW CREATE TABLE {}", quote(name)))
            .await
            .with_context(|| format!("reading the schema of {name}"))?;
        let Some(text) = rs.first("Create Table") else { continue };
        match ddl::parse(text, &name.db) {
            Ok(Ddl::Create { columns, primary_key, .. }) => {
                history.put(name.clone(), super::TableSchema { columns, primary_key });
            }
            Ok(other) => {
                tracing::warn!(table = %name, statement = ?other, "streamer: SHOW CREATE TABLE gave no table definition")
            }
            Err(e) => {
                metrics::counter!("edgebox_streamer_ddl_unparsed_total").increment(1);
                tracing::warn!(table = %name, error = %e, "streamer: cannot read the table's definition; its rows use the binlog's metadata");
            }
        }
    }
    Ok(history)
}
