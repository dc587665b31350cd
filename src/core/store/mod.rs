//! The one embedded store: a single redb file shared by every role.
//!
//! Why one file: one fsync path, one backup, one place to check. Each role
//! owns the tables named `<role>.*` and its migrations; the core owns `meta.*`.
//! redb calls block, so reads run on tokio's blocking pool and every write goes
//! through one dedicated writer thread that groups concurrent writes into a
//! single transaction (group commit, see `writer.rs`). The file layout is
//! described in docs/store-format.md.

mod error;
mod maintenance;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

pub use error::StoreError;
pub use maintenance::{StoreInfo, backup_to, check, compact, info, restore_from};
pub use schema::{CORE_SCHEMA, META_SCHEMA, Migration, SchemaOwner};
pub use writer::Durability;

use writer::Writer;

/// The first bytes of every redb file (redb's own magic number).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// The most writes grouped into one transaction.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { cache_bytes: 64 << 20, max_batch: 1024 }
    }
}

/// A cheap-to-clone handle on the open store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    writer: Writer,
}

impl Store {
    /// Opens (or creates) the store at `path`, refuses a file that is not a
    /// redb store or that a newer edgebox wrote, and runs every owner's
    /// pending migrations in one transaction.
    pub fn open(path: &Path, owners: &[SchemaOwner], opts: &StoreOptions) -> Result<Store, StoreError> {
        ensure_is_redb_or_absent(path)?;
        if path.metadata().is_ok_and(|m| m.len() > 0) {
            // Check versions read-only first: a store we must refuse is
            // never opened for writing, so not a byte of it changes. A file
            // that needs crash recovery cannot be opened read-only; the
            // read-write open below repairs it and `migrate` checks then.
            match redb::ReadOnlyDatabase::open(path) {
                Ok(ro) => check_versions_read_only(&ro, path, owners)?,
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(e) => return Err(StoreError::open(path, e)),
            }
        }
        let db =
            Database::builder().set_cache_size(opts.cache_bytes).create(path).map_err(|e| StoreError::open(path, e))?;
        // Roles keep keys in it (the orchestrator's node CA): its owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
        }
        schema::migrate(&db, path, owners)?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), path.to_owned(), opts.max_batch)?;
        Ok(Store { inner: Arc::new(Inner { db, path: path.to_owned(), writer }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in a read snapshot on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> anyhow::Result<T> + Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            f(&txn)
        })
        .await?
    }

    /// Runs `f` in a read snapshot on the calling thread (for CLI commands and
    /// code already on a blocking thread).
    pub fn read_blocking<T>(&self, f: impl FnOnce(&ReadTransaction) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let txn = self.inner.db.begin_read()?;
        f(&txn)
    }

    /// Applies `f` in a write transaction shared with other concurrent writes
    /// and returns once that transaction committed with at least the asked
    /// durability. `f` may run more than once (if another write in its group
    /// fails, the group is retried one write at a time), so it must only touch
    /// the transaction.
    pub async fn write<T, F>(&self, durability: Durability, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> anyhow::Result<T> + Send + 'static,
    {
        self.inner.writer.submit(durability, f)?.await?
    }

    /// [`Store::write`] for callers outside the runtime.
    pub fn write_blocking<T, F>(&self, durability: Durability, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> anyhow::Result<T> + Send + 'static,
    {
        self.inner.writer.submit(durability, f)?.blocking_recv()?
    }

    /// Writes a consistent, verified copy of the store to `dest` while writes
    /// keep flowing: the copy is taken inside the writer thread, between two
    /// group commits.
    pub async fn backup(&self, dest: PathBuf) -> anyhow::Result<u64> {
        self.inner.writer.backup(dest)?.await?
    }

    /// [`Store::backup`] for callers outside the runtime.
    pub fn backup_blocking(&self, dest: PathBuf) -> anyhow::Result<u64> {
        self.inner.writer.backup(dest)?.blocking_recv()?
    }

    /// Size and per-table statistics.
    pub fn info(&self) -> anyhow::Result<StoreInfo> {
        maintenance::info_of(&self.inner.db, &self.inner.path)
    }
}

fn check_versions_read_only(
    ro: &redb::ReadOnlyDatabase,
    path: &Path,
    owners: &[SchemaOwner],
) -> Result<(), StoreError> {
    let txn = ro.begin_read().map_err(|e| StoreError::redb(path, e))?;
    let found = schema::versions(&txn).map_err(|e| StoreError::Migration {
        path: path.to_owned(),
        owner: "edgebox".into(),
        step: "read schema versions".into(),
        message: e.to_string(),
    })?;
    schema::refuse_newer(path, &found, owners)
}

/// An absent or empty file becomes a new store; anything else must start with
/// redb's magic number, so a stray file is never rewritten.
fn ensure_is_redb_or_absent(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io { path: path.to_owned(), source: e });
        }
    };
    let mut head = [0u8; REDB_MAGIC.len()];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                return Err(StoreError::Io { path: path.to_owned(), source: e });
            }
        }
    }
    if filled == 0 {
        return Ok(());
    }
    if filled < head.len() || head != REDB_MAGIC {
        return Err(StoreError::NotAStore { path: path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
