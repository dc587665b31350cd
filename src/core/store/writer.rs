//! The writer thread: every write to the store passes through here.
//!
//! Writes that arrive while a commit is in flight are grouped into the next
//! transaction (group commit), so many small acknowledged writes cost one
//! fsync. A write is acknowledged only after its transaction committed with the
//! durability it asked for. Backups run here too, between two commits, which
//! is what makes a copy taken under load consistent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// How durable a write must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Visible to readers at once, on disk with the next durable commit (or a
    /// clean shutdown). For data that can be rebuilt.
    Eventual,
    /// fsynced before the write is acknowledged: survives kill -9 and power loss.
    Immediate,
}

trait Job: Send {
    fn durability(&self) -> Durability;
    fn apply(&mut self, txn: &WriteTransaction) -> anyhow::Result<()>;
    fn finish(self: Box<Self>, outcome: Result<(), String>);
}

struct FnJob<T, F> {
    f: F,
    durability: Durability,
    result: Option<T>,
    reply: oneshot::Sender<anyhow::Result<T>>,
}

impl<T: Send, F: FnMut(&WriteTransaction) -> anyhow::Result<T> + Send> Job for FnJob<T, F> {
    fn durability(&self) -> Durability {
        self.durability
    }
    fn apply(&mut self, txn: &WriteTransaction) -> anyhow::Result<()> {
        self.result = Some((self.f)(txn)?);
        Ok(())
    }
    fn finish(self: Box<Self>, outcome: Result<(), String>) {
        let reply = match (outcome, self.result) {
            (Ok(()), Some(v)) => Ok(v),
            (Ok(()), None) => Err(anyhow::anyhow!("store write finished without running")),
            (Err(e), _) => Err(anyhow::anyhow!(e)),
        };
        let _ = self.reply.send(reply);
    }
}

enum Msg {
    Write(Box<dyn Job>),
    Backup(PathBuf, oneshot::Sender<anyhow::Result<u64>>),
}

pub(super) struct Writer {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(db: Arc<Database>, path: PathBuf, max_batch: usize) -> Result<Writer, StoreError> {
        // Register the series so they are exported before the first write.
        metrics::counter!("edgebox_store_commits_total").increment(0);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("edgebox-store-writer".into())
            .spawn(move || run(db, path, rx, max_batch.max(1)))
            .map_err(|e| StoreError::Io { path: PathBuf::from("<store writer thread>"), source: e })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread) })
    }

    pub fn submit<T, F>(&self, durability: Durability, f: F) -> anyhow::Result<oneshot::Receiver<anyhow::Result<T>>>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Write(Box::new(FnJob { f, durability, result: None, reply })))?;
        Ok(rx)
    }

    pub fn backup(&self, dest: PathBuf) -> anyhow::Result<oneshot::Receiver<anyhow::Result<u64>>> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Backup(dest, reply))?;
        Ok(rx)
    }

    fn send(&self, msg: Msg) -> anyhow::Result<()> {
        self.tx.as_ref().and_then(|tx| tx.send(msg).ok()).ok_or_else(|| anyhow::anyhow!("the store writer has stopped"))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and exit.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: Arc<Database>, path: PathBuf, rx: mpsc::Receiver<Msg>, max_batch: usize) {
    let mut pending: Option<Msg> = None;
    loop {
        let first = match pending.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        match first {
            Msg::Backup(dest, reply) => {
                let _ = reply.send(super::maintenance::backup_inside_writer(&db, &path, &dest));
                continue;
            }
            Msg::Write(job) => batch.push(job),
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Write(job)) => batch.push(job),
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(&db, batch);
    }
}

/// Commits a group in one transaction. If any write fails, the group is
/// retried one write per transaction so one bad write cannot sink the others.
fn commit_group(db: &Database, mut batch: Vec<Box<dyn Job>>) {
    let started = Instant::now();
    let size = batch.len();
    if size > 1 {
        match try_commit(db, &mut batch) {
            Ok(()) => {
                record(size, started);
                batch.into_iter().for_each(|j| j.finish(Ok(())));
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, size, "group commit failed; retrying writes one by one")
            }
        }
    }
    for job in batch {
        let mut single = vec![job];
        let outcome = try_commit(db, &mut single).map_err(|e| format!("{e:#}"));
        record(1, started);
        single.into_iter().for_each(|j| j.finish(outcome.clone()));
    }
}

fn try_commit(db: &Database, batch: &mut [Box<dyn Job>]) -> anyhow::Result<()> {
    let mut txn = db.begin_write()?;
    let durable = batch.iter().any(|j| j.durability() == Durability::Immediate);
    txn.set_durability(if durable { redb::Durability::Immediate } else { redb::Durability::None })?;
    for job in batch.iter_mut() {
        if let Err(e) = job.apply(&txn) {
            txn.abort()?;
            return Err(e);
        }
    }
    txn.commit()?;
    Ok(())
}

fn record(size: usize, started: Instant) {
    metrics::counter!("edgebox_store_commits_total").increment(1);
    metrics::histogram!("edgebox_store_commit_batch_size").record(size as f64);
    metrics::histogram!("edgebox_store_commit_duration_seconds").record(started.elapsed().as_secs_f64());
}
