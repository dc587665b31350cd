//! Schema versions and migrations, per owner (the core and each role).
//!
//! `meta.schema` maps an owner name to the number of its migrations applied.
//! A version above what this binary knows means a newer edgebox wrote the
//! store: it is refused, never rewritten.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::StoreError;

/// Owner name → number of migrations applied.
pub const META_SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("meta.schema");

/// One step of an owner's schema; steps run in order, each once.
pub struct Migration {
    /// Shown in errors and logs, e.g. "create series index".
    pub name: &'static str,
    pub apply: fn(&WriteTransaction) -> Result<(), redb::Error>,
}

/// Who owns a set of tables and how to bring them up to date.
#[derive(Clone, Copy)]
pub struct SchemaOwner {
    pub name: &'static str,
    pub migrations: &'static [Migration],
}

/// The core's own tables.
pub const CORE_SCHEMA: SchemaOwner = SchemaOwner { name: "edgebox", migrations: CORE_MIGRATIONS };

const CORE_MIGRATIONS: &[Migration] = &[Migration { name: "create meta tables", apply: create_meta }];

/// `meta.info` keeps facts about the store itself (creator version, last backup).
pub const META_INFO: TableDefinition<&str, &str> = TableDefinition::new("meta.info");

fn create_meta(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut info = txn.open_table(META_INFO)?;
    info.insert("created_by", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Checks every owner's version and applies what is pending, all in one
/// transaction: a crash mid-way leaves the store as it was.
pub fn migrate(db: &Database, path: &Path, owners: &[SchemaOwner]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(|e| StoreError::redb(path, e))?;
    {
        let mut versions = txn.open_table(META_SCHEMA).map_err(|e| StoreError::redb(path, e))?;
        for owner in owners {
            let supported = owner.migrations.len() as u64;
            let found =
                versions.get(owner.name).map_err(|e| StoreError::redb(path, e))?.map(|v| v.value()).unwrap_or(0);
            if found > supported {
                return Err(StoreError::TooNew {
                    path: path.to_owned(),
                    owner: owner.name.to_owned(),
                    found,
                    supported,
                });
            }
            for (i, step) in owner.migrations.iter().enumerate().skip(found as usize) {
                (step.apply)(&txn).map_err(|e| StoreError::Migration {
                    path: path.to_owned(),
                    owner: owner.name.to_owned(),
                    step: format!("{} ({})", i + 1, step.name),
                    message: e.to_string(),
                })?;
                tracing::info!(owner = owner.name, step = i + 1, name = step.name, "store migration applied");
            }
            versions.insert(owner.name, supported).map_err(|e| StoreError::redb(path, e))?;
        }
    }
    txn.commit().map_err(|e| StoreError::redb(path, e))?;
    Ok(())
}

/// Refuses versions above what this binary knows, for any owner it knows.
pub fn refuse_newer(path: &Path, found: &[(String, u64)], owners: &[SchemaOwner]) -> Result<(), StoreError> {
    for (owner, version) in found {
        if let Some(o) = owners.iter().find(|o| o.name == owner) {
            let supported = o.migrations.len() as u64;
            if *version > supported {
                return Err(StoreError::TooNew {
                    path: path.to_owned(),
                    owner: owner.clone(),
                    found: *version,
                    supported,
                });
            }
        }
    }
    Ok(())
}

/// The versions recorded in the store, for `store info`.
pub fn versions(txn: &redb::ReadTransaction) -> anyhow::Result<Vec<(String, u64)>> {
    let table = match txn.open_table(META_SCHEMA) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_owned(), v.value()));
    }
    Ok(out)
}
