//! The initial snapshot and the schema history against a real MariaDB and
//! librdkafka's mock cluster: a snapshot taken while the table changes,
//! then the stream, reproduce it exactly; snapshot and binlog give a row
//! the same representation; rows decode with the right names across ALTER
//! TABLE and a restart when the server logs minimal metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};

use tokio_util::sync::CancellationToken;

use super::config::StreamerConfig;
use super::peers::MariaDb;
use super::position::{self, SchemaUpdate};
use super::publish::Publisher;
use super::snapshot::{self, Consistency, Progress, Sink};
use super::tests::kafka::{caught_up, config, read_all, spawn, store};
use crate::core::store::Store;

async fn read_all_async(brokers: &str, topic: &str, partitions: i32) -> Vec<(Option<Value>, Value)> {
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_all(&b, &t, partitions, Duration::from_secs(2), "read_committed"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_while_the_table_changes_then_the_stream_reproduce_it_exactly() {
    snapshot_then_stream(None).await;
}

/// MySQL's way (a brief global read lock), run against MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_a_global_read_lock_is_as_exact() {
    snapshot_then_stream(Some(Consistency::GlobalReadLock)).await;
}

/// The snapshot as the pipeline takes it (`None`), or with `consistency`
/// forced, then streaming from its position.
async fn snapshot_then_stream(consistency: Option<Consistency>) {
    let db = MariaDb::start("");
    db.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(20)); \
         CREATE TABLE shop.other (id INT PRIMARY KEY); INSERT INTO shop.other VALUES (1); \
         SET SESSION max_recursive_iterations = 100000; \
         INSERT INTO shop.items WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20000) \
         SELECT n, 0, 'start' FROM s;",
    );
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("edgebox.shop.items", 3, 1).unwrap();
    mock.create_topic("edgebox.schema-changes", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut cfg = config(&db, brokers.clone(), "snapshot");
    cfg.include = vec!["shop.items".into()];
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // Changes race the snapshot: updates, inserts and deletes all through it.
    let writer = std::thread::scope(|s| {
        let w = s.spawn(|| {
            for i in 0..150 {
                let id = 1 + (i * 7919) % 20000;
                db.sql(&format!(
                    "UPDATE shop.items SET v = v + 1, note = 'u{i}' WHERE id = {id}; \
                     INSERT INTO shop.items VALUES ({}, 0, 'new'); DELETE FROM shop.items WHERE id = {};",
                    20001 + i,
                    1 + (i * 104_729) % 20000
                ));
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        if let Some(c) = consistency {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(forced_snapshot(&cfg, &store, c));
            });
        }
        let (run, stop) = spawn(&cfg, &store);
        w.join().unwrap();
        (run, stop)
    });
    let (run, stop) = writer;
    caught_up(&db, &store).await;
    let records = read_all_async(&brokers, "edgebox.shop.items", 3).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    // Replay per key, in partition order (which is per-key order): a row is
    // read once, and every change's before image is the state so far.
    let mut by_key: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for (k, v) in &records {
        by_key.entry(k.as_ref().unwrap()["id"].as_i64().unwrap()).or_default().push(v);
    }
    let mut state: BTreeMap<i64, Value> = BTreeMap::new();
    let (mut reads, mut last) = (0, 0);
    for (id, events) in &by_key {
        let mut cur: Option<Value> = None;
        for e in events {
            match e["op"].as_str().unwrap() {
                "r" | "c" => {
                    assert!(cur.is_none(), "id {id}: {} of a row already there: {events:?}", e["op"]);
                    if e["op"] == "r" {
                        reads += 1;
                        last += usize::from(e["source"]["snapshot"] == "last");
                    }
                    cur = Some(e["after"].clone());
                }
                "u" => {
                    assert_eq!(
                        cur.as_ref(),
                        Some(&e["before"]),
                        "id {id}: an update not following the state: {events:?}"
                    );
                    cur = Some(e["after"].clone());
                }
                "d" => {
                    assert_eq!(cur.as_ref(), Some(&e["before"]), "id {id}: {events:?}");
                    cur = None;
                }
                op => panic!("op {op}"),
            }
        }
        if let Some(c) = cur {
            state.insert(*id, c);
        }
    }
    let table: BTreeMap<i64, Value> = db
        .sql("SELECT id, v, note FROM shop.items")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let id = f[0].parse().unwrap();
            (id, json!({"id": id, "v": f[1].parse::<i64>().unwrap(), "note": f[2]}))
        })
        .collect();
    assert_eq!(state.len(), table.len());
    assert!(state == table, "the topic's replay differs from the table");
    assert!(reads >= 19_000, "{reads} snapshot reads");
    assert_eq!(last, 1, "one record marks the snapshot's end");
    // Only the included table was copied.
    assert!(records.iter().all(|(_, v)| v["source"]["table"] == "items"));
}

/// What the pipeline does on a fresh start, with the consistency forced.
async fn forced_snapshot(cfg: &StreamerConfig, store: &Store, consistency: Consistency) {
    let src = cfg.source.clone().unwrap();
    let target = super::source::target(&src).unwrap();
    let mut publisher = Publisher::new(&cfg.kafka, None).await.unwrap();
    let (mut acks, progress, shutdown) = (Vec::new(), Progress::default(), CancellationToken::new());
    let sink = Sink { cfg, publisher: &mut publisher, acks: &mut acks, progress: &progress, shutdown: &shutdown };
    let snap = snapshot::run(&target, Some(consistency), sink).await.unwrap();
    position::save(store, &snap.position, None, SchemaUpdate::Replace(snap.history)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_and_binlog_changes_represent_a_row_alike() {
    let db = MariaDb::start("");
    let script = std::fs::read_to_string("tests/data/streamer/every-type.sql").unwrap();
    // The table and its first row (the script's first three statements).
    let setup: Vec<&str> = script.split(";\n").take(4).collect();
    let insert = setup[3].trim();
    assert!(insert.starts_with("INSERT INTO every_type VALUES"), "{insert}");
    db.sql(&format!("{};", setup.join(";\n")));
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("edgebox.shop.every_type", 1, 1).unwrap();
    mock.create_topic("edgebox.schema-changes", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let cfg = config(&db, brokers.clone(), "snapshot");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (run, stop) = spawn(&cfg, &store);
    caught_up(&db, &store).await;
    db.sql(&format!("USE shop; {insert};"));
    caught_up(&db, &store).await;
    let records = read_all_async(&brokers, "edgebox.shop.every_type", 1).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let ops: Vec<_> = records.iter().map(|(_, v)| v["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "c"]);
    let (mut read, mut change) = (records[0].1["after"].clone(), records[1].1["after"].clone());
    assert_eq!((read["id"].take(), change["id"].take()), (json!(1), json!(2)));
    for (k, v) in read.as_object().unwrap() {
        assert_eq!(Some(v), change.get(k), "column {k}: snapshot {v}, binlog {}", change[k]);
    }
    assert_eq!(read.as_object().unwrap().len(), change.as_object().unwrap().len());
    // MariaDB's fixed-byte types in their text forms, both ways.
    assert_eq!((&read["u"], &read["ip"]), (&json!("123e4567-e89b-12d3-a456-426614174000"), &json!("2001:db8::1")));
    assert_eq!(read["bn"], "3q2+7w==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_keep_their_names_across_alter_table_and_a_restart_with_minimal_metadata() {
    let db = MariaDb::start("binlog_row_metadata=MINIMAL");
    db.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT UNSIGNED PRIMARY KEY, a INT, e ENUM('x','y')); \
         INSERT INTO shop.t VALUES (4000000000, -1, 'y');",
    );
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("edgebox.shop.t", 2, 1).unwrap();
    mock.create_topic("edgebox.schema-changes", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let cfg = config(&db, brokers.clone(), "current");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (run, stop) = spawn(&cfg, &store);
    caught_up(&db, &store).await;
    // The table predates the stream: its schema comes from SHOW CREATE TABLE.
    db.sql("UPDATE shop.t SET a = 1 WHERE id = 4000000000;");
    db.sql("ALTER TABLE shop.t ADD COLUMN b VARCHAR(10) AFTER id; INSERT INTO shop.t VALUES (2, 'bee', 3, 'x');");
    caught_up(&db, &store).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    // While stopped: more DDL, read from the binlog on the restart, on top
    // of the history the first run saved.
    db.sql("ALTER TABLE shop.t DROP COLUMN a, RENAME COLUMN b TO bee; INSERT INTO shop.t VALUES (3, 'b3', 'y');");
    let (run, stop) = spawn(&cfg, &store);
    caught_up(&db, &store).await;
    let records = read_all_async(&brokers, "edgebox.shop.t", 2).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let mut rows: Vec<(Value, Value)> = records.into_iter().map(|(k, v)| (k.unwrap(), v["after"].clone())).collect();
    rows.sort_by_key(|(k, _)| k["id"].as_u64());
    assert_eq!(
        rows,
        vec![
            (json!({"id": 2}), json!({"id": 2, "b": "bee", "a": 3, "e": "x"})),
            (json!({"id": 3}), json!({"id": 3, "bee": "b3", "e": "y"})),
            (json!({"id": 4_000_000_000u64}), json!({"id": 4_000_000_000u64, "a": 1, "e": "y"})),
        ]
    );
}
