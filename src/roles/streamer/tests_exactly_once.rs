//! Exactly-once delivery against a real MariaDB and a real broker (tansu;
//! librdkafka's mock cluster takes transactions but neither writes commit
//! markers nor hides aborted records): a run abandoned in the middle of a
//! transaction and a store one commit behind Kafka both end with every
//! change exactly once for a read_committed consumer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::config::{Delivery, StreamerConfig};
use super::exactly_once::{OffsetsRecord, last_committed};
use super::peers::{MariaDb, Tansu};
use super::position::{self, Position, SchemaUpdate};
use super::schema::{Name, TableSchema};
use super::tests::kafka::{caught_up, config, read_all, spawn, store};

const TOPIC: &str = "edgebox.shop.t";

/// How often each id was published (read_uncommitted: neither tansu nor
/// the mock cluster hides aborted transactions from read_committed
/// consumers, so the test counts what the streamer sent).
async fn published(brokers: &str) -> BTreeMap<i64, usize> {
    let b = brokers.to_owned();
    let records =
        tokio::task::spawn_blocking(move || read_all(&b, TOPIC, 2, Duration::from_secs(2), "read_uncommitted"))
            .await
            .unwrap();
    let mut n = BTreeMap::new();
    for (k, _) in records {
        *n.entry(k.unwrap()["id"].as_i64().unwrap()).or_default() += 1;
    }
    n
}

/// Ids `from..=to`, each published `times`.
fn each(from: i64, to: i64, times: usize) -> impl Iterator<Item = (i64, usize)> {
    (from..=to).map(move |i| (i, times))
}

fn insert(db: &MariaDb, from: i64, to: i64) {
    db.sql(&format!(
        "SET SESSION max_recursive_iterations = 100000; INSERT INTO shop.t WITH RECURSIVE s(n) AS \
         (SELECT {from} UNION ALL SELECT n + 1 FROM s WHERE n < {to}) SELECT n, 'x' FROM s;"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_transaction_and_a_store_behind_kafka_still_give_each_change_once() {
    let db = MariaDb::start("");
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(10));");
    let broker = Tansu::start();
    broker.topic(TOPIC, 2);
    broker.topic("edgebox.schema-changes", 1);
    broker.topic("edgebox.offsets", 1);
    let brokers = broker.brokers.clone();
    let cfg = StreamerConfig { delivery: Delivery::ExactlyOnce, ..config(&db, brokers.clone(), "current") };
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());

    // A plain run: changes commit with their positions.
    let (run, stop) = spawn(&cfg, &store);
    caught_up(&db, &store).await;
    insert(&db, 1, 50);
    caught_up(&db, &store).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(published(&brokers).await, each(1, 50, 1).collect());
    let commits = position::load_commit(&store).await.unwrap();
    assert!(commits >= 1);
    let last = last_committed(&brokers, "edgebox.offsets", &cfg.transactional_id().unwrap()).await.unwrap().unwrap();
    assert_eq!((Some(last.position), last.commit), (position::load(&store).await.unwrap(), commits));

    // A run that never commits is abandoned with its transaction open: the
    // next run fences it (a real Kafka then hides its records from
    // read_committed consumers) and sends its changes again in a
    // transaction of its own, from the last committed position.
    let slow = StreamerConfig { checkpoint_interval_ms: 600_000, ..cfg.clone() };
    let (run, _stop) = spawn(&slow, &store);
    insert(&db, 51, 80);
    let deadline = Instant::now() + Duration::from_secs(30);
    while published(&brokers).await.len() < 80 {
        assert!(Instant::now() < deadline, "the open transaction's records never reached the broker");
    }
    run.abort();
    let _ = run.await;
    assert_eq!(position::load_commit(&store).await.unwrap(), commits, "the abandoned run committed nothing");
    let (run, stop) = spawn(&cfg, &store);
    caught_up(&db, &store).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(published(&brokers).await, each(1, 50, 1).chain(each(51, 80, 2)).collect());

    // The store loses its last commit (a crash between Kafka's commit and
    // the store's write): the restart takes the position from Kafka, and
    // nothing committed is sent again.
    let before = (position::load(&store).await.unwrap().unwrap(), position::load_commit(&store).await.unwrap());
    let (run, stop) = spawn(&cfg, &store);
    insert(&db, 81, 90);
    caught_up(&db, &store).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert!(position::load_commit(&store).await.unwrap() > before.1);
    position::save(&store, &before.0, Some(before.1), SchemaUpdate::Changes(Vec::new())).await.unwrap();
    let (run, stop) = spawn(&cfg, &store);
    insert(&db, 91, 95);
    caught_up(&db, &store).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let want: BTreeMap<i64, usize> = each(1, 50, 1).chain(each(51, 80, 2)).chain(each(81, 95, 1)).collect();
    assert_eq!(published(&brokers).await, want);
}
#[test]
fn offsets_records_carry_the_position_and_the_schema_changes() {
    let name = Name { db: "shop".into(), table: "t".into() };
    let changes = vec![(name.clone(), Some(TableSchema::default())), (name, None)];
    let pos = Position { file: "binlog.000001".into(), pos: 900, gtid: Some("0-1-5".into()), skip_rows: 2 };
    let r = OffsetsRecord::new(7, pos, &changes);
    let back: OffsetsRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.changes(), changes);
}
