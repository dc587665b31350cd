//! Table schemas the streamer follows: `ddl.rs` reads the DDL statements
//! of the binlog and of SHOW CREATE TABLE, `history.rs` keeps each table's
//! columns as they stand (in memory and in the store), and `capture.rs`
//! reads the source's current schemas when a stream starts fresh.

mod capture;
pub mod ddl;
pub mod history;

pub use capture::{capture, list_tables, quote};
pub use ddl::Name;
pub use history::{Changes, History, TableSchema};
