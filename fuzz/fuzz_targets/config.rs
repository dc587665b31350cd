//! Arbitrary bytes as a config file: every input gives a config or errors
//! with positions inside the text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = edgebox::core::config::load_text(text, "fuzz.toml") {
        let lines = text.lines().count().max(1) + 1;
        for p in e.problems() {
            assert!(p.line <= lines, "line {} outside a {lines}-line input", p.line);
        }
        let _ = e.to_string();
    }
});
