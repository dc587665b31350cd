//! PromQL values: label sets, samples, series, and the four result types.

/// A label set, sorted by name; unlike a stored series it may lack a name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric(pub Vec<(String, String)>);

pub const NAME: &str = "__name__";

impl Metric {
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Metric {
        let mut v: Vec<(String, String)> = pairs.map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
        v.sort();
        Metric(v)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn without_name(&self) -> Metric {
        Metric(self.0.iter().filter(|(n, _)| n != NAME).cloned().collect())
    }

    /// Sets a label; an empty value removes it.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.0.push((name.to_owned(), value.to_owned()));
            self.0.sort();
        }
    }

    pub fn keep(&self, names: &[String]) -> Metric {
        Metric(self.0.iter().filter(|(n, _)| names.contains(n)).cloned().collect())
    }

    pub fn remove(&self, names: &[String]) -> Metric {
        Metric(self.0.iter().filter(|(n, _)| !names.contains(n)).cloned().collect())
    }

    /// The labels `by`/`on` keep, or those `without`/`ignoring` leave (the
    /// metric name always goes then).
    pub fn project(&self, modifier: &promql_parser::parser::LabelModifier) -> Metric {
        match modifier {
            promql_parser::parser::LabelModifier::Include(l) => self.keep(&l.labels),
            promql_parser::parser::LabelModifier::Exclude(l) => {
                Metric(self.0.iter().filter(|(n, _)| n != NAME && !l.labels.contains(n)).cloned().collect())
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
        )
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
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A millisecond timestamp as API seconds.
pub fn format_time(t: i64) -> serde_json::Value {
    if t % 1000 == 0 { serde_json::json!(t / 1000) } else { serde_json::json!(t as f64 / 1000.0) }
}
