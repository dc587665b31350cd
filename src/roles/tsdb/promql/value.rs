//! PromQL values: label sets, samples, series, and the four result types.

use std::sync::{Arc, OnceLock};

/// A label set, sorted by name; unlike a stored series it may lack a name.
/// Shared, so handing a series' labels to every step of a range query is a
/// reference count, and dropping the name is computed once per series.
#[derive(Clone, Default)]
pub struct Metric(Arc<MetricInner>);

#[derive(Default)]
struct MetricInner {
    labels: Vec<(String, String)>,
    unnamed: OnceLock<Metric>,
    /// The first `by`/`without` projection asked for: every step of an
    /// aggregation asks the same one.
    projected: OnceLock<(promql_parser::parser::LabelModifier, Metric)>,
}

impl PartialEq for Metric {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.labels() == other.labels()
    }
}

impl Eq for Metric {}

impl std::hash::Hash for Metric {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.labels().hash(state);
    }
}

impl PartialOrd for Metric {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Metric {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.labels().cmp(other.labels())
    }
}

impl std::fmt::Debug for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Metric").field(&self.labels()).finish()
    }
}

pub const NAME: &str = "__name__";

impl Metric {
    /// A metric from label pairs, sorted here.
    pub fn new(mut labels: Vec<(String, String)>) -> Metric {
        labels.sort();
        Metric(Arc::new(MetricInner { labels, unnamed: OnceLock::new(), projected: OnceLock::new() }))
    }

    pub fn labels(&self) -> &[(String, String)] {
        &self.0.labels
    }

    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Metric {
        Metric::new(pairs.map(|(a, b)| (a.to_owned(), b.to_owned())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels().iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn filtered(&self, keep: impl Fn(&str) -> bool) -> Metric {
        Metric::new(self.labels().iter().filter(|(n, _)| keep(n)).cloned().collect())
    }

    /// The same labels without `__name__`, computed once per metric.
    pub fn without_name(&self) -> Metric {
        if self.get(NAME).is_none() {
            return self.clone();
        }
        self.0.unnamed.get_or_init(|| self.filtered(|n| n != NAME)).clone()
    }

    /// Sets a label; an empty value removes it.
    pub fn set(&mut self, name: &str, value: &str) {
        let mut labels: Vec<(String, String)> = self.labels().iter().filter(|(n, _)| n != name).cloned().collect();
        if !value.is_empty() {
            labels.push((name.to_owned(), value.to_owned()));
        }
        *self = Metric::new(labels);
    }

    pub fn keep(&self, names: &[String]) -> Metric {
        self.filtered(|n| names.iter().any(|k| k == n))
    }

    pub fn remove(&self, names: &[String]) -> Metric {
        self.filtered(|n| !names.iter().any(|k| k == n))
    }

    /// The labels `by`/`on` keep, or those `without`/`ignoring` leave (the
    /// metric name always goes then).
    pub fn project(&self, modifier: &promql_parser::parser::LabelModifier) -> Metric {
        self.project_interned(modifier, &|m| m)
    }

    /// `project`, remembered for this metric (every step of an aggregation
    /// asks the same), the result passed through `intern` once.
    pub fn project_interned(
        &self,
        modifier: &promql_parser::parser::LabelModifier,
        intern: &dyn Fn(Metric) -> Metric,
    ) -> Metric {
        let (k, m) = self.0.projected.get_or_init(|| (modifier.clone(), intern(self.project_now(modifier))));
        if k == modifier { m.clone() } else { intern(self.project_now(modifier)) }
    }

    /// Identity of this shared label set: equal for clones of one metric.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    fn project_now(&self, modifier: &promql_parser::parser::LabelModifier) -> Metric {
        Metric::new(self.projected(modifier).cloned().collect())
    }

    /// The labels `project` keeps, borrowed.
    pub fn projected<'m>(
        &'m self,
        modifier: &'m promql_parser::parser::LabelModifier,
    ) -> impl Iterator<Item = &'m (String, String)> + 'm {
        use promql_parser::parser::LabelModifier;
        self.labels().iter().filter(move |(n, _)| match modifier {
            LabelModifier::Include(l) => l.labels.iter().any(|k| k == n),
            LabelModifier::Exclude(l) => n != NAME && !l.labels.iter().any(|k| k == n),
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: Metric,
    pub v: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: Metric,
    /// (ms, value), oldest first.
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Prometheus's stale marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// A float as the Prometheus API writes it.
pub fn format_value(v: f64) -> String {
    ApiFloat(v).to_string()
}

/// A float in the Prometheus API's text (`NaN`, `+Inf`, `-Inf`, or the
/// shortest decimal that reads back the same).
pub struct ApiFloat(pub f64);

impl std::fmt::Display for ApiFloat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            f64::INFINITY => f.write_str("+Inf"),
            f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

impl serde::Serialize for ApiFloat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A millisecond timestamp as API seconds: whole seconds as an integer.
pub struct ApiTime(pub i64);

impl serde::Serialize for ApiTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        if t % 1000 == 0 { s.serialize_i64(t / 1000) } else { s.serialize_f64(t as f64 / 1000.0) }
    }
}

/// A millisecond timestamp as API seconds.
pub fn format_time(t: i64) -> serde_json::Value {
    serde_json::to_value(ApiTime(t)).unwrap_or_default()
}

impl serde::Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.labels().iter().map(|(k, v)| (k, v)))
    }
}
