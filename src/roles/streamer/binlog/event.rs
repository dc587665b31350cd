//! Events: the common 19-byte header, the CRC32 trailer, and the bodies of
//! every event type a row-based CDC reader meets (MySQL and MariaDB).
//! Types that carry nothing for CDC (INTVAR, RAND, USER_VAR, …) decode to
//! `Other`; type codes this decoder does not know decode to `Unknown`, which
//! the caller counts and skips (both servers mark such events ignorable).

use std::io::Read as _;

use serde::Serialize;

use super::DecodeError;
use super::reader::Reader;
use super::table_map::TableMap;

pub const HEADER_LEN: usize = 19;
/// The largest event accepted (MySQL's max_allowed_packet ceiling).
pub const MAX_EVENT: usize = 1 << 30;
/// The largest TRANSACTION_PAYLOAD accepted once decompressed.
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// Event type codes (MySQL's Log_event_type and MariaDB's additions).
pub mod code {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const ROWS_QUERY: u8 = 29;
    pub const WRITE_ROWS_V2: u8 = 30;
    pub const UPDATE_ROWS_V2: u8 = 31;
    pub const DELETE_ROWS_V2: u8 = 32;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const HEARTBEAT_V2: u8 = 41;
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIADB_GTID: u8 = 162;
    pub const MARIADB_GTID_LIST: u8 = 163;
    pub const MARIADB_START_ENCRYPTION: u8 = 164;
    pub const MARIADB_QUERY_COMPRESSED: u8 = 165;
    pub const MARIADB_WRITE_ROWS_COMPRESSED: u8 = 166;
    pub const MARIADB_UPDATE_ROWS_COMPRESSED: u8 = 167;
    pub const MARIADB_DELETE_ROWS_COMPRESSED: u8 = 168;
    /// INTVAR, RAND, USER_VAR, INCIDENT, IGNORABLE, XA_PREPARE, …: known, nothing for CDC.
    pub const OTHER_KNOWN: &[u8] = &[1, 5, 13, 14, 26, 28, 36, 37, 38];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Header {
    pub timestamp: u32,
    pub type_code: u8,
    pub server_id: u32,
    pub event_size: u32,
    /// Position of the next event in the source's binlog file (0 for
    /// artificial events such as the stream's first ROTATE).
    pub log_pos: u32,
    pub flags: u16,
}

impl Header {
    pub fn read(bytes: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::new(bytes, 0);
        Ok(Header {
            timestamp: r.u32("header timestamp")?,
            type_code: r.u8("header type")?,
            server_id: r.u32("header server_id")?,
            event_size: r.u32("header event_size")?,
            log_pos: r.u32("header log_pos")?,
            flags: r.u16("header flags")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    None,
    Crc32,
}

/// The first event of every binlog: how the rest is laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormatDescription {
    pub binlog_version: u16,
    pub server_version: String,
    pub header_len: u8,
    #[serde(skip)]
    pub post_header_lens: Vec<u8>,
    pub checksum: Checksum,
}

impl FormatDescription {
    /// What to assume before the first FORMAT_DESCRIPTION arrives (the
    /// replication stream's artificial ROTATE comes first): binlog v4
    /// with the checksum the connection asked for.
    pub fn assumed(checksum: Checksum) -> FormatDescription {
        FormatDescription {
            binlog_version: 4,
            server_version: String::new(),
            header_len: HEADER_LEN as u8,
            post_header_lens: Vec::new(),
            checksum,
        }
    }

    fn post_header_len(&self, type_code: u8, default: u8) -> u8 {
        self.post_header_lens.get(usize::from(type_code).wrapping_sub(1)).copied().unwrap_or(default)
    }

    /// Table ids are 6 bytes, or 4 in pre-5.1.4 layouts.
    pub fn table_id_len(&self, type_code: u8) -> usize {
        if self.post_header_len(type_code, 8) == 6 { 4 } else { 6 }
    }

    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }

    fn read(body: &[u8]) -> Result<FormatDescription, DecodeError> {
        let mut r = Reader::new(body, HEADER_LEN);
        let binlog_version = r.u16("binlog version")?;
        if binlog_version != 4 {
            return Err(r.error(format!("binlog version {binlog_version} (only version 4 is read)")));
        }
        let version = r.take(50, "server version")?;
        let server_version =
            String::from_utf8_lossy(version.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
        r.u32("create timestamp")?;
        let header_len = r.u8("header length")?;
        if usize::from(header_len) != HEADER_LEN {
            return Err(r.error(format!("event header length {header_len} (expected {HEADER_LEN})")));
        }
        let mut rest = r.rest();
        // Servers that checksum (MySQL ≥ 5.6.1, MariaDB ≥ 5.3) end the
        // body with the algorithm byte and the event's own CRC.
        let checksum = if supports_checksums(&server_version) {
            let Some((&alg, lens)) = rest.split_last_chunk::<5>().map(|(lens, tail)| (&tail[0], lens)) else {
                return Err(DecodeError {
                    offset: HEADER_LEN + 57,
                    what: "format description: no checksum algorithm".into(),
                });
            };
            rest = lens;
            match alg {
                0 => Checksum::None,
                1 => Checksum::Crc32,
                n => {
                    return Err(DecodeError {
                        offset: HEADER_LEN + 57 + lens.len(),
                        what: format!("checksum algorithm {n} (known: 0 none, 1 CRC32)"),
                    });
                }
            }
        } else {
            Checksum::None
        };
        Ok(FormatDescription { binlog_version, server_version, header_len, post_header_lens: rest.to_vec(), checksum })
    }
}

fn supports_checksums(version: &str) -> bool {
    let mut parts =
        version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    v >= (5, 6, 1) || (version.contains("MariaDB") && v >= (5, 3, 0))
}

/// A rows event as it arrived: decoded against its table map by `rows.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsEvent {
    pub kind: RowsKind,
    pub table_id: u64,
    pub flags: u16,
    pub column_count: usize,
    pub present: Vec<u8>,
    /// The after-image's columns (UPDATE only).
    pub present_after: Option<Vec<u8>>,
    pub rows: Vec<u8>,
    /// Offset of `rows` within the event, for error messages.
    pub rows_offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowsKind {
    Insert,
    Update,
    Delete,
}

/// A MariaDB GTID: domain-server-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct MariadbGtid {
    pub domain: u32,
    pub server_id: u32,
    pub seq: u64,
}

impl std::fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    FormatDescription(FormatDescription),
    Rotate {
        position: u64,
        next_file: String,
    },
    Query {
        thread_id: u32,
        exec_time: u32,
        error_code: u16,
        schema: String,
        query: String,
    },
    Xid {
        xid: u64,
    },
    TableMap(TableMap),
    Rows(RowsEvent),
    MariadbGtid {
        gtid: MariadbGtid,
        standalone: bool,
    },
    MariadbGtidList {
        gtids: Vec<MariadbGtid>,
    },
    MysqlGtid {
        sid: uuid_bytes::Uuid,
        gno: u64,
    },
    PreviousGtids {
        set: super::super::gtid::MysqlGtidSet,
    },
    AnonymousGtid,
    BinlogCheckpoint {
        file: String,
    },
    /// The statement behind the rows that follow (MariaDB ANNOTATE_ROWS,
    /// MySQL ROWS_QUERY).
    RowsQuery {
        query: String,
    },
    Heartbeat {
        log_file: String,
    },
    /// A MySQL 8 compressed transaction: the events inside, decompressed.
    TransactionPayload {
        events: Vec<Event>,
    },
    Stop,
    Other,
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub header: Header,
    pub body: EventBody,
}

/// UUIDs as 16 bytes, printed the usual way.
pub mod uuid_bytes {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Uuid(pub [u8; 16]);

    impl std::fmt::Display for Uuid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for (i, b) in self.0.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    f.write_str("-")?;
                }
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

impl Event {
    /// Decodes one whole event (header, body and any checksum) laid out by
    /// `fde`; a FORMAT_DESCRIPTION event describes itself.
    pub fn decode(bytes: &[u8], fde: &FormatDescription) -> Result<Event, DecodeError> {
        Event::decode_with(bytes, fde, true)
    }

    fn decode_with(bytes: &[u8], fde: &FormatDescription, checksummed: bool) -> Result<Event, DecodeError> {
        let header = Header::read(bytes)?;
        if header.event_size as usize != bytes.len() {
            return Err(DecodeError {
                offset: 9,
                what: format!("event_size {} but the event has {} bytes", header.event_size, bytes.len()),
            });
        }
        if header.type_code == code::FORMAT_DESCRIPTION {
            let desc = FormatDescription::read(&bytes[HEADER_LEN..])?;
            if desc.checksum == Checksum::Crc32 {
                // The server sets LOG_EVENT_BINLOG_IN_USE_F in an open file's
                // description after checksumming it with the flag clear.
                let mut copy = bytes.to_vec();
                copy[17] &= !1;
                verify_crc(&copy)?;
            }
            return Ok(Event { header, body: EventBody::FormatDescription(desc) });
        }
        let mut body = &bytes[HEADER_LEN..];
        if checksummed && fde.checksum == Checksum::Crc32 {
            verify_crc(bytes)?;
            body = &body[..body.len().saturating_sub(4)];
        }
        let mut body = decode_body(header.type_code, body, fde)?;
        if let EventBody::MariadbGtid { gtid, .. } = &mut body {
            gtid.server_id = header.server_id;
        }
        Ok(Event { header, body })
    }
}

fn verify_crc(bytes: &[u8]) -> Result<(), DecodeError> {
    let Some((data, stored)) = bytes.split_last_chunk::<4>() else {
        return Err(DecodeError { offset: 0, what: "event too short for its checksum".into() });
    };
    let (stored, computed) = (u32::from_le_bytes(*stored), crc32fast::hash(data));
    if stored != computed {
        return Err(DecodeError {
            offset: data.len(),
            what: format!("checksum mismatch: stored CRC32 {stored:08x}, computed {computed:08x}"),
        });
    }
    Ok(())
}

fn decode_body(type_code: u8, body: &[u8], fde: &FormatDescription) -> Result<EventBody, DecodeError> {
    let mut r = Reader::new(body, HEADER_LEN);
    Ok(match type_code {
        code::ROTATE => {
            let position = r.u64("rotate position")?;
            EventBody::Rotate { position, next_file: utf8(r.rest()) }
        }
        code::QUERY | code::MARIADB_QUERY_COMPRESSED => {
            let thread_id = r.u32("query thread id")?;
            let exec_time = r.u32("query exec time")?;
            let schema_len = usize::from(r.u8("query schema length")?);
            let error_code = r.u16("query error code")?;
            let status_len = usize::from(r.u16("query status vars length")?);
            r.take(status_len, "query status vars")?;
            let schema = utf8(r.take(schema_len, "query schema")?);
            r.u8("query schema terminator")?;
            let at = r.offset();
            let text = r.rest();
            let query = match type_code {
                code::QUERY => utf8(text),
                _ => utf8(&mariadb_uncompress(text, at)?),
            };
            EventBody::Query { thread_id, exec_time, error_code, schema, query }
        }
        code::XID => EventBody::Xid { xid: r.u64("xid")? },
        code::TABLE_MAP => EventBody::TableMap(TableMap::read(&mut r, fde.table_id_len(type_code))?),
        code::WRITE_ROWS_V1
        | code::UPDATE_ROWS_V1
        | code::DELETE_ROWS_V1
        | code::WRITE_ROWS_V2
        | code::UPDATE_ROWS_V2
        | code::DELETE_ROWS_V2
        | code::MARIADB_WRITE_ROWS_COMPRESSED
        | code::MARIADB_UPDATE_ROWS_COMPRESSED
        | code::MARIADB_DELETE_ROWS_COMPRESSED => EventBody::Rows(rows_event(type_code, &mut r, fde)?),
        code::PARTIAL_UPDATE_ROWS => {
            return Err(r.error(
                "PARTIAL_UPDATE_ROWS (binlog_row_value_options=PARTIAL_JSON) carries no full after-image; \
                 set binlog_row_value_options='' on the source",
            ));
        }
        code::MARIADB_GTID => {
            let seq = r.u64("gtid sequence")?;
            let domain = r.u32("gtid domain")?;
            let flags = r.u8("gtid flags")?;
            // server_id comes from the header; the caller fills it in.
            EventBody::MariadbGtid { gtid: MariadbGtid { domain, server_id: 0, seq }, standalone: flags & 1 != 0 }
        }
        code::MARIADB_GTID_LIST => {
            let count = r.u32("gtid list count")? & 0x0fff_ffff;
            if u64::from(count) * 16 > r.remaining() as u64 {
                return Err(r.error(format!("gtid list of {count} entries exceeds the event")));
            }
            let mut gtids = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let domain = r.u32("gtid list domain")?;
                let server_id = r.u32("gtid list server")?;
                let seq = r.u64("gtid list sequence")?;
                gtids.push(MariadbGtid { domain, server_id, seq });
            }
            EventBody::MariadbGtidList { gtids }
        }
        code::MARIADB_BINLOG_CHECKPOINT => {
            let len = r.u32("checkpoint file length")? as usize;
            EventBody::BinlogCheckpoint { file: utf8(r.take(len, "checkpoint file")?) }
        }
        code::MARIADB_ANNOTATE_ROWS | code::ROWS_QUERY => {
            if type_code == code::ROWS_QUERY {
                r.u8("rows query length")?; // a 1-byte length, truncated; the rest is the text
            }
            EventBody::RowsQuery { query: utf8(r.rest()) }
        }
        code::GTID => {
            r.u8("gtid flags")?;
            let sid = r.take(16, "gtid source id")?.try_into().map_err(|_| r.error("gtid source id"))?;
            let gno = r.u64("gtid number")?;
            EventBody::MysqlGtid { sid: uuid_bytes::Uuid(sid), gno }
        }
        code::ANONYMOUS_GTID => EventBody::AnonymousGtid,
        code::PREVIOUS_GTIDS => EventBody::PreviousGtids { set: super::super::gtid::MysqlGtidSet::decode(&mut r)? },
        code::HEARTBEAT => EventBody::Heartbeat { log_file: utf8(r.rest()) },
        code::HEARTBEAT_V2 => EventBody::Heartbeat { log_file: String::new() },
        code::TRANSACTION_PAYLOAD => EventBody::TransactionPayload { events: transaction_payload(&mut r, fde)? },
        code::STOP => EventBody::Stop,
        code::MARIADB_START_ENCRYPTION => {
            return Err(r.error("the binlog is encrypted (START_ENCRYPTION); read it through the server, not the file"));
        }
        t if code::OTHER_KNOWN.contains(&t) => EventBody::Other,
        _ => EventBody::Unknown,
    })
}

fn rows_event(type_code: u8, r: &mut Reader<'_>, fde: &FormatDescription) -> Result<RowsEvent, DecodeError> {
    use code::*;
    let kind = match type_code {
        WRITE_ROWS_V1 | WRITE_ROWS_V2 | MARIADB_WRITE_ROWS_COMPRESSED => RowsKind::Insert,
        UPDATE_ROWS_V1 | UPDATE_ROWS_V2 | MARIADB_UPDATE_ROWS_COMPRESSED => RowsKind::Update,
        _ => RowsKind::Delete,
    };
    let table_id = r.uint(fde.table_id_len(type_code), "rows table id")?;
    let flags = r.u16("rows flags")?;
    if matches!(type_code, WRITE_ROWS_V2 | UPDATE_ROWS_V2 | DELETE_ROWS_V2) {
        let extra = usize::from(r.u16("rows extra data length")?);
        r.take(extra.saturating_sub(2), "rows extra data")?;
    }
    let column_count = r.lenenc("rows column count")?;
    if column_count > r.remaining() as u64 * 8 {
        return Err(r.error(format!("rows column count {column_count} exceeds the event")));
    }
    let column_count = column_count as usize;
    let bitmap = column_count.div_ceil(8);
    let present = r.take(bitmap, "rows columns-present bitmap")?.to_vec();
    let present_after = match kind {
        RowsKind::Update => Some(r.take(bitmap, "rows after-image bitmap")?.to_vec()),
        _ => None,
    };
    let rows_offset = r.offset();
    let rows = match type_code {
        MARIADB_WRITE_ROWS_COMPRESSED | MARIADB_UPDATE_ROWS_COMPRESSED | MARIADB_DELETE_ROWS_COMPRESSED => {
            mariadb_uncompress(r.rest(), rows_offset)?
        }
        _ => r.rest().to_vec(),
    };
    Ok(RowsEvent { kind, table_id, flags, column_count, present, present_after, rows, rows_offset })
}

/// MariaDB's compressed events (log_bin_compress): one byte whose low
/// three bits count the big-endian length bytes that follow, then zlib.
fn mariadb_uncompress(data: &[u8], at: usize) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(data, at);
    let lead = r.u8("compressed header")?;
    let n = usize::from(lead & 0x07);
    if lead & 0x80 == 0 || !(1..=4).contains(&n) {
        return Err(r.error(format!("compressed header 0x{lead:02x} is not MariaDB's")));
    }
    let len = r.uint_be(n, "compressed length")?;
    if len > MAX_PAYLOAD {
        return Err(r.error(format!("compressed event claims {len} bytes uncompressed")));
    }
    let mut out = Vec::with_capacity(len as usize);
    let mut z = flate2::read::ZlibDecoder::new(r.rest()).take(len + 1);
    std::io::Read::read_to_end(&mut z, &mut out).map_err(|e| DecodeError { offset: at, what: format!("zlib: {e}") })?;
    if out.len() as u64 != len {
        return Err(DecodeError {
            offset: at,
            what: format!("compressed event: {} bytes, header says {len}", out.len()),
        });
    }
    Ok(out)
}

/// MySQL 8's TRANSACTION_PAYLOAD: header fields, then the events of one
/// transaction, zstd-compressed and without checksums of their own.
fn transaction_payload(r: &mut Reader<'_>, fde: &FormatDescription) -> Result<Vec<Event>, DecodeError> {
    let (mut compression, mut size) = (None, None);
    loop {
        let field = r.lenenc("payload field type")?;
        if field == 0 {
            break;
        }
        let len = r.lenenc_len("payload field length")?;
        let mut value = Reader::new(r.take(len, "payload field")?, r.offset() - len);
        match field {
            2 => compression = Some(value.lenenc("payload compression type")?),
            3 => size = Some(value.lenenc("payload uncompressed size")?),
            _ => {}
        }
    }
    let at = r.offset();
    let payload = r.rest();
    let size = size.unwrap_or(payload.len() as u64);
    if size > MAX_PAYLOAD {
        return Err(DecodeError { offset: at, what: format!("transaction payload claims {size} bytes uncompressed") });
    }
    let data = match compression {
        Some(255) | None => payload.to_vec(),
        Some(0) => {
            let mut out = Vec::with_capacity(size as usize);
            let decoder = ruzstd::decoding::StreamingDecoder::new(payload)
                .map_err(|e| DecodeError { offset: at, what: format!("zstd: {e}") })?;
            decoder
                .take(size + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecodeError { offset: at, what: format!("zstd: {e}") })?;
            out
        }
        Some(n) => {
            return Err(DecodeError {
                offset: at,
                what: format!("payload compression type {n} (known: 0 zstd, 255 none)"),
            });
        }
    };
    let mut events = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let header =
            Header::read(rest).map_err(|e| DecodeError { offset: at, what: format!("inside payload: {e}") })?;
        let len = header.event_size as usize;
        if len < HEADER_LEN || len > rest.len() {
            return Err(DecodeError {
                offset: at,
                what: format!("inside payload: event of {len} bytes with {} left", rest.len()),
            });
        }
        let event = Event::decode_with(&rest[..len], fde, false)
            .map_err(|e| DecodeError { offset: at, what: format!("inside payload: {e}") })?;
        if matches!(event.body, EventBody::TransactionPayload { .. }) {
            return Err(DecodeError { offset: at, what: "a transaction payload inside a transaction payload".into() });
        }
        events.push(event);
        rest = &rest[len..];
    }
    Ok(events)
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
