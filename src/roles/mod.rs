//! The multi-call table: one entry per role, each behind its Cargo feature.
//!
//! A role joins edgebox by adding its folder here, its feature in Cargo.toml
//! and one line in [`ROLES`]; nothing else in the core changes. Names are
//! checked unique (and distinct from the core's own commands) at compile time.

use crate::core::role::RoleEntry;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "certguard")]
pub mod certguard;
// Not a role: the desired-state format the orchestrator and agent share.
#[cfg(any(feature = "orchestrator", feature = "agent"))]
pub mod fleet;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "orchestrator")]
pub mod orchestrator;
#[cfg(feature = "streamer")]
pub mod streamer;
#[cfg(feature = "tsdb")]
pub mod tsdb;

/// Every role compiled into this binary, in `--list` order.
pub const ROLES: &[RoleEntry] = &[
    #[cfg(feature = "tsdb")]
    tsdb::ENTRY,
    #[cfg(feature = "certguard")]
    certguard::ENTRY,
    #[cfg(feature = "gateway")]
    gateway::ENTRY,
    #[cfg(feature = "streamer")]
    streamer::ENTRY,
    #[cfg(feature = "orchestrator")]
    orchestrator::ENTRY,
    #[cfg(feature = "agent")]
    agent::ENTRY,
];

/// Subcommands the core owns; no role may take one of these names.
pub const CORE_COMMANDS: &[&str] = &["up", "info", "install", "config", "store", "completions", "man", "help"];

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// True when no two roles share a name and no role shadows a core command.
pub const fn names_are_unique(roles: &[RoleEntry], core: &[&str]) -> bool {
    let mut i = 0;
    while i < roles.len() {
        let mut j = i + 1;
        while j < roles.len() {
            if str_eq(roles[i].name, roles[j].name) {
                return false;
            }
            j += 1;
        }
        let mut k = 0;
        while k < core.len() {
            if str_eq(roles[i].name, core[k]) {
                return false;
            }
            k += 1;
        }
        i += 1;
    }
    true
}

const _: () =
    assert!(names_are_unique(ROLES, CORE_COMMANDS), "two roles share a name, or a role shadows a core command");

/// The entry for a role name, if that role is compiled in.
pub fn find(name: &str) -> Option<&'static RoleEntry> {
    ROLES.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_unique() {
        assert!(names_are_unique(ROLES, CORE_COMMANDS));
        let mut names: Vec<_> = ROLES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ROLES.len());
    }

    fn entry(name: &'static str) -> RoleEntry {
        RoleEntry {
            name,
            summary: "test",
            feature: name,
            default_config: "",
            migrations: &[],
            reloads: false,
            compliance_config: "",
            load: |_| Err(serde::de::Error::custom("test entry")),
            metrics: &[],
            command: || clap::Command::new("test"),
            run_command: |_, _| Ok(()),
        }
    }

    #[test]
    fn uniqueness_check_catches_a_clash() {
        assert!(names_are_unique(&[entry("a"), entry("b")], CORE_COMMANDS));
        assert!(!names_are_unique(&[entry("a"), entry("b"), entry("a")], CORE_COMMANDS));
        assert!(!names_are_unique(&[entry("store")], CORE_COMMANDS), "a role may not shadow a core command");
        assert!(str_eq("tsdb", "tsdb") && !str_eq("tsdb", "tsdc") && !str_eq("a", "ab"));
    }

    #[test]
    fn every_role_feature_is_named_for_the_role() {
        for r in ROLES {
            assert_eq!(r.feature, r.name, "role `{}` must be gated by a feature of its own name", r.name);
            assert!(!r.summary.is_empty());
        }
    }
}
