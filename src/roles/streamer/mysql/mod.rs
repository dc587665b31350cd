//! The MySQL client protocol, as much as a replica needs: connect and log
//! in (conn.rs, auth.rs), framed packets (packet.rs), queries and the
//! binlog dump commands.

mod auth;
pub mod conn;
mod packet;

pub use conn::{Conn, ResultSet, ServerError, Target};
