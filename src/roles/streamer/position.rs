//! The replication position the streamer resumes from, saved in the store
//! only once Kafka has acknowledged every change before it.
//!
//! A position names a transaction boundary (a GTID state, or a binlog file
//! and offset) plus how many row changes of the transaction that starts
//! there were already acknowledged (`skip_rows`): a restart re-reads that
//! transaction from its start and skips exactly those, so a crash between
//! two acknowledgements duplicates nothing that was acknowledged. The
//! schema history (schema/history.rs) is saved with it, in one transaction.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::schema::history::{self, Changes, History};
use crate::core::store::{Durability, Store};

pub const POSITION_TABLE: TableDefinition<&str, &str> = TableDefinition::new("streamer.position");
const KEY: &str = "position";
/// With exactly-once delivery: the number of the Kafka transaction the
/// saved position was committed with.
const COMMIT_KEY: &str = "kafka_commit";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Binlog file and offset of the next event to read.
    pub file: String,
    pub pos: u64,
    /// The GTID state at that point: MariaDB domain-server-seq list or a
    /// MySQL executed set. Preferred over file/pos when present (it
    /// survives a failover to another server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Row changes of the transaction starting here already acknowledged.
    #[serde(default)]
    pub skip_rows: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " gtid {g}")?;
        }
        if self.skip_rows > 0 {
            write!(f, " (+{} rows)", self.skip_rows)?;
        }
        Ok(())
    }
}

pub async fn load(store: &Store) -> anyhow::Result<Option<Position>> {
    store
        .read(|txn| {
            let Ok(table) = txn.open_table(POSITION_TABLE) else { return Ok(None) };
            let Some(v) = table.get(KEY)? else { return Ok(None) };
            let pos: Position = serde_json::from_str(v.value())
                .map_err(|e| anyhow::anyhow!("store table streamer.position: unreadable position: {e}"))?;
            Ok(Some(pos))
        })
        .await
}

/// What a save does to the schema history, in the same transaction.
#[derive(Debug, Clone)]
pub enum SchemaUpdate {
    Changes(Changes),
    /// A fresh start's captured schemas replace whatever was kept.
    Replace(History),
}

/// Saves the position (with its Kafka transaction number under
/// exactly-once delivery) and the schema history that goes with it in one
/// fsynced transaction: a restart never pairs a position with schemas from
/// after it.
pub async fn save(store: &Store, pos: &Position, commit: Option<u64>, schema: SchemaUpdate) -> anyhow::Result<()> {
    let text = serde_json::to_string(pos)?;
    store
        .write(Durability::Immediate, move |txn| {
            let mut table = txn.open_table(POSITION_TABLE)?;
            table.insert(KEY, text.as_str())?;
            if let Some(n) = commit {
                table.insert(COMMIT_KEY, n.to_string().as_str())?;
            }
            drop(table);
            match &schema {
                SchemaUpdate::Changes(c) => history::write(txn, c),
                SchemaUpdate::Replace(h) => history::replace(txn, h),
            }
        })
        .await
}

/// The number of the Kafka transaction the saved position came with (0:
/// none yet).
pub async fn load_commit(store: &Store) -> anyhow::Result<u64> {
    store
        .read(|txn| {
            let Ok(table) = txn.open_table(POSITION_TABLE) else { return Ok(0) };
            let Some(v) = table.get(COMMIT_KEY)? else { return Ok(0) };
            v.value()
                .parse()
                .map_err(|e| anyhow::anyhow!("store table streamer.position: kafka_commit {:?}: {e}", v.value()))
        })
        .await
}

/// The schema history saved with the position.
pub async fn load_history(store: &Store) -> anyhow::Result<History> {
    store.read(history::read).await
}
