//! PromQL: parsing with the promql-parser crate, planning which series and
//! time windows each selector needs, and evaluating instant and range
//! queries over data fetched once per selector.
//!
//! Semantics follow Prometheus 2.42 (the reference the tests compare with):
//! a 5-minute lookback for instant selectors, closed `[t - range, t]` range
//! windows, stale markers ending series, extrapolated `rate`/`increase`/
//! `delta`, metric names dropped by functions and arithmetic. Subqueries and
//! native histograms are not supported and answer 422 naming what was asked.

mod aggregate;
mod binary;

mod functions;
mod value;

pub mod eval;
pub use aggregate::quantile;
pub use eval::{Evaluator, Selection, plan};
pub use value::{ApiFloat, ApiTime, Metric, Sample, Series, Value, format_time, format_value, is_stale};

/// How far back an instant selector looks for a sample (Prometheus's default).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// Longest query text accepted.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Deepest parenthesis nesting accepted (guards the recursive parser).
pub const MAX_NESTING: usize = 128;

/// Why a query failed: bad input (400) or a feature this engine lacks (422).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    pub unsupported: bool,
    pub message: String,
}

impl QueryError {
    pub fn bad(message: impl Into<String>) -> Self {
        Self { unsupported: false, message: message.into() }
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self { unsupported: true, message: message.into() }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parses a query after checking its size and nesting.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError::bad(format!("query is {} bytes, over the {MAX_QUERY_BYTES}-byte limit", query.len())));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    for b in query.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(QueryError::bad(format!("query nests {deepest} levels deep, over the limit of {MAX_NESTING}")));
    }
    let query = with_renamed_functions(query);
    promql_parser::parser::parse(&query).map_err(|e| QueryError::bad(format!("parse error: {e}")))
}

/// Prometheus 2.x's `holt_winters` is `double_exponential_smoothing` to the
/// parser (the Prometheus 3 name): renamed where it is a function call,
/// outside string literals.
fn with_renamed_functions(query: &str) -> std::borrow::Cow<'_, str> {
    const OLD: &str = "holt_winters";
    if !query.contains(OLD) {
        return query.into();
    }
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len() + 32);
    let (mut i, mut quote) = (0, None::<u8>);
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' && i + 1 < bytes.len() => {
                // An escape: keep it and the character it escapes.
                out.push('\\');
                i += 1;
            }
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if matches!(b, b'"' | b'\'' | b'`') => quote = Some(b),
            None if query[i..].starts_with(OLD)
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
                && query[i + OLD.len()..].trim_start().starts_with('(') =>
            {
                out.push_str("double_exponential_smoothing");
                i += OLD.len();
                continue;
            }
            None => {}
        }
        let ch = query[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out.into()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod rename_tests {
    #[test]
    fn holt_winters_is_renamed_only_where_it_is_called() {
        let q = r#"holt_winters (x{a="holt_winters(", b="\"holt_winters("}[5m], 0.1, 0.2) + my_holt_winters(y)"#;
        assert_eq!(
            super::with_renamed_functions(q),
            r#"double_exponential_smoothing (x{a="holt_winters(", b="\"holt_winters("}[5m], 0.1, 0.2) + my_holt_winters(y)"#
        );
        assert!(super::parse("holt_winters(x[5m], 0.5, 0.5)").is_ok());
    }
}
