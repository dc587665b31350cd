//! The desired-state document and its pieces.
//!
//! A node's desired state is the deployments whose selector matches it, each
//! at the version the rollout has assigned to that node. Its id lists them
//! (`web@3,sensors@7`, sorted by name; empty for none), so an agent's
//! heartbeat saying which id it applied says which versions it runs, and the
//! orchestrator needs to send the whole document only when the id moved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// One deployment as a node is to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentState {
    pub name: String,
    pub version: u64,
    /// Role sections as edgebox.toml would hold them (`[tsdb]` …); string
    /// values may say `${files}` for the directory the files land in.
    pub config: String,
    /// Relative path → `sha256:<hex>` of its content (a blob on the
    /// orchestrator).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// Everything a node is to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    pub id: String,
    pub deployments: Vec<DeploymentState>,
}

/// The id of a desired state holding these (deployment, version) pairs.
pub fn desired_id<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut pairs: Vec<(&str, u64)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    pairs.iter().map(|(n, v)| format!("{n}@{v}")).collect::<Vec<_>>().join(",")
}

/// `sha256:<64 lowercase hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let sum = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in sum {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The hex part of a well-formed digest, or why it is not one.
pub fn parse_digest(digest: &str) -> Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(format!("digest {digest:?}: expected sha256: and 64 lowercase hex digits")),
    }
}

/// A file's place under its deployment's directory: relative, no `..`,
/// nothing but letters, digits and `._-/`, at most 255 bytes.
pub fn check_file_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.len() <= 255
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("file path {path:?}: relative, without . or .. parts, of letters, digits and ._-/"))
    }
}

/// The role sections of a deployment's config: each top-level key must be
/// a table named after a role (never the core's sections or the agent).
pub fn role_sections(config: &str) -> Result<BTreeMap<String, toml::Value>, String> {
    let table: toml::Table = toml::from_str(config).map_err(|e| format!("config: {}", e.message().trim()))?;
    let mut out = BTreeMap::new();
    for (name, value) in table {
        if !value.is_table() {
            return Err(format!("config: `{name}` must be a role section ([{name}])"));
        }
        if name == "agent" || crate::core::config::CORE_SECTIONS.contains(&name.as_str()) {
            return Err(format!("config: [{name}] is the device's own; desired state sets role sections only"));
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// Every `${files}` in the section's strings replaced by `dir`.
pub fn with_files_dir(section: &toml::Value, dir: &str) -> toml::Value {
    match section {
        toml::Value::String(s) => toml::Value::String(s.replace("${files}", dir)),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|v| with_files_dir(v, dir)).collect()),
        toml::Value::Table(t) => {
            toml::Value::Table(t.iter().map(|(k, v)| (k.clone(), with_files_dir(v, dir))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_list_deployments_in_name_order() {
        assert_eq!(desired_id([("web", 3), ("sensors", 7)]), "sensors@7,web@3");
        assert_eq!(desired_id(std::iter::empty()), "");
    }

    #[test]
    fn digests_and_paths_are_checked() {
        let d = digest_of(b"abc");
        assert_eq!(d, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(parse_digest(&d).is_ok());
        assert!(parse_digest("sha256:ABC").is_err());
        assert!(check_file_path("policies/a.rego").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a b"] {
            assert!(check_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_role_sections_are_accepted() {
        let s = role_sections("[tsdb]\nlisten = \"${files}/x\"\n").unwrap();
        let v = with_files_dir(&s["tsdb"], "/d");
        assert_eq!(v["listen"].as_str(), Some("/d/x"));
        assert!(role_sections("[edgebox]\nroles = []\n").unwrap_err().contains("device's own"));
        assert!(role_sections("x = 1\n").unwrap_err().contains("role section"));
        assert!(role_sections("[tsdb\n").is_err());
    }
}
