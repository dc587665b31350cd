//! tsdb: the embedded time-series database role (issue 3).
//!
//! What is here so far are its two wire/disk codecs, complete and tested:
//! the Gorilla chunk format the storage engine will keep in the store, and
//! the Influx line-protocol parser the ingest endpoints will use. The role is
//! not in the multi-call table yet: it joins once its storage engine and HTTP
//! service exist, so nothing half-built is reachable from the command line.

pub mod gorilla;
pub mod lineproto;
