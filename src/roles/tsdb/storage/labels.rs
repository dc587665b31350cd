//! Label sets: a series' identity. Sorted by name, `__name__` included, with
//! a canonical byte encoding used as the series key in the store.

use std::fmt;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Stored compactly (one string and its boundaries, two allocations), as
/// the index holds one per series.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    /// Names and values back to back: n0 v0 n1 v1 …
    text: Box<str>,
    /// End offset in `text` of each name and value.
    ends: Box<[u32]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelsError {
    #[error("label `{0}` appears twice")]
    Duplicate(String),
    #[error("label name `{0}` is not [a-zA-Z_][a-zA-Z0-9_]*")]
    BadName(String),
    #[error("metric name `{0}` is not [a-zA-Z_:][a-zA-Z0-9_:]*")]
    BadMetricName(String),
    #[error("no metric name (`__name__`)")]
    NoMetricName,
    #[error("stored series key is damaged at byte {0}")]
    Damaged(usize),
}

pub fn valid_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

pub fn valid_metric_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Replaces characters Prometheus does not allow in names with `_` (as
/// VictoriaMetrics does for Influx tags and measurements).
pub fn sanitize_name(n: &str, metric: bool) -> String {
    let mut out: String = n
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':') { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

impl Labels {
    /// Builds a label set; empty values are dropped (Prometheus treats an
    /// empty label as absent).
    pub fn new(mut pairs: Vec<(String, String)>) -> Result<Labels, LabelsError> {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort();
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(LabelsError::Duplicate(w[0].0.clone()));
        }
        for (n, v) in &pairs {
            if n == METRIC_NAME {
                if !valid_metric_name(v) {
                    return Err(LabelsError::BadMetricName(v.clone()));
                }
            } else if !valid_label_name(n) {
                return Err(LabelsError::BadName(n.clone()));
            }
        }
        let labels = Labels::from_sorted(&pairs);
        labels.metric().ok_or(LabelsError::NoMetricName)?;
        Ok(labels)
    }

    fn from_sorted(pairs: &[(String, String)]) -> Labels {
        let mut text = String::with_capacity(pairs.iter().map(|(n, v)| n.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(pairs.len() * 2);
        for (n, v) in pairs {
            text.push_str(n);
            ends.push(text.len() as u32);
            text.push_str(v);
            ends.push(text.len() as u32);
        }
        Labels { text: text.into_boxed_str(), ends: ends.into_boxed_slice() }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn metric(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.part(2 * mid).cmp(name) {
                std::cmp::Ordering::Equal => return Some(self.part(2 * mid + 1)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.len()).map(|i| (self.part(2 * i), self.part(2 * i + 1)))
    }

    /// Canonical encoding: per label, u32 LE name length, name, u32 LE value
    /// length, value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + self.ends.len() * 4);
        for (n, v) in self.iter() {
            for s in [n, v] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<Labels, LabelsError> {
        let total = b.len();
        let mut pairs = Vec::new();
        let take = |b: &mut &[u8]| -> Result<String, LabelsError> {
            let at = total - b.len();
            let len = b
                .get(..4)
                .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
                .ok_or(LabelsError::Damaged(at))?;
            let s = b.get(4..4 + len).ok_or(LabelsError::Damaged(at))?;
            let s = String::from_utf8(s.to_vec()).map_err(|_| LabelsError::Damaged(at))?;
            *b = &b[4 + len..];
            Ok(s)
        };
        while !b.is_empty() {
            let n = take(&mut b)?;
            let v = take(&mut b)?;
            pairs.push((n, v));
        }
        Ok(Labels::from_sorted(&pairs))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric().unwrap_or(""))?;
        let rest: Vec<String> =
            self.iter().filter(|(n, _)| *n != METRIC_NAME).map(|(n, v)| format!("{n}={v:?}")).collect();
        write!(f, "{{{}}}", rest.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Result<Labels, LabelsError> {
        Labels::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
    }

    #[test]
    fn canonical_order_and_round_trip() {
        let a = l(&[("job", "node"), ("__name__", "up"), ("instance", "a:9100")]).unwrap();
        let b = l(&[("instance", "a:9100"), ("job", "node"), ("__name__", "up")]).unwrap();
        assert_eq!(a.encode(), b.encode());
        assert_eq!(Labels::decode(&a.encode()).unwrap(), a);
        assert_eq!(a.to_string(), r#"up{instance="a:9100", job="node"}"#);
        assert_eq!(a.get("job"), Some("node"));
    }

    #[test]
    fn invalid_sets_are_refused() {
        assert_eq!(l(&[("__name__", "up"), ("a", "1"), ("a", "2")]), Err(LabelsError::Duplicate("a".into())));
        assert_eq!(l(&[("__name__", "up"), ("1a", "x")]), Err(LabelsError::BadName("1a".into())));
        assert_eq!(l(&[("__name__", "9up")]), Err(LabelsError::BadMetricName("9up".into())));
        assert_eq!(l(&[("job", "x")]), Err(LabelsError::NoMetricName));
        assert!(l(&[("__name__", "up"), ("empty", "")]).unwrap().get("empty").is_none());
        assert!(Labels::decode(&[1, 0, 0]).is_err());
        assert!(Labels::decode(&[9, 0, 0, 0, b'a']).is_err());
    }

    #[test]
    fn sanitizing_makes_valid_names() {
        assert_eq!(sanitize_name("cpu-usage.idle", true), "cpu_usage_idle");
        assert_eq!(sanitize_name("a:b", true), "a:b");
        assert_eq!(sanitize_name("a:b", false), "a_b");
        assert_eq!(sanitize_name("9lives", false), "_9lives");
        assert!(valid_label_name(&sanitize_name("héllo wörld", false)));
    }
}
