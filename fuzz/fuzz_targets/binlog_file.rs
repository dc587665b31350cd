//! Hostile input for the streamer's binlog decoder (a whole file: magic, description, events, rows against their table maps); errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::streamer::fuzz::binlog_file(data);
});
