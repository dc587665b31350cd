//! Hostile input for the orchestrator and agent: registrations, list queries, heartbeat lines, deployments, selectors, desired-state documents; refusals, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgebox::roles::orchestrator::fuzz::request(data);
});
