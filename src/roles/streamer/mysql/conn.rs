//! A MySQL/MariaDB client connection: the v10 handshake, TLS upgrade,
//! mysql_native_password and caching_sha2_password (fast path, full
//! authentication over TLS or with the server's RSA key), auth switches,
//! text-protocol queries, and the replication commands (COM_REGISTER_SLAVE,
//! COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use super::auth;
use super::packet::{Io, Packets};
use crate::core::tls::ClientTls;
use crate::roles::streamer::binlog::reader::Reader;

mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const LONG_FLAG: u32 = 4;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// TLS with this client config; `None`: plain TCP.
    pub tls: Option<ClientTls>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{} (tls: {})", self.user, self.host, self.port, self.tls.is_some())
    }
}

/// An error packet from the server.
#[derive(Debug, Clone, thiserror::Error)]
#[error("server error {code} ({state}): {message}")]
pub struct ServerError {
    pub code: u16,
    pub state: String,
    pub message: String,
}

pub struct Conn {
    p: Packets,
    pub server_version: String,
    pub connection_id: u32,
    /// Columns of the result being read, and whether rows remain.
    columns: usize,
    rows_left: bool,
}

/// A text-protocol result: column names and rows of optional strings.
#[derive(Debug, Default)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    /// The first row's value in `column`.
    pub fn first(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c.eq_ignore_ascii_case(column))?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

fn parse_err(payload: &[u8]) -> ServerError {
    let mut r = Reader::new(payload, 0);
    let _ = r.u8("");
    let code = r.u16("").unwrap_or(0);
    let rest = r.rest();
    let (state, msg) = match rest.first() {
        Some(b'#') if rest.len() >= 6 => (String::from_utf8_lossy(&rest[1..6]).into_owned(), &rest[6..]),
        _ => (String::from("HY000"), rest),
    };
    ServerError { code, state, message: String::from_utf8_lossy(msg).into_owned() }
}

fn lenenc_bytes<'a>(r: &mut Reader<'a>, what: &str) -> anyhow::Result<Option<&'a [u8]>> {
    if r.remaining() > 0 && r.clone().u8(what)? == 0xfb {
        r.u8(what)?;
        return Ok(None);
    }
    let n = r.lenenc_len(what)?;
    Ok(Some(r.take(n, what)?))
}

fn lenenc_str(r: &mut Reader<'_>, what: &str) -> anyhow::Result<Option<String>> {
    Ok(lenenc_bytes(r, what)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A result column as the text protocol describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// The collation id the value is sent in (63: binary).
    pub charset: u16,
    /// The column type code (as in the binlog's table maps).
    pub ty: u8,
    pub flags: u16,
    pub decimals: u8,
}

/// Column definition flags.
pub mod column_flag {
    pub const PRIMARY_KEY: u16 = 2;
    pub const UNSIGNED: u16 = 32;
    pub const BINARY: u16 = 128;
    pub const ENUM: u16 = 256;
    pub const SET: u16 = 2048;
}

impl ColumnInfo {
    fn read(def: &[u8]) -> anyhow::Result<ColumnInfo> {
        let mut r = Reader::new(def, 0);
        for what in ["catalog", "schema", "table", "original table"] {
            lenenc_str(&mut r, what)?;
        }
        let name = lenenc_str(&mut r, "column name")?.unwrap_or_default();
        lenenc_str(&mut r, "original column name")?;
        r.lenenc("fixed fields length")?;
        let charset = r.u16("character set")?;
        r.u32("column length")?;
        let ty = r.u8("column type")?;
        let flags = r.u16("column flags")?;
        let decimals = r.u8("decimals")?;
        Ok(ColumnInfo { name, charset, ty, flags, decimals })
    }
}

impl Conn {
    pub async fn connect(t: &Target) -> anyhow::Result<Conn> {
        let addr = format!("{}:{}", t.host, t.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: no answer within {CONNECT_TIMEOUT:?}"))?
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut p = Packets::new(Box::new(tcp));
        let hello = tokio::time::timeout(CONNECT_TIMEOUT, p.read())
            .await
            .map_err(|_| anyhow!("{addr}: no handshake within {CONNECT_TIMEOUT:?}"))??;
        if hello.first() == Some(&0xff) {
            bail!("{addr} refused the connection: {}", parse_err(&hello));
        }
        let mut r = Reader::new(&hello, 0);
        let proto = r.u8("protocol version")?;
        if proto != 10 {
            bail!("{addr}: handshake protocol {proto} (only 10 is spoken)");
        }
        let server_version = cstr(&mut r)?;
        let connection_id = r.u32("connection id")?;
        let mut scramble = r.take(8, "scramble")?.to_vec();
        r.u8("filler")?;
        let mut caps = u32::from(r.u16("capabilities")?);
        r.u8("charset")?;
        r.u16("status")?;
        caps |= u32::from(r.u16("capabilities")?) << 16;
        let scramble_len = usize::from(r.u8("scramble length")?);
        r.take(10, "reserved")?;
        if caps & cap::SECURE_CONNECTION != 0 {
            let n = scramble_len.saturating_sub(8).max(13);
            let part = r.take(n.min(r.remaining()), "scramble")?;
            scramble.extend(part.strip_suffix(&[0]).unwrap_or(part));
        }
        let plugin = if caps & cap::PLUGIN_AUTH != 0 { cstr(&mut r).unwrap_or_default() } else { String::new() };
        for need in [cap::PROTOCOL_41, cap::SECURE_CONNECTION] {
            if caps & need == 0 {
                bail!("{addr} ({server_version}) is too old: it lacks the 4.1 protocol");
            }
        }
        let mut ours = cap::LONG_PASSWORD
            | cap::LONG_FLAG
            | cap::PROTOCOL_41
            | cap::TRANSACTIONS
            | cap::SECURE_CONNECTION
            | cap::MULTI_RESULTS
            | cap::PLUGIN_AUTH;
        let mut tls_on = false;
        if let Some(tls) = &t.tls {
            if caps & cap::SSL == 0 {
                bail!("{addr} does not offer TLS, and the streamer is configured to require it");
            }
            ours |= cap::SSL;
            let mut req = Vec::with_capacity(32);
            req.extend(ours.to_le_bytes());
            req.extend((1u32 << 24).to_le_bytes());
            req.push(CHARSET);
            req.extend([0u8; 23]);
            p.write(&req).await?;
            let (io, seq) = p.into_inner();
            let connector = tokio_rustls::TlsConnector::from(tls.config());
            let stream = connector.connect(tls.server_name(), io).await.with_context(|| format!("TLS with {addr}"))?;
            p = Packets::with_seq(Box::new(stream) as Box<dyn Io>, seq);
            tls_on = true;
        }
        let plugin = if plugin.is_empty() { auth::NATIVE.to_owned() } else { plugin };
        let mut resp = Vec::with_capacity(128);
        resp.extend(ours.to_le_bytes());
        resp.extend((1u32 << 24).to_le_bytes());
        resp.push(CHARSET);
        resp.extend([0u8; 23]);
        resp.extend(t.user.as_bytes());
        resp.push(0);
        let token = scramble_for(&plugin, t.password.as_bytes(), &scramble)?;
        resp.push(token.len() as u8);
        resp.extend(&token);
        resp.extend(plugin.as_bytes());
        resp.push(0);
        p.write(&resp).await?;
        let mut conn = Conn { p, server_version, connection_id, columns: 0, rows_left: false };
        conn.finish_auth(t, plugin, scramble, tls_on)
            .await
            .with_context(|| format!("logging in to {addr} as {}", t.user))?;
        Ok(conn)
    }

    async fn finish_auth(
        &mut self,
        t: &Target,
        mut plugin: String,
        mut scramble: Vec<u8>,
        tls: bool,
    ) -> anyhow::Result<()> {
        loop {
            let pkt = self.p.read().await?;
            match pkt.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(parse_err(&pkt).into()),
                // Auth switch: a new plugin and scramble.
                Some(0xfe) => {
                    let mut r = Reader::new(&pkt[1..], 1);
                    plugin = cstr(&mut r)?;
                    let rest = r.rest();
                    scramble = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
                    let token = scramble_for(&plugin, t.password.as_bytes(), &scramble)?;
                    self.p.write(&token).await?;
                }
                // caching_sha2_password's extra round: 3 fast auth done, 4 full auth.
                Some(0x01) if plugin == auth::CACHING_SHA2 => match pkt.get(1) {
                    Some(3) => {}
                    Some(4) if tls => {
                        let mut pw = t.password.as_bytes().to_vec();
                        pw.push(0);
                        self.p.write(&pw).await?;
                    }
                    Some(4) => {
                        self.p.write(&[2]).await?;
                        let key = self.p.read().await?;
                        let pem = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
                        let enc = auth::rsa_encrypt(t.password.as_bytes(), &scramble, &pem)?;
                        self.p.write(&enc).await?;
                    }
                    other => bail!("unexpected caching_sha2_password state {other:?}"),
                },
                other => bail!("unexpected authentication packet starting {other:?}"),
            }
        }
    }

    /// Runs a statement; a result set's rows come back as text.
    /// Runs a statement and collects its result as text.
    pub async fn query(&mut self, sql: &str) -> anyhow::Result<ResultSet> {
        let columns = self.query_start(sql).await?;
        let mut rs = ResultSet { columns: columns.into_iter().map(|c| c.name).collect(), rows: Vec::new() };
        while let Some(row) = self.next_row().await.with_context(|| format!("running {sql:?}"))? {
            rs.rows.push(row.into_iter().map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned())).collect());
        }
        Ok(rs)
    }

    /// Sends a statement and reads its column definitions; the rows follow
    /// through [`Conn::next_row`] (one at a time, for tables of any size).
    /// A statement without a result set answers no columns and no rows.
    pub async fn query_start(&mut self, sql: &str) -> anyhow::Result<Vec<ColumnInfo>> {
        // A result left unread would be taken for this one's.
        while self.next_row().await?.is_some() {}
        self.p.reset();
        let mut cmd = Vec::with_capacity(sql.len() + 1);
        cmd.push(0x03);
        cmd.extend(sql.as_bytes());
        self.p.write(&cmd).await?;
        let first = self.p.read().await?;
        match first.first() {
            Some(0x00) => return Ok(Vec::new()),
            Some(0xff) => return Err(anyhow::Error::new(parse_err(&first)).context(format!("running {sql:?}"))),
            _ => {}
        }
        let n = Reader::new(&first, 0).lenenc("column count")? as usize;
        let mut columns = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let def = self.p.read().await?;
            columns.push(ColumnInfo::read(&def).with_context(|| format!("a column definition of {sql:?}"))?);
        }
        let eof = self.p.read().await?;
        if eof.first() != Some(&0xfe) {
            bail!("result of {sql:?}: expected EOF after column definitions");
        }
        self.columns = n;
        self.rows_left = true;
        Ok(columns)
    }

    /// The next row of the result [`Conn::query_start`] opened: each value
    /// as the text protocol sends it, `None` for NULL.
    pub async fn next_row(&mut self) -> anyhow::Result<Option<Vec<Option<Vec<u8>>>>> {
        if !self.rows_left {
            return Ok(None);
        }
        let row = self.p.read().await?;
        match row.first() {
            Some(0xfe) if row.len() < 9 => {
                self.rows_left = false;
                Ok(None)
            }
            Some(0xff) => {
                self.rows_left = false;
                Err(anyhow::Error::new(parse_err(&row)))
            }
            _ => {
                let mut r = Reader::new(&row, 0);
                let mut vals = Vec::with_capacity(self.columns);
                for _ in 0..self.columns {
                    vals.push(lenenc_bytes(&mut r, "row value")?.map(<[u8]>::to_vec));
                }
                Ok(Some(vals))
            }
        }
    }

    pub async fn register_replica(&mut self, server_id: u32) -> anyhow::Result<()> {
        self.p.reset();
        let mut cmd = vec![0x15];
        cmd.extend(server_id.to_le_bytes());
        let host = b"edgebox-streamer";
        cmd.push(host.len() as u8);
        cmd.extend(host);
        cmd.extend([0, 0]); // user, password
        cmd.extend(0u16.to_le_bytes()); // port
        cmd.extend(0u32.to_le_bytes()); // rank
        cmd.extend(0u32.to_le_bytes()); // source id
        self.p.write(&cmd).await?;
        self.expect_ok("COM_REGISTER_SLAVE").await
    }

    /// COM_BINLOG_DUMP from a file and position (MariaDB: with an empty
    /// file name the server starts from @slave_connect_state); with
    /// `non_block` the server ends the stream at the end of its binlog.
    pub async fn dump(&mut self, server_id: u32, file: &str, pos: u32, non_block: bool) -> anyhow::Result<()> {
        self.p.reset();
        let mut cmd = vec![0x12];
        cmd.extend(pos.to_le_bytes());
        cmd.extend(u16::from(non_block).to_le_bytes());
        cmd.extend(server_id.to_le_bytes());
        cmd.extend(file.as_bytes());
        self.p.write(&cmd).await?;
        Ok(())
    }

    /// COM_BINLOG_DUMP_GTID (MySQL): everything not in `executed`.
    pub async fn dump_gtid(&mut self, server_id: u32, executed: &[u8], non_block: bool) -> anyhow::Result<()> {
        self.p.reset();
        let mut cmd = vec![0x1e];
        cmd.extend((4u16 | u16::from(non_block)).to_le_bytes()); // BINLOG_THROUGH_GTID
        cmd.extend(server_id.to_le_bytes());
        cmd.extend(0u32.to_le_bytes()); // no file name
        cmd.extend(4u64.to_le_bytes());
        cmd.extend((executed.len() as u32).to_le_bytes());
        cmd.extend(executed);
        self.p.write(&cmd).await?;
        Ok(())
    }

    /// The next binlog event of a dump, whole (header to checksum), or
    /// `None` at the end of a non-blocking dump.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut pkt = self.p.read().await?;
        match pkt.first() {
            Some(0x00) => {
                pkt.remove(0);
                Ok(Some(pkt))
            }
            Some(0xff) => Err(parse_err(&pkt).into()),
            Some(0xfe) if pkt.len() < 9 => Ok(None),
            other => bail!("unexpected packet in the binlog stream starting {other:?}"),
        }
    }

    async fn expect_ok(&mut self, what: &str) -> anyhow::Result<()> {
        let pkt = self.p.read().await?;
        match pkt.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(anyhow::Error::new(parse_err(&pkt)).context(what.to_owned())),
            other => bail!("{what}: unexpected answer starting {other:?}"),
        }
    }
}

fn scramble_for(plugin: &str, password: &[u8], scramble: &[u8]) -> anyhow::Result<Vec<u8>> {
    match plugin {
        auth::NATIVE => Ok(auth::native(password, scramble)),
        auth::CACHING_SHA2 => Ok(auth::caching_sha2(password, scramble)),
        other => bail!("authentication plugin {other:?} (supported: {}, {})", auth::NATIVE, auth::CACHING_SHA2),
    }
}

fn cstr(r: &mut Reader<'_>) -> anyhow::Result<String> {
    let rest = r.clone().rest();
    let end = rest.iter().position(|&b| b == 0).ok_or_else(|| r.error("string without a terminator"))?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    r.take(end + 1, "string")?;
    Ok(s)
}
