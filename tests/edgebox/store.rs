//! The store from the outside: crash safety under kill -9, offline
//! maintenance, refusals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgebox::commands::store::BENCH;
use redb::{ReadableDatabase, ReadableTableMetadata};

use crate::support::{bin, run, text};

/// kill -9 in the middle of a stream of acknowledged durable writes; every
/// write acknowledged before the kill must be in the reopened store.
#[test]
fn every_acknowledged_write_survives_kill_9() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = Command::new(bin())
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "store",
                "bench",
                "--writers",
                "8",
                "--writes",
                "1000000",
                "--print-acks",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acks = Vec::new();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let started = Instant::now();
        let mut lines = reader.lines();
        // Kill at a different moment each round.
        let run_for = Duration::from_millis(300 + 250 * round);
        while started.elapsed() < run_for {
            let Some(Ok(line)) = lines.next() else { break };
            let mut parts = line.split_whitespace().skip(1);
            let w: u64 = parts.next().unwrap().parse().unwrap();
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            acks.push((w << 32) | seq);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(acks.len() > 50, "round {round}: only {} acks before the kill", acks.len());

        // Reopen through the real store code (it repairs after a crash).
        let path = data.join("edgebox.redb");
        let owners = edgebox::core::lifecycle::schema_owners();
        let store = edgebox::core::store::Store::open(&path, &owners, &Default::default()).unwrap();
        let missing = store
            .read_blocking(move |txn| {
                let t = txn.open_table(BENCH)?;
                let mut missing = 0;
                for k in &acks {
                    if t.get(*k)?.is_none() {
                        missing += 1;
                    }
                }
                Ok((missing, acks.len(), t.len()?))
            })
            .unwrap();
        assert_eq!(missing.0, 0, "round {round}: {} of {} acknowledged writes lost", missing.0, missing.1);
        assert!(missing.2 >= missing.1 as u64);
    }
}

#[test]
fn offline_check_compact_backup_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = run(&["--data-dir", d, "store", "bench", "--writers", "2", "--writes", "200"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("writes/s"));
    for cmd in [&["store", "check"][..], &["store", "compact"][..], &["store", "info"][..]] {
        let out = run(&[&["--data-dir", d][..], cmd].concat());
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {}", text(&out.stderr));
    }
    let backup = dir.path().join("b.redb");
    let b = backup.to_str().unwrap();
    assert_eq!(run(&["--data-dir", d, "store", "backup", b]).status.code(), Some(0));
    let again = run(&["--data-dir", d, "store", "backup", b]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("refusing to overwrite"));
    let out = run(&["--data-dir", d, "store", "restore", b]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not a store").unwrap();
    let out = run(&["--data-dir", d, "store", "restore", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an edgebox store"), "{}", text(&out.stderr));
}

#[test]
fn a_foreign_file_or_a_newer_store_is_refused_with_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = data.join("edgebox.redb");
    std::fs::write(&store, "key = value\n").unwrap();
    let d = data.to_str().unwrap();
    let out = run(&["--data-dir", d, "up"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not an edgebox store"), "{err}");
    assert!(!err.contains("panicked"));
    assert_eq!(std::fs::read_to_string(&store).unwrap(), "key = value\n");

    std::fs::remove_file(&store).unwrap();
    {
        let db = redb::Database::create(&store).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(edgebox::core::store::META_SCHEMA).unwrap().insert("edgebox", 99).unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&store).unwrap();
    let out = run(&["--data-dir", d, "up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("newer edgebox"), "{}", text(&out.stderr));
    assert!(before == std::fs::read(&store).unwrap(), "the newer store was modified");
    let db = redb::ReadOnlyDatabase::open(&store).unwrap();
    let _ = db.begin_read().unwrap();
}
