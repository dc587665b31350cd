//! Store unit tests: migrations, refusal of foreign and newer files, group
//! commit semantics and backups under load.

use super::*;
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

const T: TableDefinition<u64, u64> = TableDefinition::new("test.kv");

fn create_t(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(T)?;
    Ok(())
}

const TEST_MIGRATIONS: &[Migration] = &[Migration { name: "create test.kv", apply: create_t }];
const OWNERS: &[SchemaOwner] = &[CORE_SCHEMA, SchemaOwner { name: "test", migrations: TEST_MIGRATIONS }];

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("s.redb"), OWNERS, &StoreOptions::default()).unwrap()
}

fn put(store: &Store, k: u64) -> anyhow::Result<()> {
    store.write_blocking(Durability::Immediate, move |txn| {
        txn.open_table(T)?.insert(k, k * 10)?;
        Ok(())
    })
}

fn count(store: &Store) -> u64 {
    store.read_blocking(|txn| Ok(txn.open_table(T)?.len()?)).unwrap()
}

#[test]
fn migrations_run_once_and_versions_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put(&store, 1).unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(count(&store), 1, "reopening must not rerun migrations over data");
    let info = store.info().unwrap();
    assert!(info.schema.contains(&("test".to_string(), 1)), "{:?}", info.schema);
    assert!(info.schema.contains(&("edgebox".to_string(), 1)));
    assert!(info.tables.iter().any(|t| t.name == "test.kv" && t.entries == 1));
}

#[test]
fn the_store_file_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let mode = std::fs::metadata(dir.path().join("s.redb")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn a_store_from_a_newer_edgebox_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(open(&dir));
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META_SCHEMA).unwrap().insert("test", 7).unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, OWNERS, &StoreOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 7, supported: 1, .. }), "{err}");
    assert!(err.to_string().contains("newer edgebox"), "{err}");
    assert!(before == std::fs::read(&path).unwrap(), "a refused store must not be rewritten");
}

#[test]
fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    std::fs::write(&path, b"hello, I am a text file and not a database\n").unwrap();
    let err = Store::open(&path, OWNERS, &StoreOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"hello, I am a text file and not a database\n");
    std::fs::write(&path, b"red").unwrap();
    assert!(matches!(Store::open(&path, OWNERS, &StoreOptions::default()), Err(StoreError::NotAStore { .. })));
}

#[test]
fn a_second_open_of_the_same_file_reports_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(&dir);
    let err = Store::open(&dir.path().join("s.redb"), OWNERS, &StoreOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn concurrent_writes_are_grouped_and_a_failing_write_does_not_sink_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let k = t * 1000 + i;
                    if i == 25 {
                        let err = store
                            .write_blocking(Durability::Immediate, |_txn| -> anyhow::Result<()> {
                                anyhow::bail!("refused on purpose")
                            })
                            .unwrap_err();
                        assert!(err.to_string().contains("refused on purpose"));
                    }
                    put(&store, k).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(count(&store), 400);
}

#[test]
fn backup_under_load_is_consistent_and_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for k in 0..100 {
        put(&store, k).unwrap();
    }
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for k in 100..600 {
                put(&store, k).unwrap();
            }
        })
    };
    let dest = dir.path().join("backup.redb");
    store.backup_blocking(dest.clone()).unwrap();
    writer.join().unwrap();
    assert!(store.backup_blocking(dest.clone()).is_err(), "an existing target must not be overwritten");

    // Every key in the copy is a prefix of the acknowledged sequence: at least
    // the 100 written before, no gaps (writes were sequential).
    let db = redb::Database::open(&dest).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(T).unwrap();
    let n = t.len().unwrap();
    assert!((100..=600).contains(&n), "{n}");
    for k in 0..n {
        assert_eq!(t.get(k).unwrap().unwrap().value(), k * 10);
    }
    drop((t, txn, db));

    drop(store);
    let live = dir.path().join("s.redb");
    restore_from(&dest, &live, OWNERS).unwrap();
    let store = open(&dir);
    assert_eq!(count(&store), n);
}

#[test]
fn restore_refuses_a_foreign_file_and_keeps_the_live_store() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let live = dir.path().join("s.redb");
    let before = std::fs::read(&live).unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let err = restore_from(&junk, &live, OWNERS).unwrap_err();
    assert!(err.to_string().contains("not an edgebox store"), "{err}");
    assert!(before == std::fs::read(&live).unwrap(), "the live store must be left as it was");
}

#[test]
fn offline_maintenance_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for k in 0..2000 {
        put(&store, k).unwrap();
    }
    store
        .write_blocking(Durability::Immediate, |txn| {
            let mut t = txn.open_table(T)?;
            for k in 0..1900u64 {
                t.remove(k)?;
            }
            Ok(())
        })
        .unwrap();
    drop(store);
    let path = dir.path().join("s.redb");
    assert!(check(&path).unwrap());
    let (before, after) = compact(&path).unwrap();
    assert!(after <= before, "{before} -> {after}");
    assert_eq!(info(&path).unwrap().tables.iter().find(|t| t.name == "test.kv").unwrap().entries, 100);
    let b = dir.path().join("offline.redb");
    assert!(backup_to(&path, &b).unwrap() > 0);
    assert!(check(&dir.path().join("missing.redb")).is_err());
}
