//! Binlogs as MySQL 8 writes them, built byte by byte for the tests (no
//! MySQL 8 server can be installed here; MariaDB never writes v2 row
//! events, MySQL GTIDs, binary JSON or transaction payloads). Each event is
//! laid out as MySQL 8.0's log_event.cc writes it, with its CRC32; see
//! docs/streamer-format.md for the layouts and how they were checked.

use super::binlog::event::code;
use super::binlog::table_map::ty;

const SERVER_ID: u32 = 8;
pub const SID: [u8; 16] =
    [0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62];

/// Appends events to a file image, tracking positions.
pub struct Builder {
    pub out: Vec<u8>,
    ts: u32,
}

impl Builder {
    pub fn new() -> Builder {
        let mut b = Builder { out: b"\xfebin".to_vec(), ts: 1_700_000_000 };
        b.fde();
        b
    }

    /// One event with header and CRC32 (`checksum` false inside payloads).
    pub fn event_bytes(&self, type_code: u8, body: &[u8], log_pos: u32, checksum: bool) -> Vec<u8> {
        let size = 19 + body.len() + if checksum { 4 } else { 0 };
        let mut e = Vec::with_capacity(size);
        e.extend(self.ts.to_le_bytes());
        e.push(type_code);
        e.extend(SERVER_ID.to_le_bytes());
        e.extend((size as u32).to_le_bytes());
        e.extend(log_pos.to_le_bytes());
        e.extend(0u16.to_le_bytes());
        e.extend(body);
        if checksum {
            let crc = crc32fast::hash(&e);
            e.extend(crc.to_le_bytes());
        }
        e
    }

    pub fn push(&mut self, type_code: u8, body: &[u8]) {
        let end = self.out.len() + 19 + body.len() + 4;
        let e = self.event_bytes(type_code, body, end as u32, true);
        self.out.extend(e);
    }

    fn fde(&mut self) {
        let mut body = 4u16.to_le_bytes().to_vec();
        let mut version = b"8.0.36".to_vec();
        version.resize(50, 0);
        body.extend(version);
        body.extend(self.ts.to_le_bytes());
        body.push(19);
        // MySQL 8.0's post-header lengths for event types 1..=41.
        body.extend([
            0, 13, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 98, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0, 10, 10, 10, 42,
            42, 0, 18, 52, 0, 0, 10, 0,
        ]);
        body.push(1); // CRC32
        self.push(code::FORMAT_DESCRIPTION, &body);
    }

    pub fn previous_gtids(&mut self, set: &super::gtid::MysqlGtidSet) {
        self.push(code::PREVIOUS_GTIDS, &set.encode());
    }

    pub fn gtid(&mut self, gno: u64) {
        let mut body = vec![1u8];
        body.extend(SID);
        body.extend(gno.to_le_bytes());
        body.push(2); // logical timestamps follow
        body.extend(0u64.to_le_bytes());
        body.extend(1u64.to_le_bytes());
        self.push(code::GTID, &body);
    }

    pub fn query(&self, schema: &str, sql: &str) -> Vec<u8> {
        let mut body = 9u32.to_le_bytes().to_vec();
        body.extend(0u32.to_le_bytes());
        body.push(schema.len() as u8);
        body.extend(0u16.to_le_bytes());
        body.extend(0u16.to_le_bytes()); // no status variables
        body.extend(schema.as_bytes());
        body.push(0);
        body.extend(sql.as_bytes());
        body
    }

    /// `shop.docs (id BIGINT UNSIGNED PK, doc JSON, price DECIMAL(10,2), at DATETIME(3))`.
    pub fn table_map(&self, table_id: u64) -> Vec<u8> {
        let mut body = table_id.to_le_bytes()[..6].to_vec();
        body.extend(1u16.to_le_bytes());
        for name in ["shop", "docs"] {
            body.push(name.len() as u8);
            body.extend(name.as_bytes());
            body.push(0);
        }
        body.push(4);
        body.extend([ty::LONGLONG, ty::JSON, ty::NEWDECIMAL, ty::DATETIME2]);
        let meta = [4u8, 10, 2, 3]; // JSON: 4 length bytes; DECIMAL(10,2); fsp 3
        body.push(meta.len() as u8);
        body.extend(meta);
        body.push(0b1110); // nullable: all but id
        // Optional metadata: SIGNEDNESS (id unsigned, price signed), names, PK.
        body.extend([1, 1, 0b1000_0000]);
        let mut names = Vec::new();
        for n in ["id", "doc", "price", "at"] {
            names.push(n.len() as u8);
            names.extend(n.as_bytes());
        }
        body.push(4);
        body.push(names.len() as u8);
        body.extend(names);
        body.extend([8, 1, 0]);
        body
    }

    /// WRITE_ROWS_EVENT (v2) with one row.
    pub fn write_rows_v2(&self, table_id: u64, id: u64, doc: &[u8]) -> Vec<u8> {
        let mut body = table_id.to_le_bytes()[..6].to_vec();
        body.extend(1u16.to_le_bytes()); // STMT_END_F
        body.extend(2u16.to_le_bytes()); // no extra data
        body.push(4);
        body.push(0x0f); // all columns present
        body.push(0); // no NULLs
        body.extend(id.to_le_bytes());
        body.extend((doc.len() as u32).to_le_bytes());
        body.extend(doc);
        body.extend([0x80, 0x00, 0x00, 0x2a, 0x63]); // DECIMAL(10,2) 42.99
        // DATETIME(3) 2024-02-29 13:14:15.250
        let ymd: u64 = ((2024 * 13 + 2) << 5) | 29;
        let hms: u64 = (13 << 12) | (14 << 6) | 15;
        let packed = 0x80_0000_0000u64 + ((ymd << 17) | hms);
        body.extend(&packed.to_be_bytes()[3..]);
        body.extend(2500u16.to_be_bytes());
        body
    }

    pub fn xid(&mut self, xid: u64) {
        self.push(code::XID, &xid.to_le_bytes());
    }

    /// TRANSACTION_PAYLOAD: `events` (without checksums), zstd-compressed.
    pub fn payload(&mut self, events: &[Vec<u8>]) {
        let plain: Vec<u8> = events.concat();
        let compressed = ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);
        let mut body = Vec::new();
        for (field, value) in [(1u8, compressed.len() as u64), (2, 0), (3, plain.len() as u64)] {
            body.push(field);
            let v = lenenc(value);
            body.extend(lenenc(v.len() as u64));
            body.extend(v);
        }
        body.push(0);
        body.extend(compressed);
        self.push(code::TRANSACTION_PAYLOAD, &body);
    }
}

fn lenenc(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xffff => [vec![0xfc], (v as u16).to_le_bytes().to_vec()].concat(),
        0x1_0000..=0xff_ffff => [vec![0xfd], v.to_le_bytes()[..3].to_vec()].concat(),
        _ => [vec![0xfe], v.to_le_bytes().to_vec()].concat(),
    }
}

/// `{"a": [1, "xy", true]}` in MySQL's binary JSON.
pub fn json_doc() -> Vec<u8> {
    let mut array = vec![3, 0, 0, 0];
    array.extend([0x05, 1, 0, 0x0c, 13, 0, 0x04, 1, 0, 2, b'x', b'y']);
    array[2] = array.len() as u8;
    let mut obj = vec![1, 0, 0, 0, 11, 0, 1, 0, 0x02, 12, 0, b'a'];
    obj.extend(&array);
    obj[2] = obj.len() as u8;
    [vec![0x00], obj].concat()
}

/// A MySQL 8 binlog: previous GTIDs, a plain transaction with a v2 row, and
/// a compressed one (binlog_transaction_compression=ON).
pub fn mysql8_binlog() -> Vec<u8> {
    let mut b = Builder::new();
    let mut prev = super::gtid::MysqlGtidSet::default();
    prev.add(super::binlog::event::uuid_bytes::Uuid(SID), 1);
    b.previous_gtids(&prev);
    b.gtid(2);
    let q = b.query("shop", "BEGIN");
    b.push(code::QUERY, &q);
    let tm = b.table_map(77);
    b.push(code::TABLE_MAP, &tm);
    let rows = b.write_rows_v2(77, u64::MAX, &json_doc());
    b.push(code::WRITE_ROWS_V2, &rows);
    b.xid(100);
    b.gtid(3);
    let inner = vec![
        b.event_bytes(code::QUERY, &b.query("shop", "BEGIN"), 0, false),
        b.event_bytes(code::TABLE_MAP, &b.table_map(77), 0, false),
        b.event_bytes(code::WRITE_ROWS_V2, &b.write_rows_v2(77, 5, &[]), 0, false),
        b.event_bytes(code::XID, &101u64.to_le_bytes(), 0, false),
    ];
    b.payload(&inner);
    b.out
}
