//! The binary log decoder: MySQL 5.7/8.x and MariaDB 10.x row-based binlogs,
//! from files or a replication stream, written here rather than taken from
//! mysql_common (whose reader unwraps on truncated input) so that every
//! byte from the network goes through one bounds-checked, fuzzed path.
//!
//! - `event.rs`: the 19-byte header, CRC32 checks, and each event type's body.
//! - `table_map.rs`: TABLE_MAP events and their optional metadata (names,
//!   signedness, charsets, ENUM/SET strings, primary keys).
//! - `rows.rs` and `value.rs`: row images and every column type.
//! - `decimal.rs`, `temporal.rs`, `jsonb.rs`: the packed formats.
//! - `file.rs`: binlog files (magic, then events) for `streamer dump FILE`.
//!
//! The format is described in docs/streamer-binlog.md.

mod decimal;
pub mod event;
pub mod file;
mod jsonb;
pub mod reader;
pub mod rows;
pub mod table_map;
mod temporal;
pub mod value;

pub use event::{Checksum, Event, EventBody, FormatDescription, Header};
pub use table_map::TableMap;
pub use value::Value;

/// What is wrong with an event, and where (bytes from the event's start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (event byte {offset})")]
pub struct DecodeError {
    pub offset: usize,
    pub what: String,
}
