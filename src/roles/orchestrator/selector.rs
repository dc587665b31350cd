//! Label selectors, as Kubernetes writes them: `site=plant-3,tier in
//! (edge,gateway),!legacy` — requirements joined by commas, all of which
//! must hold. `key=v` (or `==`), `key!=v`, `key in (a,b)`, `key notin
//! (a,b)`, `key` (present) and `!key` (absent). Besides a node's labels,
//! `node.arch` and `node.id` select on its architecture and id.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    Absent,
}

/// A parsed selector; the empty selector matches every node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<(String, Op)>,
}

/// Most requirements in one selector.
const MAX_REQUIREMENTS: usize = 32;

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for part in split_top(text)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                return Err(format!("selector {text:?}: an empty requirement"));
            }
            requirements.push(requirement(part).map_err(|e| format!("selector {text:?}: {e}"))?);
            if requirements.len() > MAX_REQUIREMENTS {
                return Err(format!("selector {text:?}: more than {MAX_REQUIREMENTS} requirements"));
            }
        }
        Ok(Selector { requirements })
    }

    /// Whether a node with these labels, architecture and id is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>, arch: &str, id: &str) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = match key.as_str() {
                "node.arch" => Some(arch),
                "node.id" => Some(id),
                k => labels.get(k).map(String::as_str),
            };
            match op {
                Op::In(vs) => value.is_some_and(|v| vs.iter().any(|x| x == v)),
                Op::NotIn(vs) => value.is_none_or(|v| vs.iter().all(|x| x != v)),
                Op::Exists => value.is_some(),
                Op::Absent => value.is_none(),
            }
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top(text: &str) -> Result<Vec<&str>, String> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("selector {text:?}: unbalanced or nested parentheses at byte {i}"));
        }
    }
    if depth != 0 {
        return Err(format!("selector {text:?}: an unclosed parenthesis"));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn requirement(part: &str) -> Result<(String, Op), String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok((key_of(key.trim())?, Op::Absent));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok((key_of(k.trim())?, Op::NotIn(vec![value_of(v.trim())?])));
    }
    if let Some((k, v)) = part.split_once('=') {
        let v = v.strip_prefix('=').unwrap_or(v);
        return Ok((key_of(k.trim())?, Op::In(vec![value_of(v.trim())?])));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => Ok((key_of(key)?, Op::Exists)),
        [key, rest] => {
            let rest = rest.trim();
            let (negated, list) = if let Some(l) = rest.strip_prefix("notin") {
                (true, l)
            } else if let Some(l) = rest.strip_prefix("in") {
                (false, l)
            } else {
                return Err(format!(
                    "{part:?}: expected key=value, key!=value, key in (…), key notin (…), key or !key"
                ));
            };
            let inner = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: the values go in parentheses"))?;
            let values = inner.split(',').map(|v| value_of(v.trim())).collect::<Result<Vec<_>, _>>()?;
            let key = key_of(key)?;
            Ok((key, if negated { Op::NotIn(values) } else { Op::In(values) }))
        }
        _ => Err(format!("{part:?}: not a requirement")),
    }
}

fn key_of(k: &str) -> Result<String, String> {
    let ok = !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok { Ok(k.to_owned()) } else { Err(format!("key {k:?}: 1 to 128 of letters, digits and ._-/")) }
}

fn value_of(v: &str) -> Result<String, String> {
    let ok = v.len() <= 256 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b));
    if ok { Ok(v.to_owned()) } else { Err(format!("value {v:?}: at most 256 of letters, digits and ._-/:")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn requirements_all_hold() {
        let s = Selector::parse("site=plant-3, tier in (edge,gateway),!legacy,node.arch!=riscv64").unwrap();
        assert!(s.matches(&labels(&[("site", "plant-3"), ("tier", "edge")]), "arm64", "n1"));
        assert!(!s.matches(&labels(&[("site", "plant-3"), ("tier", "core")]), "arm64", "n1"));
        assert!(!s.matches(&labels(&[("site", "plant-3"), ("tier", "edge"), ("legacy", "")]), "arm64", "n1"));
        assert!(!s.matches(&labels(&[("site", "plant-3"), ("tier", "edge")]), "riscv64", "n1"));
        let s = Selector::parse("gpu,zone notin (a, b),node.id==n7").unwrap();
        assert!(s.matches(&labels(&[("gpu", "1")]), "amd64", "n7"));
        assert!(!s.matches(&labels(&[("gpu", "1"), ("zone", "b")]), "amd64", "n7"));
        assert!(Selector::parse("").unwrap().matches(&labels(&[]), "x", "y"));
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for bad in ["a=b,,c", "tier in edge", "tier in ((a))", "tier in (a", "a b c", "=x", "k=v v", "a=b)"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
