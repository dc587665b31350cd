//! The small file-I/O module every role uses for files outside the store.
//!
//! With io_uring in use, reads, writes, opens and renames go through tokio::fs,
//! which submits them to tokio's io_uring driver (on musl builds tokio 1.54
//! still reads through the blocking pool: its io_uring read needs statx,
//! which it enables for glibc only). With the blocking path chosen (forced,
//! or io_uring unavailable), every call runs std::fs on the blocking pool, so
//! `--io blocking` really means no io_uring. fsync is not in tokio's driver
//! yet, so it always runs on the blocking pool, here, in one place.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::core::runtime::IoPath;

/// File operations on the I/O path the process chose at start.
#[derive(Debug, Clone, Copy)]
pub struct FileIo {
    uring: bool,
}

impl FileIo {
    pub fn new(path: &IoPath) -> Self {
        Self { uring: path.is_uring() }
    }

    /// Reads a whole file.
    pub async fn read(&self, path: &Path) -> anyhow::Result<Vec<u8>> {
        let p = path.to_owned();
        self.on_path(tokio::fs::read(path), move || std::fs::read(p))
            .await
            .with_context(|| format!("{}: cannot read", path.display()))
    }

    /// Replaces `path` with `data` so that a crash leaves either the old or
    /// the new content: write a temporary file, fsync it, rename, fsync the
    /// directory.
    pub async fn write_durably(&self, path: &Path, data: &[u8]) -> anyhow::Result<()> {
        let tmp = temp_beside(path);
        let (t, d) = (tmp.clone(), data.to_vec());
        self.on_path(tokio::fs::write(&tmp, data), move || std::fs::write(t, d))
            .await
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        sync(&tmp).await?;
        let (t, p) = (tmp.clone(), path.to_owned());
        self.on_path(tokio::fs::rename(&tmp, path), move || std::fs::rename(t, p))
            .await
            .with_context(|| format!("{}: cannot rename into place", path.display()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync(dir).await?;
        }
        Ok(())
    }
}

impl FileIo {
    /// Runs `uring` (a tokio::fs future) on the io_uring path, else
    /// `blocking` on the blocking pool.
    async fn on_path<T: Send + 'static>(
        &self,
        uring: impl std::future::Future<Output = std::io::Result<T>>,
        blocking: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        if self.uring {
            uring.await
        } else {
            tokio::task::spawn_blocking(blocking).await.map_err(std::io::Error::other)?
        }
    }
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
