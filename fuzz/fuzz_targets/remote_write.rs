//! Arbitrary bytes as a remote_write body: errors, never panics, and never
//! allocates past the decoded-size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgebox::roles::tsdb::remote_write::decode(data, 1 << 20);
});
