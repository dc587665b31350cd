//! A node as it registers (`POST /v1/nodes`) and as the registry keeps it,
//! with the checks a registration must pass: each names the field at fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an agent (or an operator) sends to register a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub id: String,
    pub arch: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Resources the node offers, e.g. `{"cpu_millis": 4000, "memory_mib": 2048}`.
    #[serde(default)]
    pub capacity: BTreeMap<String, u64>,
    /// A stable machine identity (e.g. /etc/machine-id): a registration
    /// under an existing id with a different one is a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

/// A registered node, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Node {
    #[serde(flatten)]
    pub reg: Registration,
    pub registered_ms: u64,
    pub updated_ms: u64,
    /// The topology revision of the node's last change.
    pub revision: u64,
}

/// Limits from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_labels: usize,
    pub max_label_bytes: usize,
}

/// Most capacity entries a node may declare.
const MAX_CAPACITY: usize = 32;

impl Registration {
    pub fn check(&self, limits: Limits) -> Result<(), String> {
        check_id(&self.id)?;
        if self.arch.is_empty()
            || self.arch.len() > 32
            || !self.arch.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("arch {:?}: 1 to 32 of a-z, 0-9 and _ (e.g. arm64, amd64, riscv64)", self.arch));
        }
        if self.labels.len() > limits.max_labels {
            return Err(format!("labels: {} of them, at most {}", self.labels.len(), limits.max_labels));
        }
        for (k, v) in &self.labels {
            check_key("label", k, limits.max_label_bytes)?;
            if v.len() > limits.max_label_bytes || v.chars().any(char::is_control) {
                return Err(format!(
                    "label {k}: the value is over {} bytes or has control characters",
                    limits.max_label_bytes
                ));
            }
        }
        if self.capacity.len() > MAX_CAPACITY {
            return Err(format!("capacity: {} entries, at most {MAX_CAPACITY}", self.capacity.len()));
        }
        for k in self.capacity.keys() {
            check_key("capacity", k, 64)?;
        }
        if let Some(m) = &self.machine_id
            && (m.is_empty() || m.len() > 128 || m.chars().any(char::is_control))
        {
            return Err("machine_id: 1 to 128 printable characters".into());
        }
        Ok(())
    }

    /// Why registering `self` over `existing` is refused: it names another
    /// machine, or the same id on another architecture.
    pub fn conflict(&self, existing: &Registration) -> Option<String> {
        if let (Some(a), Some(b)) = (&self.machine_id, &existing.machine_id)
            && a != b
        {
            return Some(format!("node {} is registered by another machine", self.id));
        }
        (self.arch != existing.arch)
            .then(|| format!("node {} is registered as {}, not {}", self.id, existing.arch, self.arch))
    }
}

/// Node ids: 1 to 63 of a-z, 0-9, '-', '.', '_', starting and ending with
/// a letter or digit (they appear in URLs and SPIFFE IDs).
pub fn check_id(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_');
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if b.len() > 63 || !edge(b.first()) || !edge(b.last()) || !b.iter().all(inner) {
        return Err(format!(
            "id {id:?}: 1 to 63 of a-z, 0-9, '-', '.' and '_', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_key(what: &str, k: &str, max: usize) -> Result<(), String> {
    if k.is_empty()
        || k.len() > max
        || !k.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'/'))
    {
        return Err(format!("{what} key {k:?}: 1 to {max} of A-Z, a-z, 0-9, '-', '.', '_' and '/'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_labels: 4, max_label_bytes: 16 };

    fn reg(id: &str) -> Registration {
        Registration {
            id: id.into(),
            arch: "arm64".into(),
            labels: BTreeMap::from([("site".into(), "plant-3".into())]),
            capacity: BTreeMap::from([("cpu_millis".into(), 4000)]),
            machine_id: Some("m1".into()),
        }
    }

    #[test]
    fn registrations_are_checked_field_by_field() {
        assert_eq!(reg("sensor-01").check(LIMITS), Ok(()));
        for bad in ["", "-x", "x-", "UPPER", "a/b", &"x".repeat(64)] {
            assert!(reg(bad).check(LIMITS).unwrap_err().starts_with("id "), "{bad}");
        }
        let mut r = reg("n1");
        r.labels = (0..5).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(r.check(LIMITS).unwrap_err().contains("at most 4"));
        r.labels = BTreeMap::from([("ok".into(), "x".repeat(17))]);
        assert!(r.check(LIMITS).unwrap_err().contains("label ok"));
        r.labels = BTreeMap::from([("bad key".into(), "v".into())]);
        assert!(r.check(LIMITS).unwrap_err().contains("label key"));
        let r = Registration { arch: "ARM".into(), ..reg("n1") };
        assert!(r.check(LIMITS).unwrap_err().starts_with("arch"));
        let unknown: Result<Registration, _> = serde_json::from_str(r#"{"id":"a","arch":"arm64","colour":"red"}"#);
        assert!(unknown.unwrap_err().to_string().contains("colour"));
    }

    #[test]
    fn another_machine_or_architecture_under_the_same_id_conflicts() {
        let a = reg("n1");
        assert_eq!(a.conflict(&a), None);
        let moved = Registration { labels: BTreeMap::new(), ..a.clone() };
        assert_eq!(moved.conflict(&a), None, "labels may change");
        assert!(Registration { machine_id: Some("m2".into()), ..a.clone() }.conflict(&a).is_some());
        assert!(Registration { arch: "amd64".into(), ..a.clone() }.conflict(&a).is_some());
        assert_eq!(Registration { machine_id: None, ..a.clone() }.conflict(&a), None);
    }
}
