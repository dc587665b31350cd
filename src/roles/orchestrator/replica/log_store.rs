//! The Raft log: its own redb file, `<raft_dir>/raft.redb`, beside (not
//! inside) the shared store, so the state machine's tables and the log
//! never share a transaction by accident and the log can be dropped to
//! re-join a cluster. Table `raft.log` holds each entry (JSON) by index;
//! `raft.meta` holds the vote, the committed id and the last purged id.
//! An append is acknowledged to Raft only after its fsync.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{ReadableTable, TableDefinition};

use super::{Entry, NodeId, TypeConfig};
use crate::core::store::{Durability, Store};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft.log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft.meta");

fn io_err(e: anyhow::Error) -> AnyError {
    AnyError::error(format!("{e:#}"))
}

#[derive(Clone)]
pub struct LogStore {
    db: Store,
}

impl LogStore {
    pub fn new(db: Store) -> LogStore {
        LogStore { db }
    }

    async fn meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> anyhow::Result<Option<T>> {
        self.db
            .read(move |txn| {
                let t = match txn.open_table(META) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                match t.get(key)? {
                    Some(v) => Ok(Some(
                        serde_json::from_slice(v.value())
                            .map_err(|e| anyhow::anyhow!("raft.redb table raft.meta: key {key}: {e}"))?,
                    )),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn set_meta<T: serde::Serialize>(&self, key: &'static str, value: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        self.db
            .write(Durability::Immediate, move |txn| {
                txn.open_table(META)?.insert(key, bytes.as_slice())?;
                Ok(())
            })
            .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.db
            .read(move |txn| {
                let t = match txn.open_table(LOG) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let mut out = Vec::new();
                for item in t.range::<u64>((start, end))? {
                    let (k, v) = item?;
                    out.push(
                        serde_json::from_slice(v.value())
                            .map_err(|e| anyhow::anyhow!("raft.redb table raft.log: entry {}: {e}", k.value()))?,
                    );
                }
                Ok(out)
            })
            .await
            .map_err(|e| StorageIOError::read_logs(io_err(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> =
            self.meta("purged").await.map_err(|e| StorageIOError::read_logs(io_err(e)))?;
        let last: Option<Entry> = self
            .db
            .read(|txn| {
                let t = match txn.open_table(LOG) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                match t.last()? {
                    Some((_, v)) => Ok(Some(serde_json::from_slice(v.value())?)),
                    None => Ok(None),
                }
            })
            .await
            .map_err(|e| StorageIOError::read_logs(io_err(e)))?;
        let last = last.map(|e| e.log_id).or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.set_meta("vote", vote).await.map_err(|e| StorageIOError::write_vote(io_err(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.meta("vote").await.map_err(|e| StorageIOError::read_vote(io_err(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.set_meta("committed", &committed).await.map_err(|e| StorageIOError::write(io_err(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let c: Option<Option<LogId<NodeId>>> =
            self.meta("committed").await.map_err(|e| StorageIOError::read(io_err(e)))?;
        Ok(c.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let rows: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| serde_json::to_vec(&e).map(|b| (e.log_id.index, b)))
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        let written = self
            .db
            .write(Durability::Immediate, move |txn| {
                let mut t = txn.open_table(LOG)?;
                for (i, b) in &rows {
                    t.insert(*i, b.as_slice())?;
                }
                Ok(())
            })
            .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(format!("{e:#}"))));
                Err(StorageIOError::write_logs(io_err(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let from = log_id.index;
        self.db
            .write(Durability::Immediate, move |txn| {
                let mut t = txn.open_table(LOG)?;
                t.retain_in(from.., |_, _| false)?;
                Ok(())
            })
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        let upto = log_id.index;
        self.db
            .write(Durability::Immediate, move |txn| {
                txn.open_table(META)?.insert("purged", bytes.as_slice())?;
                let mut t = txn.open_table(LOG)?;
                t.retain_in(..=upto, |_, _| false)?;
                Ok(())
            })
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }
}
