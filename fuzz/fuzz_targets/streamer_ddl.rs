//! Hostile DDL text for the streamer's schema history (statements from the binlog's QUERY events); errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::streamer::fuzz::ddl(data);
});
