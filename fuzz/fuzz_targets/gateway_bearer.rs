//! Hostile input for the gateway: a bearer token checked as a JWT-SVID; errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::gateway::fuzz::bearer(data);
});
