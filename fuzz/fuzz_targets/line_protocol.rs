//! Arbitrary bytes as a line-protocol body: no panic, and every error names
//! a line that exists.
#![no_main]

use edgebox::roles::tsdb::lineproto::{Limits, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (points, errors) = parse(data, &Limits::default());
    let lines = data.split(|&b| b == b'\n').count();
    assert!(points.len() + errors.len() <= lines);
    for e in errors {
        assert!(e.line >= 1 && e.line <= lines);
    }
});
