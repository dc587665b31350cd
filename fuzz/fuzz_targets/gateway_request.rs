//! Hostile input for the gateway: a request routed and validated against a compiled OpenAPI document; errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::gateway::fuzz::request(data);
});
