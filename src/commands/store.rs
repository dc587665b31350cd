//! `edgebox store info|check|compact|backup|restore|bench`.
//!
//! Offline operations open the file directly. When the store is locked by a
//! running appliance, `info` and `backup` go through its control socket;
//! `check`, `compact` and `restore` refuse and say why.

use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::TableDefinition;

use crate::cli::StoreCommand;
use crate::commands::Invocation;
use crate::core::control::{self, Request};
use crate::core::lifecycle::{prepare_data_dir, schema_owners};
use crate::core::store::{self, Durability, Store, StoreError, StoreOptions};

/// Where `store bench` writes: (writer << 32 | seq) → seq. The crash test
/// reads it back.
pub const BENCH: TableDefinition<u64, u64> = TableDefinition::new("edgebox.bench");

pub fn run(inv: &Invocation, cmd: StoreCommand) -> anyhow::Result<()> {
    let loaded = inv.load_config()?;
    let core = &loaded.core;
    let path = core.store_path();
    let socket = core.control_socket();
    match cmd {
        StoreCommand::Info { json } => {
            let info = match store::info(&path) {
                Ok(i) => serde_json::to_value(i)?,
                Err(e) if is_locked(&e) => control::call(&socket, &Request::StoreInfo)?,
                Err(e) => return Err(e),
            };
            print_info(&info, json)
        }
        StoreCommand::Check => {
            let clean = store::check(&path).map_err(|e| explain_lock(e, "check"))?;
            println!("{}: {}", path.display(), if clean { "ok" } else { "needed a repair; repaired" });
            Ok(())
        }
        StoreCommand::Compact => {
            let (before, after) = store::compact(&path).map_err(|e| explain_lock(e, "compact"))?;
            println!("{}: {before} -> {after} bytes", path.display());
            Ok(())
        }
        StoreCommand::Backup { file } => {
            let dest = absolute(&file)?;
            let bytes = match store::backup_to(&path, &dest) {
                Ok(b) => b,
                Err(e) if is_locked(&e) => {
                    let r = control::call(&socket, &Request::Backup { path: dest.clone() })?;
                    r["bytes"].as_u64().unwrap_or(0)
                }
                Err(e) => return Err(e),
            };
            println!("{}: backup of {} written ({bytes} bytes)", dest.display(), path.display());
            Ok(())
        }
        StoreCommand::Restore { file } => {
            let bytes = store::restore_from(&file, &path, &schema_owners()).map_err(|e| explain_lock(e, "restore"))?;
            println!("{}: restored from {} ({bytes} bytes)", path.display(), file.display());
            Ok(())
        }
        StoreCommand::Bench { writers, writes, print_acks } => {
            prepare_data_dir(&core.edgebox.data_dir)?;
            let opts = StoreOptions { cache_bytes: core.store.cache_mb << 20, max_batch: core.store.max_batch };
            let store = Store::open(&path, &schema_owners(), &opts).map_err(|e| explain_lock(e.into(), "bench"))?;
            bench(&store, writers, writes, print_acks)
        }
    }
}

fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<StoreError>(), Some(StoreError::Locked { .. })))
}

fn explain_lock(e: anyhow::Error, what: &str) -> anyhow::Error {
    if is_locked(&e) { e.context(format!("stop the appliance before `store {what}`")) } else { e }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_owned() } else { std::env::current_dir()?.join(p) })
}

fn print_info(info: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    println!("store: {} ({} bytes)", info["path"].as_str().unwrap_or("?"), info["file_bytes"]);
    for v in info["schema"].as_array().into_iter().flatten() {
        println!("schema: {} v{}", v[0].as_str().unwrap_or("?"), v[1]);
    }
    println!("{:<40} {:>12} {:>14} {:>14}", "table", "entries", "stored bytes", "page bytes");
    for t in info["tables"].as_array().into_iter().flatten() {
        let field = |name: &str| t[name].as_u64().unwrap_or(0);
        let (entries, bytes, pages) = (field("entries"), field("stored_bytes"), field("page_bytes"));
        println!("{:<40} {entries:>12} {bytes:>14} {pages:>14}", t["name"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// Concurrent durable writers against the store; group commit turns many
/// acknowledged writes into few fsyncs.
fn bench(store: &Store, writers: u32, writes: u64, print_acks: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for seq in 0..writes {
                    store.write_blocking(Durability::Immediate, move |txn| {
                        txn.open_table(BENCH)?.insert((u64::from(w) << 32) | seq, seq)?;
                        Ok(())
                    })?;
                    if print_acks {
                        println!("ack {w} {seq}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a bench writer panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let total = u64::from(writers) * writes;
    if !print_acks {
        store.write_blocking(Durability::Immediate, |txn| {
            txn.delete_table(BENCH)?;
            Ok(())
        })?;
    }
    eprintln!(
        "store bench: {total} durable writes from {writers} writers in {secs:.2} s = {:.0} writes/s",
        total as f64 / secs
    );
    Ok(())
}
