//! `edgebox streamer bench`: end-to-end latency and throughput of the
//! streamer against a local MariaDB and a local Kafka-protocol broker
//! (tansu), side by side in one run with python-mysql-replication feeding
//! confluent-kafka's producer (the common hand-rolled CDC pipeline).
//!
//! Latency: a load generator inserts rows at a fixed rate (one INSERT of
//! rate/100 rows every 10 ms), each row carrying the time its statement was
//! sent (µs); a consumer reads the topic and takes now − that time, so the
//! figure is the whole path: commit, binlog, decoder, Kafka acknowledgement
//! and the consumer's fetch. Throughput: a backlog of rows written while
//! nothing streams, then the time to publish all of it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::config::{KafkaConfig, SourceConfig, StreamerConfig};
use super::mysql::{Conn, Target};
use super::peers::{MariaDb, Tansu};
use crate::core::store::{CORE_SCHEMA, Store, StoreOptions};

/// The python-mysql-replication + confluent-kafka pipeline.
const PEER_SCRIPT: &str = r#"
import json, sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent
from confluent_kafka import Producer
port, log_file, log_pos, table, topic, brokers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
stream = BinLogStreamReader(
    connection_settings={"host": "127.0.0.1", "port": int(port), "user": "cdc", "passwd": "cdc-secret"},
    server_id=5151, blocking=True, resume_stream=True, log_file=log_file, log_pos=log_pos,
    only_events=[WriteRowsEvent], only_tables=[table], is_mariadb=True)
p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
print("ready", flush=True)
for ev in stream:
    for row in ev.rows:
        v = row["values"]
        value = json.dumps({"before": None, "after": v, "op": "c",
                            "source": {"db": ev.schema, "table": ev.table, "file": stream.log_file, "pos": stream.log_pos}},
                           default=str)
        while True:
            try:
                p.produce(topic, key=json.dumps({"id": v["id"]}), value=value)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
"#;

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub rows: u64,
    pub rows_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The Kafka-protocol broker both pipelines publish to.
enum Broker {
    Tansu(Tansu),
    /// librdkafka's mock cluster (in this process, on a real TCP port).
    Mock(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
}

impl Broker {
    fn start(kind: &str) -> anyhow::Result<Broker> {
        Ok(match kind {
            "tansu" => Broker::Tansu(Tansu::try_start()?),
            "mock" => Broker::Mock(rdkafka::mocking::MockCluster::new(1)?),
            other => bail!("--broker {other:?}: tansu or mock"),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Tansu(_) => "tansu 0.6",
            Broker::Mock(_) => "librdkafka's mock cluster",
        }
    }

    fn brokers(&self) -> String {
        match self {
            Broker::Tansu(t) => t.brokers.clone(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    fn topic(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Broker::Tansu(t) => t.try_topic(name, 1),
            Broker::Mock(m) => Ok(m.create_topic(name, 1, 1)?),
        }
    }

    fn consumer(&self, topic: &str) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
        super::peers::consumer(&self.brokers(), topic, 1)
    }
}

pub fn run(broker: &str, rates: &[u64], seconds: u64, backlog: u64) -> anyhow::Result<()> {
    let db = MariaDb::try_start("max_allowed_packet=64M")?;
    let broker = Broker::start(broker)?;
    let brokers = broker.brokers();
    let python = python()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let pw = db.dir.path().join("cdc.password");
    std::fs::write(&pw, "cdc-secret\n")?;
    let mut rows_out = Vec::new();
    for (i, &rate) in rates.iter().chain(std::iter::once(&0)).enumerate() {
        for peer in ["edgebox", "python"] {
            let table = format!("items_{i}_{peer}");
            let topic = format!("bench.{table}");
            db.exec(&format!("CREATE TABLE IF NOT EXISTS test.{table} (id BIGINT PRIMARY KEY, t BIGINT NOT NULL, v VARCHAR(32) NOT NULL)"))?;
            broker.topic(&topic)?;
            let (file, pos) = master_status(&db)?;
            let total = if rate == 0 { backlog } else { rate * seconds };
            // Throughput: the backlog is written before the pipeline starts.
            if rate == 0 {
                rt.block_on(load(&db, &table, backlog, None))?;
            }
            let mut python_child = None;
            let stop = CancellationToken::new();
            let task = match peer {
                "edgebox" => {
                    let cfg = streamer_config(&db, &pw, &brokers, &table, &file, pos);
                    let store = Store::open(
                        &db.dir.path().join(format!("{table}.redb")),
                        &[CORE_SCHEMA],
                        &StoreOptions::default(),
                    )?;
                    let stop = stop.clone();
                    Some(rt.spawn(async move {
                        let src = cfg.source.clone().expect("configured");
                        super::pipeline::run(&cfg, &src, &store, &stop, &Default::default()).await
                    }))
                }
                _ => {
                    python_child = Some(start_python(&python, &db, &file, pos, &table, &topic, &brokers)?);
                    None
                }
            };
            let mut started = Instant::now();
            let consumer = broker.consumer(&topic)?;
            let (warm_tx, warm_rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || collect(consumer, total, Duration::from_secs(120), warm_tx));
            if rate > 0 {
                // One row (id 0) through first, so connection set-up and
                // metadata fetches are not in the latency figures.
                db.exec(&format!("INSERT INTO test.{table} VALUES (0, 0, 'warm-up')"))?;
                warm_rx
                    .recv_timeout(Duration::from_secs(60))
                    .map_err(|_| anyhow::anyhow!("{peer}: the warm-up row never reached Kafka"))?;
                started = Instant::now();
                rt.block_on(load(&db, &table, total, Some(rate)))?;
            }
            let (latencies, last) = reader.join().map_err(|_| anyhow::anyhow!("the bench consumer panicked"))?;
            stop.cancel();
            if let Some(t) = task {
                rt.block_on(t)??;
            }
            if let Some(mut c) = python_child {
                let _ = c.kill();
                let _ = c.wait();
            }
            if (latencies.len() as u64) < total {
                bail!("{peer} at {rate} rows/s: {} of {total} rows reached Kafka within 120 s", latencies.len());
            }
            let f = figures(latencies, last.duration_since(started));
            rows_out.push((rate, peer, f));
        }
    }
    println!(
        "streamer bench: MariaDB {} → {}, {seconds} s per rate, backlog {backlog} rows; \
         python = python-mysql-replication + confluent-kafka",
        db.exec("SELECT VERSION()")?.trim(),
        broker.name()
    );
    println!("{:<22} {:<10} {:>10} {:>10} {:>10}", "load", "pipeline", "rows/s", "p50 ms", "p99 ms");
    for (rate, peer, f) in &rows_out {
        let load = if *rate == 0 { format!("backlog of {}", f.rows) } else { format!("{rate} rows/s") };
        let name = *peer;
        let (p50, p99) = if *rate == 0 {
            ("-".to_owned(), "-".to_owned())
        } else {
            (format!("{:.1}", f.p50_ms), format!("{:.1}", f.p99_ms))
        };
        println!("{load:<22} {name:<10} {:>10.0} {p50:>10} {p99:>10}", f.rows_per_s);
    }
    Ok(())
}

fn python() -> anyhow::Result<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/peers/venv/bin/python");
    let python = std::env::var("EDGEBOX_BENCH_PYTHON").unwrap_or_else(|_| venv.to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import pymysqlreplication, confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "{python} lacks the peer pipeline: pip install mysql-replication pymysql confluent-kafka (or set EDGEBOX_BENCH_PYTHON)"
        );
    }
    Ok(python)
}

fn master_status(db: &MariaDb) -> anyhow::Result<(String, u64)> {
    let out = db.exec("SHOW MASTER STATUS")?;
    let mut cols = out.split_whitespace();
    let file = cols.next().context("SHOW MASTER STATUS is empty")?.to_owned();
    let pos = cols.next().and_then(|p| p.parse().ok()).context("SHOW MASTER STATUS has no position")?;
    Ok((file, pos))
}

fn streamer_config(
    db: &MariaDb,
    pw: &std::path::Path,
    brokers: &str,
    table: &str,
    file: &str,
    pos: u64,
) -> StreamerConfig {
    StreamerConfig {
        include: vec![format!("test.{table}")],
        topic: format!("bench.{table}"),
        source: Some(SourceConfig {
            host: "127.0.0.1".into(),
            port: db.port,
            user: "cdc".into(),
            password_file: pw.to_path_buf(),
            server_id: 4242,
            start: format!("file:{file}:{pos}"),
            heartbeat_s: 1,
            reconnect_max_s: 2,
            tls: None,
        }),
        kafka: KafkaConfig { brokers: brokers.to_owned(), linger_ms: 1, ..KafkaConfig::default() },
        ..StreamerConfig::default()
    }
}

fn start_python(
    python: &str,
    db: &MariaDb,
    file: &str,
    pos: u64,
    table: &str,
    topic: &str,
    brokers: &str,
) -> anyhow::Result<Child> {
    let script = db.dir.path().join("peer.py");
    std::fs::write(&script, PEER_SCRIPT)?;
    let mut child = Command::new(python)
        .arg(&script)
        .args([&db.port.to_string(), file, &pos.to_string(), table, topic, brokers])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // Wait for "ready" so its start-up is not in the figures.
    let mut out = std::io::BufReader::new(child.stdout.take().context("python stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    if line.trim() != "ready" {
        bail!("the python peer did not start: {line:?}");
    }
    Ok(child)
}

/// Inserts `total` rows (ids from 1), `rate` rows/s in 10 ms steps, or as
/// fast as 1 000-row statements go when `rate` is None.
async fn load(db: &MariaDb, table: &str, total: u64, rate: Option<u64>) -> anyhow::Result<()> {
    let target =
        Target { host: "127.0.0.1".into(), port: db.port, user: "root".into(), password: String::new(), tls: None };
    let mut conn = Conn::connect(&target).await?;
    let per_step = rate.map_or(1000, |r| (r / 100).max(1));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 1u64;
    while next <= total {
        if rate.is_some() {
            tick.tick().await;
        }
        let n = per_step.min(total - next + 1);
        let t = now_us();
        let values: Vec<String> = (next..next + n).map(|id| format!("({id},{t},'row-{id}')")).collect();
        conn.query(&format!("INSERT INTO test.{table} VALUES {}", values.join(","))).await?;
        next += n;
    }
    Ok(())
}

/// Latency (µs) of each record as it arrives (the warm-up row, id 0, is
/// signalled on `warm` and not counted), and when the last came.
fn collect(
    consumer: rdkafka::consumer::BaseConsumer,
    total: u64,
    within: Duration,
    warm: std::sync::mpsc::Sender<()>,
) -> (Vec<u64>, Instant) {
    let (mut lat, deadline, mut last) = (Vec::with_capacity(total as usize), Instant::now() + within, Instant::now());
    while (lat.len() as u64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let now = now_us();
            let after = m
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .map(|v| v["after"].clone());
            let num = |v: &serde_json::Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            let (id, t) = after.map_or((None, None), |a| (num(&a["id"]), num(&a["t"])));
            if id == Some(0) {
                let _ = warm.send(());
                continue;
            }
            lat.push(now.saturating_sub(t.unwrap_or(now)));
            last = Instant::now();
        }
    }
    (lat, last)
}

fn figures(mut lat: Vec<u64>, elapsed: Duration) -> Figures {
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0) as f64
            / 1000.0
    };
    Figures {
        rows: lat.len() as u64,
        rows_per_s: lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}
