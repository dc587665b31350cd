//! Hostile input for the orchestrator: registration bodies, list queries and heartbeat lines; refusals, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::orchestrator::fuzz::request(data);
});
