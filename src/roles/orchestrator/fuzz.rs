//! Entry point for the fuzz target (fuzz/fuzz_targets/orchestrator_request.rs):
//! what agents and API clients send, a registration body, a list query or a
//! heartbeat line, must parse or be refused with a reason, never panic.

use super::api::Filter;
use super::heartbeat::parse_beat;
use super::node::{Limits, Registration};

pub fn request(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<Registration>(rest) {
                let limits = Limits { max_labels: 64, max_label_bytes: 256 };
                if r.check(limits).is_ok() {
                    let _ = r.conflict(&r);
                }
            }
        }
        1 => {
            let _ = Filter::parse(Some(&String::from_utf8_lossy(rest)));
        }
        _ => {
            let _ = parse_beat(rest);
        }
    }
}
