//! `[streamer]`: the source server the streamer replicates from, the Kafka
//! cluster it publishes to, which tables, and in which envelope.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::tls::ClientTlsConfig;

/// The documented default section, printed by `edgebox config default`.
pub const DEFAULT: &str = r#"[streamer]
# Tables to stream, as "database.table" patterns (* matches any run of
# characters, ? one); empty means every table.
include = []
# Tables left out even when include matches them.
exclude = []
# The envelope: "debezium" (before/after/source/op/ts_ms) or "maxwell".
format = "debezium"
# Topic per table: {prefix}, {db} and {table} are replaced.
topic = "{prefix}.{db}.{table}"
# What {prefix} stands for in the topic names.
topic_prefix = "edgebox"
# DDL statements (with the position they were applied at) go here.
schema_topic = "{prefix}.schema-changes"
# A change whose message exceeds kafka.max_message_bytes: "error-topic"
# (a record naming the table, key and position goes to error_topic, and
# streaming goes on) or "fail" (streaming stops until the limit is raised).
oversized = "error-topic"
# Where oversized changes are recorded.
error_topic = "{prefix}.errors"
# How often the acknowledged position is saved to the store (and, with
# exactly-once delivery, how often a Kafka transaction commits).
checkpoint_interval_ms = 200
# "at-least-once": a crash repeats the changes Kafka took after the last
# checkpoint. "exactly-once": changes go out in Kafka transactions, each
# committed with the position on offsets_topic, so consumers reading with
# isolation.level=read_committed see every change once (the broker must
# support transactions; the initial snapshot stays at-least-once).
delivery = "at-least-once"
# With exactly-once: where each transaction records its position (one
# partition; keyed by the producer's transactional.id).
offsets_topic = "{prefix}.offsets"
# The source: a MySQL 5.7/8.x or MariaDB 10.x server with binlog_format=ROW
# and binlog_row_image=FULL (checked at start). Without [streamer.source]
# the streamer is idle.
# [streamer.source]
# host = "127.0.0.1"
# port = 3306
# user = "cdc"
# The password, read from this file (trailing newline dropped).
# password_file = "/etc/edgebox/mysql-cdc.password"
# This replica's server_id: unique among the source's replicas.
# server_id = 4242
# Where to start when the store holds no position: "snapshot" (publish the
# selected tables' rows as of one binlog position, op "r", then stream from
# exactly there), "earliest" (the oldest binlog the server has), "current"
# (SHOW MASTER STATUS), "gtid:0-1-100" (MariaDB) or "gtid:<uuid>:1-100"
# (MySQL), or "file:binlog.000042:4".
# start = "current"
# The server's heartbeat while the binlog is idle; a silent connection is
# dropped and re-established after three periods.
# heartbeat_s = 5
# Reconnection backoff after the server goes away, doubling up to this.
# reconnect_max_s = 30
# TLS to the server (required for caching_sha2_password without RSA).
# [streamer.source.tls]
# ca_file = "/etc/edgebox/mysql-ca.pem"
# The Kafka cluster (plaintext; librdkafka is built without TLS).
[streamer.kafka]
# Bootstrap brokers, comma-separated.
brokers = "127.0.0.1:9092"
# The largest record sent (see oversized).
max_message_bytes = 1000000
# How long the producer waits to fill a batch.
linger_ms = 5
# Any librdkafka producer property; enable.idempotence and acks=all are
# always set, as the delivery guarantee rests on them.
# [streamer.kafka.properties]
# "compression.type" = "zstd"
"#;

/// The compliance section: the default (no source, idle).
pub const COMPLIANCE: &str = "[streamer]\n";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamerConfig {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub format: Format,
    pub topic: String,
    pub topic_prefix: String,
    pub schema_topic: String,
    pub oversized: Oversized,
    pub error_topic: String,
    pub checkpoint_interval_ms: u64,
    pub delivery: Delivery,
    pub offsets_topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
    pub kafka: KafkaConfig,
}

impl Default for StreamerConfig {
    fn default() -> Self {
        StreamerConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            format: Format::Debezium,
            topic: "{prefix}.{db}.{table}".into(),
            topic_prefix: "edgebox".into(),
            schema_topic: "{prefix}.schema-changes".into(),
            oversized: Oversized::ErrorTopic,
            error_topic: "{prefix}.errors".into(),
            checkpoint_interval_ms: 200,
            delivery: Delivery::AtLeastOnce,
            offsets_topic: "{prefix}.offsets".into(),
            source: None,
            kafka: KafkaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Debezium,
    Maxwell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Oversized {
    ErrorTopic,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    pub password_file: PathBuf,
    pub server_id: u32,
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: u64,
    #[serde(default = "default_reconnect")]
    pub reconnect_max_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsConfig>,
}

fn default_port() -> u16 {
    3306
}
fn default_start() -> String {
    "current".into()
}
fn default_heartbeat() -> u64 {
    5
}
fn default_reconnect() -> u64 {
    30
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub max_message_bytes: usize,
    pub linger_ms: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            max_message_bytes: 1_000_000,
            linger_ms: 5,
            properties: BTreeMap::new(),
        }
    }
}

/// Where streaming starts when the store has no position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Snapshot,
    Earliest,
    Current,
    Gtid(String),
    File(String, u64),
}

impl Start {
    pub fn parse(s: &str) -> Result<Start, String> {
        match s {
            "snapshot" => Ok(Start::Snapshot),
            "earliest" => Ok(Start::Earliest),
            "current" => Ok(Start::Current),
            _ => {
                if let Some(g) = s.strip_prefix("gtid:") {
                    let ok =
                        super::gtid::MariadbPosition::parse(g).is_ok() || super::gtid::MysqlGtidSet::parse(g).is_ok();
                    return if ok {
                        Ok(Start::Gtid(g.to_owned()))
                    } else {
                        Err(format!("{s:?} is not a GTID position"))
                    };
                }
                if let Some((file, pos)) = s.strip_prefix("file:").and_then(|f| f.rsplit_once(':')) {
                    let pos = pos.parse().map_err(|_| format!("{s:?}: position {pos:?} is not a number"))?;
                    if file.is_empty() || pos < 4 {
                        return Err(format!("{s:?}: a file name and a position of at least 4"));
                    }
                    return Ok(Start::File(file.to_owned(), pos));
                }
                Err(format!(
                    "start = {s:?}: expected snapshot, earliest, current, gtid:<position> or file:<name>:<pos>"
                ))
            }
        }
    }
}

impl StreamerConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (key, t) in [
            ("topic", &self.topic),
            ("schema_topic", &self.schema_topic),
            ("error_topic", &self.error_topic),
            ("offsets_topic", &self.offsets_topic),
        ] {
            if t.trim().is_empty() {
                return Err(format!("streamer.{key} is empty"));
            }
        }
        if self.checkpoint_interval_ms == 0 {
            return Err("streamer.checkpoint_interval_ms must be at least 1".into());
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err("streamer.kafka.brokers is empty".into());
        }
        if self.kafka.max_message_bytes < 1024 {
            return Err("streamer.kafka.max_message_bytes must be at least 1024".into());
        }
        for p in self.include.iter().chain(&self.exclude) {
            if !p.contains('.') {
                return Err(format!("streamer include/exclude pattern {p:?} is not \"database.table\""));
            }
        }
        if let Some(s) = &self.source {
            Start::parse(&s.start).map_err(|e| format!("streamer.source.{e}"))?;
            if s.server_id == 0 {
                return Err("streamer.source.server_id must not be 0 (the source refuses replicas with id 0)".into());
            }
            if s.heartbeat_s == 0 || s.reconnect_max_s == 0 {
                return Err("streamer.source.heartbeat_s and reconnect_max_s must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The producer's transactional.id with exactly-once delivery: the
    /// `transactional.id` property, else one per topic prefix and source
    /// server_id (stable across restarts, so a restart fences the last run).
    pub fn transactional_id(&self) -> Option<String> {
        if self.delivery != Delivery::ExactlyOnce {
            return None;
        }
        let id = self.source.as_ref().map_or(0, |s| s.server_id);
        Some(
            self.kafka
                .properties
                .get("transactional.id")
                .cloned()
                .unwrap_or_else(|| format!("edgebox-streamer-{}-{id}", self.topic_prefix)),
        )
    }

    /// Whether changes to `db`.`table` are streamed.
    pub fn wants(&self, db: &str, table: &str) -> bool {
        let name = format!("{db}.{table}");
        let hit = |pats: &[String]| pats.iter().any(|p| glob(p.as_bytes(), name.as_bytes()));
        (self.include.is_empty() || hit(&self.include)) && !hit(&self.exclude)
    }

    /// A topic template filled in.
    pub fn topic_for(&self, template: &str, db: &str, table: &str) -> String {
        template.replace("{prefix}", &self.topic_prefix).replace("{db}", db).replace("{table}", table)
    }
}

/// `*` and `?` wildcards, iteratively (no backtracking blow-up).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_section_parses_to_the_defaults() {
        crate::core::role::documented_default::<StreamerConfig>(DEFAULT, "streamer");
    }

    #[test]
    fn patterns_starts_and_bad_values() {
        let cfg =
            StreamerConfig { include: vec!["shop.*".into()], exclude: vec!["shop.tmp_*".into()], ..Default::default() };
        assert!(cfg.wants("shop", "orders") && !cfg.wants("shop", "tmp_x") && !cfg.wants("crm", "orders"));
        assert_eq!(cfg.topic_for(&cfg.topic, "shop", "orders"), "edgebox.shop.orders");
        assert_eq!(Start::parse("file:binlog.000042:4"), Ok(Start::File("binlog.000042".into(), 4)));
        assert_eq!(Start::parse("gtid:0-1-100"), Ok(Start::Gtid("0-1-100".into())));
        assert!(Start::parse("gtid:banana").is_err());
        assert!(Start::parse("file:x:2").is_err());
        let bad = StreamerConfig { include: vec!["orders".into()], ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("database.table"));
    }
}
