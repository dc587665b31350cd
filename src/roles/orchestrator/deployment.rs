//! A deployment: which nodes (a label selector), what they run (role
//! sections and content-addressed files), and how a new version rolls out
//! (canary share, most nodes updating at once, failures before a pause).
//! This file holds the shapes and the checks a deployment must pass before
//! it is stored; rollout.rs moves nodes from version to version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::selector::Selector;
use crate::roles::fleet;

/// Most files one deployment carries.
const MAX_FILES: usize = 64;

/// What an operator sends: `PUT /v1/deployments/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Which nodes run it (selector.rs); empty: every node.
    #[serde(default)]
    pub selector: String,
    /// Role sections, as in edgebox.toml; `${files}` in a string is the
    /// directory the files land in on the node.
    pub config: String,
    /// Path under that directory → `sha256:…` of a blob uploaded first.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub strategy: Strategy,
}

/// How a new version reaches the selected nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Strategy {
    /// Share of the nodes (rounded up) that take a new version first; the
    /// rest wait until every canary reports it applied. 0: no canary.
    pub canary_percent: u8,
    /// Most nodes updating (or failed) at once.
    pub max_unavailable: u32,
    /// Failed nodes tolerated before the rollout pauses itself.
    pub max_failures: u32,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy { canary_percent: 10, max_unavailable: 1, max_failures: 0 }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Rolling,
    /// Stopped by failures (or the operator); resumes on request.
    Paused,
    /// Every selected, live node runs the current version.
    Complete,
}

/// A deployment as stored (table `orchestrator.deployments`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Deployment {
    pub name: String,
    pub version: u64,
    pub spec: Spec,
    /// Earlier versions some node is still assigned.
    #[serde(default)]
    pub older: BTreeMap<u64, Spec>,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Failures of this version already seen when the operator resumed.
    #[serde(default)]
    pub accepted_failures: u64,
    pub updated_ms: u64,
}

impl Deployment {
    /// The spec of `version`, current or retained.
    pub fn spec_of(&self, version: u64) -> Option<&Spec> {
        if version == self.version { Some(&self.spec) } else { self.older.get(&version) }
    }
}

/// A deployment name: 1 to 63 of a-z, 0-9 and '-', starting with a letter.
pub fn check_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("deployment name {name:?}: 1 to 63 of a-z, 0-9 and '-', starting with a letter"))
    }
}

impl Spec {
    /// Everything checkable without the store; each error names the field.
    /// Returns the parsed selector.
    pub fn check(&self) -> Result<Selector, String> {
        let selector = Selector::parse(&self.selector)?;
        let sections = fleet::role_sections(&self.config)?;
        if sections.is_empty() {
            return Err("config: no role section (a deployment runs at least one role)".into());
        }
        for (name, section) in &sections {
            let entry = crate::roles::find(name).ok_or_else(|| format!("config: no role `{name}` in edgebox"))?;
            let section = fleet::with_files_dir(section, "/files");
            crate::core::config::load_section(entry, &section).map_err(|e| format!("config: {e}"))?;
        }
        if self.files.len() > MAX_FILES {
            return Err(format!("files: {} of them, at most {MAX_FILES}", self.files.len()));
        }
        for (path, digest) in &self.files {
            fleet::check_file_path(path).map_err(|e| format!("files: {e}"))?;
            fleet::parse_digest(digest).map_err(|e| format!("files.{path}: {e}"))?;
        }
        let s = self.strategy;
        if s.canary_percent > 100 {
            return Err(format!("strategy.canary_percent {}: 0 to 100", s.canary_percent));
        }
        if s.max_unavailable == 0 {
            return Err("strategy.max_unavailable: at least 1".into());
        }
        Ok(selector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(config: &str) -> Spec {
        Spec { selector: String::new(), config: config.into(), files: BTreeMap::new(), strategy: Strategy::default() }
    }

    #[test]
    fn checks_name_the_field_at_fault() {
        assert!(check_name("web-2").is_ok());
        assert!(check_name("2web").is_err());
        assert!(spec("[orchestrator]\nlisten = \"127.0.0.1:0\"\n").check().is_ok());
        let e = spec("[orchestrator]\nlisten = 5\n").check().unwrap_err();
        assert!(e.contains("orchestrator.listen"), "{e}");
        assert!(spec("[nosuchrole]\n").check().unwrap_err().contains("nosuchrole"));
        assert!(spec("").check().unwrap_err().contains("no role section"));
        let mut s = spec("[orchestrator]\n");
        s.files.insert("../x".into(), fleet::digest_of(b""));
        assert!(s.check().unwrap_err().contains("files"));
        let mut s = spec("[orchestrator]\n");
        s.strategy.max_unavailable = 0;
        assert!(s.check().unwrap_err().contains("max_unavailable"));
        let mut s = spec("[orchestrator]\n");
        s.selector = "a in (b".into();
        assert!(s.check().unwrap_err().contains("selector"));
    }
}
