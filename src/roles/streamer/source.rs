//! A replication session with the source: connect, check that the server
//! writes full row images, position the dump (GTID state or file/offset),
//! and hand out decoded events with the binlog coordinates they came from.
//! A session that hears nothing for three heartbeat periods is dead.

use std::time::Duration;

use anyhow::{Context, bail};

use super::binlog::event::{Checksum, Event, EventBody, FormatDescription, HEADER_LEN, MAX_EVENT};
use super::config::{SourceConfig, Start};
use super::gtid::MysqlGtidSet;
use super::mysql::{Conn, Target};
use super::position::Position;
use crate::core::tls::ClientTls;

/// A refusal the operator must fix on the source (not retried quickly).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceMisconfigured(pub String);

/// One decoded event and where it sits in the source's binlog.
#[derive(Debug)]
pub struct Located {
    pub event: Event,
    pub file: String,
    /// Offset of the event's first byte (0 for artificial events).
    pub pos: u64,
    pub bytes: usize,
}

pub struct Session {
    conn: Conn,
    fde: FormatDescription,
    file: String,
    heartbeat: Duration,
    pub mariadb: bool,
    pub server_id: u32,
}

pub fn target(cfg: &SourceConfig) -> anyhow::Result<Target> {
    let password = std::fs::read_to_string(&cfg.password_file)
        .with_context(|| format!("streamer.source.password_file {}", cfg.password_file.display()))?;
    let tls = match &cfg.tls {
        Some(t) => Some(ClientTls::load(t, &cfg.host, "streamer.source.tls")?),
        None => None,
    };
    Ok(Target {
        host: cfg.host.clone(),
        port: cfg.port,
        user: cfg.user.clone(),
        password: password.trim_end_matches(['\n', '\r']).to_owned(),
        tls,
    })
}

impl Session {
    /// Connects, checks the source's settings and starts the dump at `from`
    /// (or at `start` when there is no saved position).
    /// With `follow` false the server ends the stream at the end of its
    /// binlog (`streamer dump`).
    pub async fn open(
        cfg: &SourceConfig,
        t: &Target,
        from: Option<&Position>,
        follow: bool,
    ) -> anyhow::Result<(Session, Position)> {
        let mut conn = Conn::connect(t).await?;
        let vars = conn
            .query("SELECT @@binlog_format AS f, @@binlog_row_image AS i, @@binlog_checksum AS c, @@server_id AS s, @@log_bin AS l")
            .await?;
        let (format, image) = (vars.first("f").unwrap_or(""), vars.first("i").unwrap_or(""));
        if vars.first("l") != Some("1") {
            return Err(SourceMisconfigured(format!("{}:{} has no binary log (log_bin is off)", t.host, t.port)).into());
        }
        if !format.eq_ignore_ascii_case("ROW") || !image.eq_ignore_ascii_case("FULL") {
            return Err(SourceMisconfigured(format!(
                "{}:{} has binlog_format={format} and binlog_row_image={image}; the streamer needs ROW and FULL \
                 (other images leave columns out of the change events and would corrupt downstream data): \
                 SET GLOBAL binlog_format=ROW, binlog_row_image=FULL",
                t.host, t.port
            ))
            .into());
        }
        let checksum = match vars.first("c").unwrap_or("NONE") {
            c if c.eq_ignore_ascii_case("CRC32") => Checksum::Crc32,
            _ => Checksum::None,
        };
        let server_id = vars.first("s").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mariadb = conn.server_version.contains("MariaDB");
        let heartbeat = Duration::from_secs(cfg.heartbeat_s);
        conn.query(&format!(
            "SET @master_binlog_checksum = '{}'",
            if checksum == Checksum::Crc32 { "CRC32" } else { "NONE" }
        ))
        .await?;
        conn.query(&format!("SET @master_heartbeat_period = {}", heartbeat.as_nanos())).await?;
        let start = match from {
            Some(p) => p.clone(),
            None => resolve(&mut conn, &Start::parse(&cfg.start).map_err(SourceMisconfigured)?, mariadb).await?,
        };
        conn.register_replica(cfg.server_id).await?;
        match (&start.gtid, mariadb) {
            (Some(g), true) => {
                conn.query("SET @mariadb_slave_capability = 4").await?;
                conn.query(&format!("SET @slave_connect_state = '{}'", sql_quote(g))).await?;
                conn.query("SET @slave_gtid_strict_mode = 0").await?;
                conn.query("SET @slave_gtid_ignore_duplicates = 0").await?;
                conn.dump(cfg.server_id, "", 4, !follow).await?;
            }
            (Some(g), false) => {
                let set = MysqlGtidSet::parse(g).map_err(SourceMisconfigured)?;
                conn.dump_gtid(cfg.server_id, &set.encode(), !follow).await?;
            }
            (None, m) => {
                if m {
                    conn.query("SET @mariadb_slave_capability = 4").await?;
                }
                let pos = u32::try_from(start.pos)
                    .map_err(|_| SourceMisconfigured(format!("position {} past 4 GiB", start.pos)))?;
                conn.dump(cfg.server_id, &start.file, pos, !follow).await?;
            }
        }
        let file = start.file.clone();
        Ok((Session { conn, fde: FormatDescription::assumed(checksum), file, heartbeat, mariadb, server_id }, start))
    }

    /// The next event, `None` where the server ended the stream; an error
    /// when it fails or falls silent for three heartbeat periods.
    pub async fn next(&mut self) -> anyhow::Result<Option<Located>> {
        let silent = self.heartbeat * 3;
        let raw = match tokio::time::timeout(silent, self.conn.next_event()).await {
            Err(_) => bail!("the source sent nothing (not even a heartbeat) for {silent:?}"),
            Ok(r) => match r? {
                Some(raw) => raw,
                None => return Ok(None),
            },
        };
        if raw.len() < HEADER_LEN || raw.len() > MAX_EVENT {
            bail!("an event of {} bytes", raw.len());
        }
        let event =
            Event::decode(&raw, &self.fde).with_context(|| format!("decoding the event after {}", self.file))?;
        let pos = match event.header.log_pos {
            0 => 0,
            next => u64::from(next).saturating_sub(raw.len() as u64),
        };
        match &event.body {
            EventBody::FormatDescription(f) => self.fde = f.clone(),
            EventBody::Rotate { next_file, .. } => self.file = next_file.clone(),
            _ => {}
        }
        Ok(Some(Located { event, file: self.file.clone(), pos, bytes: raw.len() }))
    }
}

/// A configured start as a position.
async fn resolve(conn: &mut Conn, start: &Start, mariadb: bool) -> anyhow::Result<Position> {
    Ok(match start {
        Start::Snapshot => {
            return Err(SourceMisconfigured(
                "a snapshot is taken by `streamer serve` only; start from current or earliest".into(),
            )
            .into());
        }
        Start::Gtid(g) => Position { gtid: Some(g.clone()), ..Position::default() },
        Start::File(f, p) => Position { file: f.clone(), pos: *p, ..Position::default() },
        Start::Current => {
            let rs = conn.query("SHOW MASTER STATUS").await?;
            let file = rs
                .first("File")
                .ok_or_else(|| SourceMisconfigured("SHOW MASTER STATUS is empty: no binary log".into()))?;
            let pos = rs.first("Position").and_then(|p| p.parse().ok()).unwrap_or(4);
            let gtid = match mariadb {
                true => conn.query("SELECT @@gtid_binlog_pos AS g").await?.first("g").map(str::to_owned),
                false => rs.first("Executed_Gtid_Set").map(str::to_owned).filter(|g| !g.is_empty()),
            };
            Position { file: file.to_owned(), pos, gtid: gtid.filter(|g| !g.is_empty()), skip_rows: 0 }
        }
        Start::Earliest => {
            let rs = conn.query("SHOW BINARY LOGS").await?;
            let file = rs.rows.first().and_then(|r| r.first().cloned().flatten());
            let file = file.ok_or_else(|| SourceMisconfigured("SHOW BINARY LOGS is empty".into()))?;
            Position { file, pos: 4, gtid: None, skip_rows: 0 }
        }
    })
}

fn sql_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}
