//! Entry point for the fuzz target (fuzz/fuzz_targets/orchestrator_request.rs):
//! what agents and API clients send, a registration body, a list query, a
//! heartbeat line, a deployment (its selector and role sections), a
//! desired-state document, or a Raft member's command (parsed, then
//! applied to an in-memory store), must parse or be refused with a reason,
//! never panic.

use super::api::Filter;
use super::deployment::Spec;
use super::heartbeat::parse_beat;
use super::node::{Limits, Registration};
use super::selector::Selector;

pub fn request(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 7 {
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
        2 => {
            if let Ok(spec) = serde_json::from_slice::<Spec>(rest) {
                let _ = spec.check();
            }
        }
        3 => {
            if let Ok(s) = Selector::parse(&String::from_utf8_lossy(rest)) {
                let _ = s.matches(&Default::default(), "arm64", "n1");
            }
        }
        4 => {
            // What the agent reads from the orchestrator.
            if let Ok(d) = serde_json::from_slice::<crate::roles::fleet::DesiredState>(rest) {
                for dep in &d.deployments {
                    let _ = crate::roles::fleet::role_sections(&dep.config);
                    for (path, digest) in &dep.files {
                        let _ = crate::roles::fleet::check_file_path(path);
                        let _ = crate::roles::fleet::parse_digest(digest);
                    }
                }
            }
        }
        5 => {
            // What another Raft member hands this one to apply.
            if let Ok(cmd) = serde_json::from_slice::<super::command::Command>(rest) {
                let db = redb::Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .expect("an in-memory store");
                let txn = db.begin_write().expect("a write transaction");
                let _ = super::command::apply(&txn, &cmd);
                let _ = super::command::apply(&txn, &cmd);
            }
        }
        _ => {
            let _ = parse_beat(rest);
        }
    }
}
