//! Arbitrary bytes as a control-socket request line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgebox::core::control::parse_request(data);
});
