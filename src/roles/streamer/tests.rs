//! Decoder tests against binlogs written by a real MariaDB 10.11
//! (tests/data/streamer/, made by tests/data/streamer/make.sh).

use std::collections::HashMap;

use serde_json::json;

use super::binlog::event::{EventBody, RowsKind};
use super::binlog::{TableMap, file, rows};

const EVERY_TYPE: &[u8] = include_bytes!("../../../tests/data/streamer/mariadb-10.11-every-type.binlog");

#[test]
fn a_real_mariadb_binlog_decodes_every_event_and_column_type() {
    let mut maps: HashMap<u64, TableMap> = HashMap::new();
    let mut changes = Vec::new();
    let mut gtids = Vec::new();
    let mut queries = Vec::new();
    for item in file::events(EVERY_TYPE).unwrap() {
        let (_, ev) = item.unwrap();
        match ev.body {
            EventBody::TableMap(m) => {
                maps.insert(m.table_id, m);
            }
            EventBody::Rows(r) => {
                let map = &maps[&r.table_id];
                for c in rows::decode(&r, map).unwrap() {
                    changes.push((map.table.clone(), r.kind, c));
                }
            }
            EventBody::MariadbGtid { gtid, .. } => gtids.push(gtid.to_string()),
            EventBody::Query { query, .. } => queries.push(query),
            _ => {}
        }
    }
    assert_eq!(gtids.first().map(String::as_str), Some("0-1-1"));
    assert_eq!(gtids.last().map(String::as_str), Some("0-1-11"));
    assert!(queries.iter().any(|q| q.starts_with("ALTER TABLE nopk")), "{queries:?}");
    let (table, kind, first) = &changes[0];
    assert_eq!((table.as_str(), *kind), ("every_type", RowsKind::Insert));
    let map = maps.values().find(|m| m.table == "every_type").unwrap();
    let row: serde_json::Map<String, serde_json::Value> = map
        .columns
        .iter()
        .zip(first.after.as_ref().unwrap())
        .map(|(c, v)| (c.name.clone().unwrap(), v.clone().unwrap()))
        .collect();
    let expected = json!({
        "id": 1, "ti": -128, "tiu": 255, "si": -32768, "siu": 65535, "mi": -8388608, "miu": 16777215,
        "bi": i64::MIN, "biu": u64::MAX, "fl": 1.5, "db": -2.25,
        "d1": "-12345678.91", "d2": "12345678901234567890.0123456789", "d3": "-99999",
        "dt": "2024-02-29", "dtm": "2024-02-29T13:14:15", "dtm6": "2024-02-29T13:14:15.123456",
        "tm": "-838:59:59", "tm3": "12:34:56.789", "yr": 2024,
        "c": "ab", "vc": "héllo wörld ✓", "vb": "AP8Q", "bn": "3q2+7w==",
        "tt": "tiny", "tx": "text", "mt": "medium", "lt": "long", "bl": "AQIDBAU=",
        "e": "green", "s": "a,c", "bt": 1, "bt12": 2730, "js": "{\"k\":[1,2.5,\"x\",null,true]}",
    });
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(row.get(k), Some(v), "column {k}");
    }
    // TIMESTAMPs are UTC; the server's zone is the test machine's (UTC here).
    assert!(row["ts"].as_str().unwrap().ends_with('Z'), "{}", row["ts"]);
    assert_eq!(row["ts6"].as_str().unwrap().len(), "2024-02-29T13:14:15.654321Z".len());
    assert!(row["g"]["wkb"].is_string() && row["g"]["srid"] == 0, "{}", row["g"]);
    // The UPDATE carries both images; the DELETE only the before image.
    let update = changes.iter().find(|(t, k, _)| t == "every_type" && *k == RowsKind::Update).unwrap();
    let vc = map.columns.iter().position(|c| c.name.as_deref() == Some("vc")).unwrap();
    assert_eq!(update.2.before.as_ref().unwrap()[vc], Some(json!("héllo wörld ✓")));
    assert_eq!(update.2.after.as_ref().unwrap()[vc], Some(json!("changed")));
    let delete = changes.iter().find(|(_, k, _)| *k == RowsKind::Delete).unwrap();
    assert!(delete.2.after.is_none() && delete.2.before.as_ref().unwrap()[0] == Some(json!(2)));
    // The primary key comes with the table map (binlog_row_metadata=FULL).
    assert_eq!(map.primary_key.as_deref(), Some(&[0][..]));
    // Rows after ALTER TABLE decode with the new column list.
    let last = &changes.last().unwrap().2;
    assert_eq!(last.after.as_ref().unwrap().len(), 3);
}

#[test]
fn a_rows_event_with_no_columns_present_is_refused_not_looped_over() {
    use super::binlog::event::RowsEvent;
    use super::binlog::table_map::Column;
    let map = TableMap {
        table_id: 1,
        schema: "s".into(),
        table: "t".into(),
        columns: vec![Column::default()],
        primary_key: None,
    };
    let ev = RowsEvent {
        kind: RowsKind::Insert,
        table_id: 1,
        flags: 0,
        column_count: 1,
        present: vec![0],
        present_after: None,
        rows: vec![0; 3],
        rows_offset: 40,
    };
    let err = rows::decode(&ev, &map).unwrap_err();
    assert!(err.what.contains("no columns present"), "{err}");
}

#[test]
fn every_truncation_and_every_flipped_byte_is_an_error_not_a_panic() {
    for cut in [5, 50, 120, 500, EVERY_TYPE.len() - 3] {
        let result: Result<Vec<_>, _> = file::events(&EVERY_TYPE[..cut]).unwrap().collect();
        assert!(result.is_err(), "truncated at {cut}");
    }
    // A flipped byte anywhere after the magic fails its event's CRC32.
    for at in (4..EVERY_TYPE.len()).step_by(97) {
        let mut bytes = EVERY_TYPE.to_vec();
        bytes[at] ^= 0x20;
        let result: Result<Vec<_>, _> = file::events(&bytes).unwrap().collect();
        let err = result.unwrap_err();
        assert!(err.what.contains("checksum mismatch") || err.what.contains("bytes"), "byte {at}: {err}");
    }
}

mod live {
    //! The client against a real MariaDB.

    use super::super::binlog::event::{Checksum, Event, EventBody, FormatDescription};
    use super::super::mysql::{Conn, Target};
    use super::super::peers::MariaDb;

    fn target(db: &MariaDb, password: &str) -> Target {
        Target { host: "127.0.0.1".into(), port: db.port, user: "cdc".into(), password: password.into(), tls: None }
    }

    #[tokio::test]
    async fn logs_in_queries_and_streams_the_binlog_of_a_real_mariadb() {
        let db = MariaDb::start("");
        let bad = Conn::connect(&target(&db, "wrong")).await.err().unwrap();
        assert!(format!("{bad:#}").contains("Access denied"), "{bad:#}");
        let mut c = Conn::connect(&target(&db, "cdc-secret")).await.unwrap();
        assert!(c.server_version.contains("MariaDB"), "{}", c.server_version);
        let rs = c.query("SELECT @@binlog_format AS f, @@binlog_row_image AS i, NULL AS n").await.unwrap();
        assert_eq!((rs.first("f"), rs.first("i"), rs.first("n")), (Some("ROW"), Some("FULL"), None));
        let err = c.query("SELECT * FROM no_such.table").await.unwrap_err();
        assert!(format!("{err:#}").contains("1146") || format!("{err:#}").contains("doesn't exist"), "{err:#}");
        db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO shop.t VALUES (1, 'one');");
        c.query("SET @master_binlog_checksum = 'CRC32'").await.unwrap();
        c.query("SET @mariadb_slave_capability = 4").await.unwrap();
        c.register_replica(4242).await.unwrap();
        c.dump(4242, "binlog.000001", 4, false).await.unwrap();
        let mut fde = FormatDescription::assumed(Checksum::Crc32);
        let (mut rows, mut gtids) = (0, 0);
        while rows < 1 {
            let raw = tokio::time::timeout(std::time::Duration::from_secs(10), c.next_event())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let ev = Event::decode(&raw, &fde).unwrap();
            match ev.body {
                EventBody::FormatDescription(f) => fde = f,
                EventBody::Rows(_) => rows += 1,
                EventBody::MariadbGtid { .. } => gtids += 1,
                _ => {}
            }
        }
        assert!(gtids >= 2, "GTID events arrive with mariadb_slave_capability=4");
    }
}

#[tokio::test]
async fn logs_in_over_tls_when_the_account_requires_it() {
    use super::mysql::{Conn, Target};
    use super::peers::MariaDb;
    use crate::core::tls::testpki::TestCa;
    use crate::core::tls::{ClientTls, ClientTlsConfig};
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "mysql");
    let leaf = ca.leaf(pki.path(), "server", &["localhost"]);
    let db = MariaDb::start(&format!(
        "ssl_ca={}\nssl_cert={}\nssl_key={}",
        ca.ca_file.display(),
        leaf.cert_file.display(),
        leaf.key_file.display()
    ));
    db.sql("ALTER USER 'cdc'@'%' REQUIRE SSL;");
    let target = |tls: Option<ClientTls>| Target {
        host: "127.0.0.1".into(),
        port: db.port,
        user: "cdc".into(),
        password: "cdc-secret".into(),
        tls,
    };
    let plain = Conn::connect(&target(None)).await.err().expect("REQUIRE SSL refuses plain TCP");
    assert!(format!("{plain:#}").contains("Access denied"), "{plain:#}");
    let cfg = ClientTlsConfig {
        ca_file: Some(ca.ca_file.clone()),
        server_name: Some("localhost".into()),
        ..ClientTlsConfig::default()
    };
    let tls = ClientTls::load(&cfg, "127.0.0.1", "streamer.source.tls").unwrap();
    let mut c = Conn::connect(&target(Some(tls))).await.unwrap();
    let rs = c.query("SHOW STATUS LIKE 'Ssl_version'").await.unwrap();
    assert!(rs.rows[0][1].as_deref().unwrap_or("").starts_with("TLS"), "{rs:?}");
    // A server certificate from another CA is refused at the handshake.
    let other = TestCa::new(pki.path(), "other");
    let wrong =
        ClientTls::load(&ClientTlsConfig { ca_file: Some(other.ca_file.clone()), ..cfg }, "localhost", "k").unwrap();
    let err = Conn::connect(&target(Some(wrong))).await.err().unwrap();
    assert!(format!("{err:#}").contains("TLS"), "{err:#}");
}

pub mod kafka {
    //! The whole pipeline: a real MariaDB, librdkafka's mock cluster, the
    //! store; records read back by partition assignment.

    use std::time::Duration;

    use rdkafka::Message;
    use rdkafka::mocking::MockCluster;
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    use super::super::config::{KafkaConfig, SourceConfig, StreamerConfig};
    use super::super::peers::{MariaDb, consumer, consumer_at};
    use super::super::position;
    use crate::core::store::{CORE_SCHEMA, Store, StoreOptions};

    pub fn config(db: &MariaDb, brokers: String, start: &str) -> StreamerConfig {
        let pw = db.dir.path().join("cdc.password");
        std::fs::write(&pw, "cdc-secret\n").unwrap();
        StreamerConfig {
            source: Some(SourceConfig {
                host: "127.0.0.1".into(),
                port: db.port,
                user: "cdc".into(),
                password_file: pw,
                server_id: 4242,
                start: start.into(),
                heartbeat_s: 1,
                reconnect_max_s: 2,
                tls: None,
            }),
            kafka: KafkaConfig { brokers, linger_ms: 1, ..KafkaConfig::default() },
            checkpoint_interval_ms: 50,
            ..StreamerConfig::default()
        }
    }

    /// Every record of `topic` (all partitions, from the start) as
    /// (partition, key, value), until `want` arrived or `within` passed.
    pub fn read(
        brokers: &str,
        topic: &str,
        partitions: i32,
        want: usize,
        within: Duration,
    ) -> Vec<(i32, Option<Value>, Value)> {
        let consumer = consumer(brokers, topic, partitions).unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + within;
        while out.len() < want && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let key = m.key().map(|k| serde_json::from_slice(k).unwrap());
                let value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                out.push((m.partition(), key, value));
            }
        }
        out
    }

    /// Every record of `topic` so far, read at `isolation` (a Kafka
    /// isolation.level), until nothing came for `idle`.
    pub fn read_all(
        brokers: &str,
        topic: &str,
        partitions: i32,
        idle: Duration,
        isolation: &str,
    ) -> Vec<(Option<Value>, Value)> {
        let consumer = consumer_at(brokers, topic, partitions, isolation).unwrap();
        let (mut out, mut last) = (Vec::new(), std::time::Instant::now());
        while last.elapsed() < idle {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let key = m.key().map(|k| serde_json::from_slice(k).unwrap());
                out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
                last = std::time::Instant::now();
            }
        }
        out
    }

    /// The server's GTID state.
    pub fn gtid(db: &MariaDb) -> String {
        db.sql("SELECT @@gtid_binlog_pos").trim().to_owned()
    }

    /// Waits until the saved position's GTID state is `want`.
    pub async fn saved_gtid(store: &Store, want: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let pos = position::load(store).await.unwrap();
            if pos.as_ref().and_then(|p| p.gtid.as_deref()) == Some(want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "checkpoint {pos:?}, waiting for {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the saved position has reached the server's last GTID.
    pub async fn caught_up(db: &MariaDb, store: &Store) {
        saved_gtid(store, &gtid(db)).await;
    }

    /// One pipeline run in the background, and the token that stops it.
    pub fn spawn(
        cfg: &StreamerConfig,
        store: &Store,
    ) -> (tokio::task::JoinHandle<anyhow::Result<()>>, CancellationToken) {
        let (cfg, store, stop) = (cfg.clone(), store.clone(), CancellationToken::new());
        let token = stop.clone();
        let run = tokio::spawn(async move {
            let src = cfg.source.clone().expect("a source");
            super::super::pipeline::run(&cfg, &src, &store, &stop, &Default::default()).await
        });
        (run, token)
    }

    pub fn store(dir: &std::path::Path) -> Store {
        Store::open(&dir.join("s.redb"), &[CORE_SCHEMA], &StoreOptions::default()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_changes_reach_kafka_in_order_and_a_restart_resumes_without_duplicates() {
        let db = MariaDb::start("");
        db.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, status VARCHAR(20), total DECIMAL(8,2));");
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("edgebox.shop.orders", 3, 1).unwrap();
        mock.create_topic("edgebox.schema-changes", 1, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let cfg = config(&db, brokers.clone(), "earliest");
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (run, stop) = spawn(&cfg, &store);
        db.sql("INSERT INTO shop.orders VALUES (1, 'new', 10.50), (2, 'new', 20.00);");
        db.sql("UPDATE shop.orders SET status = 'paid' WHERE id = 1;");
        db.sql("DELETE FROM shop.orders WHERE id = 2;");
        let got = tokio::task::spawn_blocking({
            let b = brokers.clone();
            move || read(&b, "edgebox.shop.orders", 3, 4, Duration::from_secs(20))
        })
        .await
        .unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        // Per key, in order: id 1 created then updated; id 2 created then deleted.
        let for_key = |id: i64| -> Vec<String> {
            got.iter()
                .filter(|(_, k, _)| k.as_ref().unwrap()["id"] == id)
                .map(|(_, _, v)| v["op"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(for_key(1), ["c", "u"]);
        assert_eq!(for_key(2), ["c", "d"]);
        let update = got.iter().find(|(_, _, v)| v["op"] == "u").unwrap();
        assert_eq!(update.2["before"]["status"], "new");
        assert_eq!(update.2["after"]["status"], "paid");
        assert_eq!(update.2["after"]["total"], "10.50");
        assert_eq!(update.2["source"]["table"], "orders");
        assert!(update.2["source"]["gtid"].as_str().unwrap().starts_with("0-1-"));
        let ddl = tokio::task::spawn_blocking(move || {
            read(&brokers, "edgebox.schema-changes", 1, 2, Duration::from_secs(20))
        })
        .await
        .unwrap();
        assert!(
            ddl.iter().any(|(_, _, v)| v["ddl"].as_str().unwrap().starts_with("CREATE TABLE shop.orders")),
            "{ddl:?}"
        );
        // The checkpoint reaches the last commit.
        let want_gtid = db.sql("SELECT @@gtid_binlog_pos").trim().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pos = position::load(&store).await.unwrap();
            if pos.as_ref().and_then(|p| p.gtid.clone()) == Some(want_gtid.clone()) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "checkpoint {pos:?}, server at {want_gtid}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        run.await.unwrap().unwrap();
        // A second run resumes after the checkpoint: one new change, no repeats.
        db.sql("INSERT INTO shop.orders VALUES (3, 'new', 5.00);");
        let (run, stop) = spawn(&cfg, &store);
        let b = mock.bootstrap_servers();
        let all = tokio::task::spawn_blocking(move || read(&b, "edgebox.shop.orders", 3, 5, Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(all.len(), 5, "the new change after the restart: {all:?}");
        assert_eq!(all.iter().filter(|(_, k, _)| k.as_ref().unwrap()["id"] == 3).count(), 1);
        // Nothing repeated: no sixth record turns up.
        let b = mock.bootstrap_servers();
        let again = tokio::task::spawn_blocking(move || read(&b, "edgebox.shop.orders", 3, 6, Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(again.len(), 5, "{again:?}");
        stop.cancel();
        run.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_outage_holds_changes_back_and_oversized_or_keyless_rows_are_handled() {
        let db = MariaDb::start("");
        db.sql("CREATE DATABASE shop; CREATE TABLE shop.notes (id INT PRIMARY KEY, body LONGTEXT); CREATE TABLE shop.log (line TEXT);");
        let mock = MockCluster::new(1).unwrap();
        for t in ["edgebox.shop.notes", "edgebox.shop.log", "edgebox.errors"] {
            mock.create_topic(t, 2, 1).unwrap();
        }
        let brokers = mock.bootstrap_servers();
        let mut cfg = config(&db, brokers.clone(), "current");
        cfg.format = super::super::config::Format::Maxwell;
        cfg.kafka.max_message_bytes = 4096;
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (run, stop) = spawn(&cfg, &store);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The broker goes away; changes made meanwhile wait, nothing is lost.
        mock.broker_down(1).unwrap();
        db.sql("INSERT INTO shop.notes VALUES (1, 'small'); INSERT INTO shop.notes VALUES (2, REPEAT('x', 10000));");
        db.sql("INSERT INTO shop.log VALUES ('first'), ('second'); INSERT INTO shop.log VALUES ('third');");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!run.is_finished(), "the stream waits for the broker rather than failing");
        mock.broker_up(1).unwrap();
        let b = brokers.clone();
        let notes = tokio::task::spawn_blocking(move || read(&b, "edgebox.shop.notes", 2, 1, Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].2["type"], "insert");
        assert_eq!(notes[0].2["data"]["body"], "small");
        assert_eq!(notes[0].2["commit"], true);
        // The 10 kB row goes to the error topic, naming table, key and position.
        let b = brokers.clone();
        let errors = tokio::task::spawn_blocking(move || read(&b, "edgebox.errors", 2, 1, Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(errors[0].2["table"], "notes");
        assert_eq!(errors[0].2["key"], json!({"id": 2}));
        assert!(errors[0].2["bytes"].as_u64().unwrap() > 10_000);
        // A table without a primary key: null keys, all on partition 0, in order.
        let b = brokers.clone();
        let log = tokio::task::spawn_blocking(move || read(&b, "edgebox.shop.log", 2, 3, Duration::from_secs(30)))
            .await
            .unwrap();
        let lines: Vec<_> =
            log.iter().map(|(p, k, v)| (*p, k.is_none(), v["data"]["line"].as_str().unwrap().to_owned())).collect();
        assert_eq!(lines, [(0, true, "first".into()), (0, true, "second".into()), (0, true, "third".into())]);
        stop.cancel();
        run.await.unwrap().unwrap();
    }
}

#[test]
fn mysql8_v2_rows_gtid_sets_binary_json_and_compressed_transactions_decode() {
    use super::fixture;
    let bin = fixture::mysql8_binlog();
    let mut maps: HashMap<u64, TableMap> = HashMap::new();
    let (mut rows_seen, mut gtids, mut prev) = (Vec::new(), Vec::new(), None);
    let mut visit = |body: EventBody, maps: &mut HashMap<u64, TableMap>| match body {
        EventBody::TableMap(m) => {
            maps.insert(m.table_id, m);
        }
        EventBody::Rows(r) => {
            assert_eq!(r.kind, RowsKind::Insert);
            rows_seen.extend(rows::decode(&r, &maps[&r.table_id]).unwrap());
        }
        EventBody::MysqlGtid { sid, gno } => gtids.push(format!("{sid}:{gno}")),
        EventBody::PreviousGtids { set } => prev = Some(set.to_string()),
        _ => {}
    };
    for item in file::events(&bin).unwrap() {
        let (_, ev) = item.unwrap();
        match ev.body {
            EventBody::TransactionPayload { events } => events.into_iter().for_each(|e| visit(e.body, &mut maps)),
            other => visit(other, &mut maps),
        }
    }
    assert_eq!(prev.as_deref(), Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1"));
    assert_eq!(gtids, ["3e11fa47-71ca-11e1-9e33-c80aa9429562:2", "3e11fa47-71ca-11e1-9e33-c80aa9429562:3"]);
    assert_eq!(rows_seen.len(), 2, "one plain, one from the compressed payload");
    let first = rows_seen[0].after.as_ref().unwrap();
    assert_eq!(first[0], Some(json!(u64::MAX)), "BIGINT UNSIGNED from the signedness metadata");
    assert_eq!(first[1], Some(json!("{\"a\":[1,\"xy\",true]}")));
    assert_eq!(first[2], Some(json!("42.99")));
    assert_eq!(first[3], Some(json!("2024-02-29T13:14:15.250")));
    let second = rows_seen[1].after.as_ref().unwrap();
    assert_eq!((second[0].clone(), second[1].clone()), (Some(json!(5)), Some(json!("null"))));
}
