//! TABLE_MAP events: which table a table id means until the next map, its
//! column types with their per-type metadata, nullability, and the optional
//! metadata (binlog_row_metadata=MINIMAL or FULL on MySQL 8 and MariaDB
//! 10.5+): signedness, charsets, column names, ENUM/SET strings, geometry
//! types, primary key. Servers without it (MySQL 5.7) leave names and
//! signedness to the schema history kept from DDL.

use super::DecodeError;
use super::reader::Reader;

/// Column type codes (enum_field_types).
pub mod ty {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const MARIADB_VARCHAR_COMPRESSED: u8 = 140;
    pub const MARIADB_BLOB_COMPRESSED: u8 = 141;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;

    pub fn name(t: u8) -> &'static str {
        match t {
            DECIMAL => "DECIMAL",
            TINY => "TINYINT",
            SHORT => "SMALLINT",
            LONG => "INT",
            FLOAT => "FLOAT",
            DOUBLE => "DOUBLE",
            NULL => "NULL",
            TIMESTAMP | TIMESTAMP2 => "TIMESTAMP",
            LONGLONG => "BIGINT",
            INT24 => "MEDIUMINT",
            DATE | NEWDATE => "DATE",
            TIME | TIME2 => "TIME",
            DATETIME | DATETIME2 => "DATETIME",
            YEAR => "YEAR",
            VARCHAR | VAR_STRING => "VARCHAR",
            BIT => "BIT",
            JSON => "JSON",
            NEWDECIMAL => "DECIMAL",
            ENUM => "ENUM",
            SET => "SET",
            TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB => "BLOB",
            STRING => "CHAR",
            GEOMETRY => "GEOMETRY",
            MARIADB_VARCHAR_COMPRESSED => "VARCHAR COMPRESSED",
            MARIADB_BLOB_COMPRESSED => "BLOB COMPRESSED",
            _ => "UNKNOWN",
        }
    }

    /// Columns the SIGNEDNESS metadata has a bit for.
    pub fn is_numeric(t: u8) -> bool {
        matches!(t, TINY | SHORT | INT24 | LONG | LONGLONG | FLOAT | DOUBLE | NEWDECIMAL | DECIMAL)
    }

    /// Columns the charset metadata covers (ENUM and SET have their own).
    pub fn is_character(t: u8) -> bool {
        matches!(t, STRING | VAR_STRING | VARCHAR | BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB)
    }
}

/// The binary collation: a character column with it holds bytes.
pub const BINARY_COLLATION: u64 = 63;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Column {
    /// The real type: CHAR's metadata unwrapped to ENUM or SET where it is one.
    pub ty: u8,
    /// Type-specific: length bytes, max length, (precision, scale), fsp, …
    pub meta: u16,
    pub nullable: bool,
    pub name: Option<String>,
    pub unsigned: Option<bool>,
    pub collation: Option<u64>,
    pub enum_values: Option<Vec<String>>,
    pub set_values: Option<Vec<String>>,
    /// The type as declared, from the schema history (`uuid`, `inet6`, …):
    /// the binlog only says CHAR for types that store fixed bytes.
    pub declared: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMap {
    pub table_id: u64,
    pub schema: String,
    pub table: String,
    pub columns: Vec<Column>,
    /// Primary key column indexes, when the server sent them.
    pub primary_key: Option<Vec<usize>>,
}

impl TableMap {
    pub fn read(r: &mut Reader<'_>, table_id_len: usize) -> Result<TableMap, DecodeError> {
        let table_id = r.uint(table_id_len, "table map id")?;
        r.u16("table map flags")?;
        let schema_len = usize::from(r.u8("schema name length")?);
        let schema = String::from_utf8_lossy(r.take(schema_len, "schema name")?).into_owned();
        r.u8("schema name terminator")?;
        let table_len = usize::from(r.u8("table name length")?);
        let table = String::from_utf8_lossy(r.take(table_len, "table name")?).into_owned();
        r.u8("table name terminator")?;
        let n = r.lenenc_len("column count")?;
        let types = r.take(n, "column types")?;
        let meta_len = r.lenenc_len("column metadata length")?;
        let meta_at = r.offset();
        let mut meta = Reader::new(r.take(meta_len, "column metadata")?, meta_at);
        let mut columns = Vec::with_capacity(n);
        for &t in types {
            columns.push(column(t, &mut meta)?);
        }
        if !meta.is_empty() {
            return Err(meta.error(format!("{} bytes of column metadata left over", meta.remaining())));
        }
        let nulls = r.take(n.div_ceil(8), "nullability bitmap")?;
        for (i, c) in columns.iter_mut().enumerate() {
            c.nullable = nulls[i / 8] & (1 << (i % 8)) != 0;
        }
        let mut map = TableMap { table_id, schema, table, columns, primary_key: None };
        while !r.is_empty() {
            let kind = r.u8("optional metadata type")?;
            let len = r.lenenc_len("optional metadata length")?;
            let at = r.offset();
            let mut field = Reader::new(r.take(len, "optional metadata")?, at);
            map.optional(kind, &mut field)?;
        }
        Ok(map)
    }

    /// One optional-metadata field (unknown kinds are skipped: newer
    /// servers add them).
    fn optional(&mut self, kind: u8, f: &mut Reader<'_>) -> Result<(), DecodeError> {
        let of = |pred: fn(&Column) -> bool, cols: &mut Vec<Column>| -> Vec<usize> {
            cols.iter().enumerate().filter(|(_, c)| pred(c)).map(|(i, _)| i).collect()
        };
        match kind {
            // SIGNEDNESS: one bit per numeric column, most significant first.
            1 => {
                let numeric = of(|c| ty::is_numeric(c.ty), &mut self.columns);
                let bits = f.take(numeric.len().div_ceil(8), "signedness bitmap")?;
                for (k, &i) in numeric.iter().enumerate() {
                    self.columns[i].unsigned = Some(bits[k / 8] & (0x80 >> (k % 8)) != 0);
                }
            }
            // DEFAULT_CHARSET (then exceptions) and COLUMN_CHARSET, for
            // character columns; 10 and 11 are the same for ENUM and SET.
            2 | 3 | 10 | 11 => {
                let cols = match kind {
                    2 | 3 => of(|c| ty::is_character(c.ty), &mut self.columns),
                    _ => of(|c| matches!(c.ty, ty::ENUM | ty::SET), &mut self.columns),
                };
                if kind == 2 || kind == 10 {
                    let default = f.lenenc("default collation")?;
                    for &i in &cols {
                        self.columns[i].collation = Some(default);
                    }
                    while !f.is_empty() {
                        let k = f.lenenc("collation column")? as usize;
                        let coll = f.lenenc("collation")?;
                        let i = *cols
                            .get(k)
                            .ok_or_else(|| f.error(format!("collation for character column {k} of {}", cols.len())))?;
                        self.columns[i].collation = Some(coll);
                    }
                } else {
                    for &i in &cols {
                        self.columns[i].collation = Some(f.lenenc("column collation")?);
                    }
                }
            }
            4 => {
                for c in &mut self.columns {
                    let len = f.lenenc_len("column name length")?;
                    c.name = Some(String::from_utf8_lossy(f.take(len, "column name")?).into_owned());
                }
            }
            5 | 6 => {
                let want = if kind == 5 { ty::SET } else { ty::ENUM };
                let cols: Vec<usize> =
                    self.columns.iter().enumerate().filter(|(_, c)| c.ty == want).map(|(i, _)| i).collect();
                for i in cols {
                    let count = f.lenenc_len("ENUM/SET value count")?;
                    let mut values = Vec::with_capacity(count);
                    for _ in 0..count {
                        let len = f.lenenc_len("ENUM/SET value length")?;
                        values.push(String::from_utf8_lossy(f.take(len, "ENUM/SET value")?).into_owned());
                    }
                    match kind {
                        5 => self.columns[i].set_values = Some(values),
                        _ => self.columns[i].enum_values = Some(values),
                    }
                }
            }
            8 | 9 => {
                let mut pk = Vec::new();
                while !f.is_empty() {
                    let i = f.lenenc("primary key column")? as usize;
                    if i >= self.columns.len() {
                        return Err(f.error(format!("primary key column {i} of {}", self.columns.len())));
                    }
                    pk.push(i);
                    if kind == 9 {
                        f.lenenc("primary key prefix")?;
                    }
                }
                self.primary_key = Some(pk);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A column's type and metadata; CHAR's two bytes hide ENUM and SET.
fn column(t: u8, meta: &mut Reader<'_>) -> Result<Column, DecodeError> {
    use ty::*;
    let (ty, meta) = match t {
        FLOAT
        | DOUBLE
        | BLOB
        | TINY_BLOB
        | MEDIUM_BLOB
        | LONG_BLOB
        | GEOMETRY
        | JSON
        | TIMESTAMP2
        | DATETIME2
        | TIME2
        | MARIADB_BLOB_COMPRESSED => (t, u16::from(meta.u8("column metadata")?)),
        VARCHAR | VAR_STRING | MARIADB_VARCHAR_COMPRESSED => (t, meta.u16("column metadata")?),
        NEWDECIMAL | BIT | ENUM | SET | DECIMAL => {
            let b = meta.take(2, "column metadata")?;
            (t, u16::from(b[0]) << 8 | u16::from(b[1]))
        }
        STRING => {
            let b = meta.take(2, "column metadata")?;
            let (b0, b1) = (u16::from(b[0]), u16::from(b[1]));
            if b0 & 0x30 != 0x30 {
                // A CHAR longer than 255 bytes: two length bits live in b0.
                (STRING, b1 | (((b0 & 0x30) ^ 0x30) << 4))
            } else if b0 as u8 == ENUM || b0 as u8 == SET {
                (b0 as u8, b1)
            } else {
                (STRING, b1)
            }
        }
        _ => (t, 0),
    };
    Ok(Column { ty, meta, ..Column::default() })
}
