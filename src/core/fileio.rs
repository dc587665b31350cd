//! The small file-I/O module every role uses for files outside the store.
//!
//! Reads, writes and opens go through tokio::fs, which submits them to
//! io_uring when the runtime enabled it and to the blocking pool otherwise.
//! fsync is not in tokio's io_uring driver yet, so it runs on the blocking pool
//! here, in one place, where an io_uring fsync can replace it later.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Reads a whole file.
pub async fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path).await.with_context(|| format!("{}: cannot read", path.display()))
}

/// Replaces `path` with `data` so that a crash leaves either the old or the
/// new content: write a temporary file, fsync it, rename, fsync the directory.
pub async fn write_durably(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_beside(path);
    tokio::fs::write(&tmp, data).await.with_context(|| format!("{}: cannot write", tmp.display()))?;
    sync(&tmp).await?;
    tokio::fs::rename(&tmp, path).await.with_context(|| format!("{}: cannot rename into place", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync(dir).await?;
    }
    Ok(())
}

/// fsync of a file or directory, on the blocking pool.
pub async fn sync(path: &Path) -> anyhow::Result<()> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&p).and_then(|f| f.sync_all()))
        .await?
        .with_context(|| format!("{}: fsync failed", path.display()))
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
