//! Hostile upstream answers for the gateway's HTTP/1.1 client codec: errors, never panics, and the same outcome whether the bytes arrive whole or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::gateway::fuzz::answer(data);
});
