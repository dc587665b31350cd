//! Hostile input for the streamer's binlog decoder (one or two events as the replication stream delivers them); errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::streamer::fuzz::binlog_event(data);
});
