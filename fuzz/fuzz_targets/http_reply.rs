//! Arbitrary bytes as an HTTP/1.1 answer from a remote peer (an upstream,
//! a reload URL, a probe's health check): an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgebox::core::httpclient::parse_reply(data, "GET");
});
