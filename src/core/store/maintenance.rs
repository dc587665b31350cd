//! `edgebox store info|check|compact|backup|restore`.
//!
//! Offline operations open the file themselves; `backup` of a running
//! appliance goes through its control socket and ends up in
//! [`backup_inside_writer`], which copies the file between two commits.

use std::fs;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableHandle};
use serde::Serialize;

use super::schema::{self, META_INFO};
use super::{SchemaOwner, StoreError, ensure_is_redb_or_absent};
use crate::core::progress::copy_file;

/// What `edgebox store info` prints.
#[derive(Debug, Serialize)]
pub struct StoreInfo {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub schema: Vec<(String, u64)>,
    pub tables: Vec<TableInfo>,
}

#[derive(Debug, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub entries: u64,
    /// Keys and values.
    pub stored_bytes: u64,
    /// Everything the table's pages take: stored bytes, the tree's own
    /// bytes and the unused part of its pages.
    pub page_bytes: u64,
}

pub(super) fn info_of(db: &Database, path: &Path) -> anyhow::Result<StoreInfo> {
    let txn = db.begin_read()?;
    let mut tables = Vec::new();
    for handle in txn.list_tables()? {
        let table = txn.open_untyped_table(handle)?;
        let stats = table.stats()?;
        tables.push(TableInfo {
            name: table_name(&table),
            entries: table.len()?,
            stored_bytes: stats.stored_bytes(),
            page_bytes: stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes(),
        });
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let file_bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(StoreInfo { path: path.to_owned(), file_bytes, schema: schema::versions(&txn)?, tables })
}

fn table_name(t: &redb::ReadOnlyUntypedTable) -> String {
    t.name().to_owned()
}

/// Opens an existing store for an offline operation; never creates one.
fn open_existing(path: &Path) -> Result<Database, StoreError> {
    if !path.exists() {
        return Err(StoreError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here"),
        });
    }
    ensure_is_redb_or_absent(path)?;
    Database::open(path).map_err(|e| StoreError::open(path, e))
}

/// Store info of a store that is not open in this process.
pub fn info(path: &Path) -> anyhow::Result<StoreInfo> {
    let db = open_existing(path)?;
    info_of(&db, path)
}

/// Verifies every page checksum and the tree structure. Returns false when
/// the file needed (and got) a repair.
pub fn check(path: &Path) -> anyhow::Result<bool> {
    let mut db = open_existing(path)?;
    Ok(db.check_integrity().map_err(|e| StoreError::open(path, e))?)
}

/// Rewrites the file to release free pages; returns (bytes before, after).
pub fn compact(path: &Path) -> anyhow::Result<(u64, u64)> {
    let before = fs::metadata(path)?.len();
    let mut db = open_existing(path)?;
    let mut pass = 0;
    while db.compact().map_err(|e| anyhow::anyhow!("{}: compaction failed: {e}", path.display()))? {
        pass += 1;
        tracing::info!(pass, bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0), "compaction pass done");
    }
    drop(db);
    Ok((before, fs::metadata(path)?.len()))
}

/// Backup of a store that no process has open.
pub fn backup_to(path: &Path, dest: &Path) -> anyhow::Result<u64> {
    let db = open_existing(path)?;
    backup_inside_writer(&db, path, dest)
}

/// Copies the store to `dest`. Called with no write transaction open (from
/// the writer thread or on a store nobody writes), so the file holds exactly
/// the last commit. The copy goes to a temporary name, is opened and
/// integrity-checked with redb, fsynced, and only then renamed into place.
pub(super) fn backup_inside_writer(db: &Database, path: &Path, dest: &Path) -> anyhow::Result<u64> {
    if dest.exists() {
        anyhow::bail!("{}: backup target exists; refusing to overwrite it", dest.display());
    }
    // An empty durable commit first: earlier non-durable commits reach the
    // disk, so the copy holds everything acknowledged so far.
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut info = txn.open_table(META_INFO)?;
        info.insert("last_backup_unix", unix_now().to_string().as_str())?;
    }
    txn.commit()?;
    let tmp = tmp_name(dest);
    let _ = fs::remove_file(&tmp); // a leftover from an interrupted backup
    copy_file("backup", path, &tmp).map_err(|e| anyhow::anyhow!("{} -> {}: {e}", path.display(), tmp.display()))?;
    verify_copy(&tmp)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dest)?;
    sync_parent(dest);
    Ok(fs::metadata(dest)?.len())
}

/// Opening runs redb's recovery if the copy was taken from an open database;
/// the integrity check then proves the copy is whole.
fn verify_copy(tmp: &Path) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        let mut db = Database::open(tmp)?;
        if !db.check_integrity()? {
            anyhow::bail!("copy needed a repair");
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(tmp);
        anyhow::anyhow!("{}: backup copy failed verification: {e}", tmp.display())
    })
}

/// Replaces the store at `path` with the backup at `src`, after checking the
/// backup opens, passes the integrity check and is not from a newer edgebox.
pub fn restore_from(src: &Path, path: &Path, owners: &[SchemaOwner]) -> anyhow::Result<u64> {
    let tmp = tmp_name(path);
    let _ = fs::remove_file(&tmp); // a leftover from an interrupted restore
    copy_file("restore", src, &tmp).map_err(|e| anyhow::anyhow!("{} -> {}: {e}", src.display(), tmp.display()))?;
    let checked = (|| -> anyhow::Result<()> {
        ensure_is_redb_or_absent(&tmp).map_err(|_| StoreError::NotAStore { path: src.to_owned() })?;
        let mut db = Database::open(&tmp).map_err(|e| StoreError::open(src, e))?;
        if !db.check_integrity()? {
            anyhow::bail!("{}: backup is damaged (integrity check repaired it); not restoring", src.display());
        }
        let txn = db.begin_read()?;
        schema::refuse_newer(src, &schema::versions(&txn)?, owners)?;
        Ok(())
    })();
    if let Err(e) = checked {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Refuse while the live store is open elsewhere: the lock tells.
    if path.exists() {
        drop(open_existing(path)?);
    }
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_parent(path);
    Ok(fs::metadata(path)?.len())
}

fn tmp_name(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    p.with_file_name(name)
}

fn sync_parent(p: &Path) {
    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()).and_then(|d| fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
