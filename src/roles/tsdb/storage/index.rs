//! The in-memory series index: key → id, id → labels, and postings
//! (label name → value → ids) for the matchers `=`, `!=`, `=~`, `!~`.
//! Rebuilt from `tsdb.series` at start; updated when a series is created.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::labels::{Labels, METRIC_NAME};

/// A label matcher, as PromQL writes them.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

#[derive(Debug, Clone)]
pub enum MatchOp {
    Equal(String),
    NotEqual(String),
    /// Fully anchored, as Prometheus anchors them.
    Regex(regex::Regex),
    NotRegex(regex::Regex),
}

impl Matcher {
    pub fn equal(name: &str, value: &str) -> Self {
        Self { name: name.into(), op: MatchOp::Equal(value.into()) }
    }

    /// Compiles `pattern` anchored at both ends, with a size limit so a
    /// hostile pattern costs bounded memory (the regex crate never
    /// backtracks, so matching time is linear).
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, String> {
        let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regex `{pattern}` for label `{name}`: {e}"))?;
        let op = if negate { MatchOp::NotRegex(re) } else { MatchOp::Regex(re) };
        Ok(Self { name: name.into(), op })
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal(v) => value == v,
            MatchOp::NotEqual(v) => value != v,
            MatchOp::Regex(r) => r.is_match(value),
            MatchOp::NotRegex(r) => !r.is_match(value),
        }
    }

    /// True when the matcher also matches series without the label.
    fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

/// One series as the index knows it.
#[derive(Debug, Clone)]
pub struct SeriesEntry {
    pub labels: Arc<Labels>,
}

/// Ids in creation order, which is id order.
type Postings = Vec<u64>;

#[derive(Debug, Default)]
pub struct Index {
    /// Label-set hash → id; a hash shared by two sets lists the others in
    /// `collisions`. Keeping hashes, not keys, saves a key copy per series.
    by_hash: HashMap<u64, u64>,
    collisions: HashMap<u64, Vec<u64>>,
    series: HashMap<u64, SeriesEntry>,
    postings: HashMap<String, BTreeMap<String, Postings>>,
    per_metric: HashMap<String, usize>,
}

fn hash_of(labels: &Labels) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(labels)
}

impl Index {
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Every series id.
    pub fn ids(&self) -> Vec<u64> {
        self.series.keys().copied().collect()
    }

    pub fn id_of(&self, labels: &Labels) -> Option<u64> {
        let h = hash_of(labels);
        let same = |id: &u64| self.series.get(id).is_some_and(|e| *e.labels == *labels);
        let first = self.by_hash.get(&h)?;
        if same(first) {
            return Some(*first);
        }
        self.collisions.get(&h)?.iter().copied().find(|id| same(id))
    }

    pub fn get(&self, id: u64) -> Option<&SeriesEntry> {
        self.series.get(&id)
    }

    pub fn series_of_metric(&self, metric: &str) -> usize {
        self.per_metric.get(metric).copied().unwrap_or(0)
    }

    /// Adds a series (idempotent).
    pub fn insert(&mut self, id: u64, labels: Labels) {
        if self.series.contains_key(&id) {
            return;
        }
        for (n, v) in labels.iter() {
            let ids = self.postings.entry(n.to_owned()).or_default().entry(v.to_owned()).or_default();
            match ids.last() {
                Some(&last) if last > id => ids.insert(ids.partition_point(|&x| x < id), id),
                _ => ids.push(id),
            }
        }
        if let Some(m) = labels.metric() {
            *self.per_metric.entry(m.to_owned()).or_default() += 1;
        }
        match self.by_hash.entry(hash_of(&labels)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(o) => self.collisions.entry(*o.key()).or_default().push(id),
        }
        self.series.insert(id, SeriesEntry { labels: Arc::new(labels) });
    }

    /// Ids of the series every matcher accepts, in id order. At least one
    /// matcher must not match the empty string (PromQL's rule), which the
    /// query layer checks.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        // Start from the smallest postings list an equality matcher names.
        let seed: Option<(usize, &Postings)> = matchers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match &m.op {
                MatchOp::Equal(v) if !v.is_empty() => {
                    Some((i, self.postings.get(&m.name).and_then(|vals| vals.get(v)).unwrap_or(&EMPTY)))
                }
                _ => None,
            })
            .min_by_key(|(_, ids)| ids.len());
        let accept = |id: &u64, skip: Option<usize>| {
            let Some(e) = self.series.get(id) else { return false };
            matchers.iter().enumerate().all(|(i, m)| Some(i) == skip || m.matches(e.labels.get(&m.name).unwrap_or("")))
        };
        match seed {
            // The seed's own matcher holds for every id its postings list.
            Some((_, ids)) if matchers.len() == 1 => ids.clone(),
            Some((i, ids)) => ids.iter().copied().filter(|id| accept(id, Some(i))).collect(),
            None => {
                // No equality matcher: narrow by a label the query needs
                // present, else scan every series.
                let needed = matchers.iter().find(|m| !m.matches_empty()).map(|m| m.name.as_str());
                let mut ids: Vec<u64> = match needed.and_then(|n| self.postings.get(n)) {
                    Some(vals) => vals.values().flatten().copied().filter(|id| accept(id, None)).collect(),
                    None if needed.is_some() => Vec::new(),
                    None => self.series.keys().copied().filter(|id| accept(id, None)).collect(),
                };
                ids.sort_unstable();
                ids.dedup();
                ids
            }
        }
    }

    /// Every label name, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.postings.keys().cloned().collect();
        names.sort();
        names
    }

    /// Values of one label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.get(name).map(|v| v.keys().cloned().collect()).unwrap_or_default()
    }

    /// Metric names, for `/api/v1/label/__name__/values`.
    pub fn metric_names(&self) -> Vec<String> {
        self.label_values(METRIC_NAME)
    }
}

static EMPTY: Postings = Vec::new();

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap()
    }

    fn index() -> Index {
        let mut ix = Index::default();
        ix.insert(1, labels(&[("__name__", "up"), ("job", "node"), ("instance", "a")]));
        ix.insert(2, labels(&[("__name__", "up"), ("job", "node"), ("instance", "b")]));
        ix.insert(3, labels(&[("__name__", "up"), ("job", "db")]));
        ix.insert(4, labels(&[("__name__", "cpu"), ("job", "node"), ("instance", "a")]));
        ix
    }

    #[test]
    fn all_four_matchers_select_like_prometheus() {
        let ix = index();
        let up = Matcher::equal("__name__", "up");
        assert_eq!(ix.select(std::slice::from_ref(&up)), vec![1, 2, 3]);
        assert_eq!(ix.select(&[up.clone(), Matcher::equal("job", "node")]), vec![1, 2]);
        let ne = Matcher { name: "instance".into(), op: MatchOp::NotEqual("a".into()) };
        assert_eq!(ix.select(&[up.clone(), ne]), vec![2, 3], "absent labels match != as empty");
        assert_eq!(ix.select(&[up.clone(), Matcher::regex("instance", "a|b", false).unwrap()]), vec![1, 2]);
        assert_eq!(ix.select(&[up.clone(), Matcher::regex("instance", "a", true).unwrap()]), vec![2, 3]);
        assert_eq!(ix.select(&[Matcher::regex("job", "no.*", false).unwrap()]), vec![1, 2, 4]);
        assert_eq!(ix.select(&[Matcher::regex("instance", "", false).unwrap(), up]), vec![3]);
        assert!(ix.select(&[Matcher::equal("__name__", "nope")]).is_empty());
        assert!(ix.select(&[Matcher::equal("nolabel", "x")]).is_empty());
    }

    #[test]
    fn regexes_are_anchored_and_bounded() {
        let m = Matcher::regex("a", "b", false).unwrap();
        assert!(m.matches("b") && !m.matches("abc"));
        assert!(Matcher::regex("a", "(", false).unwrap_err().contains("invalid regex"));
        assert!(Matcher::regex("a", "(a{1000}){1000}", false).is_err(), "an exploding pattern must be refused");
    }

    #[test]
    fn label_sets_sharing_a_hash_keep_their_own_ids() {
        let mut ix = index();
        let b = labels(&[("__name__", "up"), ("job", "other")]);
        // Pretend `b` hashes like series 1: the lookup must still tell them apart.
        ix.by_hash.insert(hash_of(&b), 1);
        ix.insert(9, b.clone());
        assert_eq!(ix.id_of(&b), Some(9));
        assert_eq!(ix.id_of(&labels(&[("__name__", "up"), ("job", "node"), ("instance", "a")])), Some(1));
        assert_eq!(ix.id_of(&labels(&[("__name__", "up"), ("job", "none")])), None);
    }

    #[test]
    fn names_values_and_counts() {
        let ix = index();
        assert_eq!(ix.label_names(), vec!["__name__", "instance", "job"]);
        assert_eq!(ix.label_values("job"), vec!["db", "node"]);
        assert_eq!(ix.metric_names(), vec!["cpu", "up"]);
        assert_eq!(ix.series_of_metric("up"), 3);
        assert_eq!(ix.len(), 4);
    }
}
