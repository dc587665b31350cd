//! Store errors callers match on: a foreign file, a newer schema, a lock held
//! by a running appliance.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not an edgebox store (no redb header); refusing to touch it")]
    NotAStore { path: PathBuf },
    #[error(
        "{path}: `{owner}` data has schema version {found}, this edgebox understands up to {supported}; \
         it was written by a newer edgebox and is left untouched"
    )]
    TooNew { path: PathBuf, owner: String, found: u64, supported: u64 },
    #[error("{path}: the store is open in another process (is `edgebox up` running?)")]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: migration {step} of `{owner}` failed: {message}")]
    Migration { path: PathBuf, owner: String, step: String, message: String },
    #[error("{path}: {source}")]
    Redb { path: PathBuf, source: redb::Error },
}

impl StoreError {
    pub fn open(path: &std::path::Path, err: redb::DatabaseError) -> Self {
        let path = path.to_owned();
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path },
            redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io { path, source },
            other => StoreError::Redb { path, source: other.into() },
        }
    }

    pub fn redb(path: &std::path::Path, err: impl Into<redb::Error>) -> Self {
        StoreError::Redb { path: path.to_owned(), source: err.into() }
    }
}
