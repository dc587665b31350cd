//! Who may call an operation: SPIFFE ID patterns from the document's
//! `x-edgebox-allow` or a policy file, and the decision for one caller.
//! Deny by default: an operation without a rule admits nobody, and an
//! anonymous caller matches no pattern. A policy in shadow mode logs what it
//! would deny and lets it pass, so a rule is tried before it is enforced.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow};
use serde::Deserialize;

use crate::core::tls::spiffe::SpiffeId;

/// A policy file (TOML): `mode` and `[[rules]]`.
#[derive(Debug, Default)]
pub struct Policy {
    pub shadow: bool,
    /// operationId or "METHOD /template" → patterns.
    rules: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    operation: String,
    allow: Vec<String>,
}

impl Policy {
    pub fn load(path: &Path) -> anyhow::Result<Policy> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: File = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let shadow = match file.mode.as_deref() {
            None | Some("enforce") => false,
            Some("shadow") => true,
            Some(other) => anyhow::bail!("{} mode: {other:?} is neither \"enforce\" nor \"shadow\"", path.display()),
        };
        let mut rules = BTreeMap::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            for p in &r.allow {
                check_pattern(p).map_err(|e| anyhow!("{} rules[{i}].allow: {e}", path.display()))?;
            }
            if rules.insert(r.operation.clone(), r.allow).is_some() {
                anyhow::bail!("{} rules[{i}]: operation {:?} has two rules", path.display(), r.operation);
            }
        }
        Ok(Policy { shadow, rules })
    }

    /// The rule for an operation, by operationId or "METHOD /template".
    pub fn rule(&self, id: &str, route: &str) -> Option<&[String]> {
        self.rules.get(id).or_else(|| self.rules.get(route)).map(Vec::as_slice)
    }

    pub fn operations(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }
}

/// A pattern is "*" (any caller: every authenticated one, and anonymous
/// ones where the config allows them at all), a SPIFFE ID, or a SPIFFE ID
/// followed by "/*" (everything under that path).
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    SpiffeId::parse(p.strip_suffix("/*").unwrap_or(p)).map(|_| ())
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with why.
    Deny(&'static str),
    /// Would be refused; shadow mode lets it through.
    ShadowDeny(&'static str),
}

/// The decision for `caller` (None: anonymous) under `allow`.
pub fn decide(caller: Option<&SpiffeId>, allow: Option<&[String]>, shadow: bool) -> Decision {
    let why = match (caller, allow) {
        (_, None) => "no rule admits anyone to this operation",
        (None, Some(patterns)) if patterns.iter().any(|p| p == "*") => return Decision::Allow,
        (None, Some(_)) => "anonymous callers match no rule but \"*\"",
        (Some(id), Some(patterns)) => {
            if patterns.iter().any(|p| p == "*" || id.matches(p)) {
                return Decision::Allow;
            }
            "the caller's SPIFFE ID matches no pattern"
        }
    };
    if shadow { Decision::ShadowDeny(why) } else { Decision::Deny(why) }
}
