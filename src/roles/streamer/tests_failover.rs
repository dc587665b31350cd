//! Failover by GTID: the stream moves from a MariaDB primary to its replica
//! (log_slave_updates, so the replica's binlog carries the primary's
//! GTIDs) and resumes at the same transaction: nothing lost, nothing
//! repeated, and the promoted replica's own changes follow.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use super::peers::MariaDb;
use super::tests::kafka::{config, gtid, read, saved_gtid, spawn, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_fails_over_to_a_replica_by_gtid_without_loss_or_repeats() {
    let mut primary = MariaDb::start("log_slave_updates=ON");
    let replica = MariaDb::start("server_id=2\nlog_slave_updates=ON");
    // The replica takes the primary's changes from here on, with their GTIDs.
    replica.sql(&format!(
        "RESET MASTER; SET GLOBAL gtid_slave_pos = '{}'; \
         CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'cdc', \
         MASTER_PASSWORD = 'cdc-secret', MASTER_USE_GTID = slave_pos; START SLAVE;",
        gtid(&primary),
        primary.port
    ));
    primary.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, origin VARCHAR(10)); \
         SET SESSION max_recursive_iterations = 1000; \
         INSERT INTO shop.t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100) \
         SELECT n, 'primary' FROM s;",
    );
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("edgebox.shop.t", 3, 1).unwrap();
    mock.create_topic("edgebox.schema-changes", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (run, stop) = spawn(&config(&primary, brokers.clone(), "current"), &store);
    saved_gtid(&store, &gtid(&primary)).await;
    for i in 0..20 {
        primary.sql(&format!("INSERT INTO shop.t VALUES ({}, 'primary');", 101 + i));
    }
    saved_gtid(&store, &gtid(&primary)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    // Changes the stream has not seen reach the replica; then the primary dies.
    primary.sql("UPDATE shop.t SET origin = 'late' WHERE id <= 10; DELETE FROM shop.t WHERE id = 50;");
    let last = gtid(&primary);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gtid(&replica).contains(&last) {
        assert!(Instant::now() < deadline, "the replica stays at {}, primary at {last}", gtid(&replica));
        std::thread::sleep(Duration::from_millis(50));
    }
    primary.stop(true);
    replica.sql("STOP SLAVE; RESET SLAVE ALL; INSERT INTO shop.t VALUES (500, 'replica');");
    // The same store, now pointed at the promoted replica.
    let (run, stop) = spawn(&config(&replica, brokers.clone(), "current"), &store);
    saved_gtid(&store, &gtid(&replica)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let records = tokio::task::spawn_blocking(move || read(&brokers, "edgebox.shop.t", 3, 200, Duration::from_secs(5)))
        .await
        .unwrap();
    // Before the failover: the stream started after the 100 bulk rows, so
    // 20 inserts; after it: 10 updates, 1 delete, 1 insert by the replica.
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, v) in &records {
        *ops.entry(v["op"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(ops, BTreeMap::from([("c".into(), 21), ("u".into(), 10), ("d".into(), 1)]), "{records:?}");
    // source.server_id names the server that made the change.
    let by_origin = |origin: &str| -> Vec<(u64, String)> {
        records
            .iter()
            .map(|(_, _, v)| v)
            .filter(|v| v["after"]["origin"] == origin)
            .map(|v| (v["source"]["server_id"].as_u64().unwrap(), v["source"]["gtid"].as_str().unwrap().to_owned()))
            .collect()
    };
    let late = by_origin("late");
    assert!(late.len() == 10 && late.iter().all(|(s, g)| *s == 1 && g.starts_with("0-1-")), "{late:?}");
    let own = by_origin("replica");
    assert!(own.len() == 1 && own[0].0 == 2 && own[0].1.starts_with("0-2-"), "{own:?}");
}
