//! A request checked against its operation before it reaches the upstream:
//! path, query, header and cookie parameters read as their schema's type
//! and validated, then the body's media type and, for JSON, its schema.
//! Every failure names its location as a JSON pointer (`/query/limit`,
//! `/body/items/0/name`), at most `MAX_ERRORS` of them.

use std::borrow::Cow;

use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::openapi::{Kind, Location, Operation, Param, ScalarKind, is_json};
use super::problem::Problem;

const MAX_ERRORS: usize = 10;

/// Checks a request's parameters and body against `op`.
pub fn check(
    op: &Operation,
    path_params: &[(&str, Cow<'_, str>)],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Problem> {
    // Borrowed where nothing was percent-encoded: a valid request costs
    // no allocation per parameter here.
    let query: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(query.unwrap_or("").as_bytes()).collect();
    let cookies = cookies(headers);
    let mut errors = Vec::new();
    for p in &op.params {
        let raw: Vec<&str> = match p.location {
            Location::Path => path_params.iter().filter(|(n, _)| *n == p.name).map(|(_, v)| v.as_ref()).collect(),
            Location::Query => query.iter().filter(|(n, _)| *n == p.name).map(|(_, v)| v.as_ref()).collect(),
            Location::Header => headers.get_all(p.name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect(),
            Location::Cookie => cookies.iter().filter(|(n, _)| *n == p.name).map(|(_, v)| *v).collect(),
        };
        let pointer = || format!("/{}", p.name.replace('~', "~0").replace('/', "~1"));
        if raw.is_empty() {
            if p.required {
                errors
                    .push(json!({"in": p.location.as_str(), "pointer": pointer(), "detail": "required, and missing"}));
            }
            continue;
        }
        let value = read_as(p, &raw);
        if let Some(schema) = p.schema.as_ref().filter(|s| !s.is_valid(&value)) {
            for e in schema.iter_errors(&value).take(MAX_ERRORS) {
                errors.push(json!({"in": p.location.as_str(), "pointer": format!("{}{}", pointer(), e.instance_path()), "detail": e.to_string()}));
            }
        }
    }
    if let Some(spec) = &op.body {
        check_body(spec, headers, body, &mut errors)?;
    }
    errors.truncate(MAX_ERRORS);
    if errors.is_empty() { Ok(()) } else { Err(Problem::invalid(errors)) }
}

fn check_body(
    spec: &super::openapi::RequestBody,
    headers: &HeaderMap,
    body: &[u8],
    errors: &mut Vec<Value>,
) -> Result<(), Problem> {
    if body.is_empty() {
        if spec.required {
            errors.push(json!({"in": "body", "pointer": "", "detail": "a request body is required"}));
        }
        return Ok(());
    }
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mt = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let wildcard = format!("{}/*", mt.split('/').next().unwrap_or(""));
    let media = spec
        .media
        .iter()
        .find(|(m, _)| *m == mt)
        .or_else(|| spec.media.iter().find(|(m, _)| *m == wildcard))
        .or_else(|| spec.media.iter().find(|(m, _)| m == "*/*"));
    let Some((_, schema)) = media else {
        let offered: Vec<&str> = spec.media.iter().map(|(m, _)| m.as_str()).collect();
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type {content_type:?} is not one of {}", offered.join(", ")),
        ));
    };
    if let (Some(schema), true) = (schema, is_json(&mt)) {
        match serde_json::from_slice::<Value>(body) {
            Err(e) => errors.push(json!({"in": "body", "pointer": "", "detail": format!("not valid JSON: {e}")})),
            Ok(value) if schema.is_valid(&value) => {}
            Ok(value) => {
                for e in schema.iter_errors(&value).take(MAX_ERRORS) {
                    errors
                        .push(json!({"in": "body", "pointer": e.instance_path().to_string(), "detail": e.to_string()}));
                }
            }
        }
    }
    Ok(())
}

/// A parameter's text read as its schema's type; text that does not read
/// stays a string, so the schema names the mismatch.
fn read_as(p: &Param, raw: &[&str]) -> Value {
    match p.kind {
        Kind::Array(item) => {
            // form style with explode (the query and cookie default): one
            // value per repetition; otherwise comma-separated.
            let split = !(p.explode && matches!(p.location, Location::Query | Location::Cookie));
            let parts: Vec<&str> = raw
                .iter()
                .flat_map(|r| if split { r.split(',').map(str::trim).collect::<Vec<_>>() } else { vec![*r] })
                .collect();
            Value::Array(parts.into_iter().map(|s| scalar(item, s)).collect())
        }
        Kind::String => Value::String(raw[0].to_owned()),
        Kind::Integer => scalar(ScalarKind::Integer, raw[0]),
        Kind::Number => scalar(ScalarKind::Number, raw[0]),
        Kind::Boolean => scalar(ScalarKind::Boolean, raw[0]),
    }
}

fn scalar(kind: ScalarKind, s: &str) -> Value {
    let parsed = match kind {
        ScalarKind::String => None,
        ScalarKind::Integer => s.parse::<i64>().ok().map(Value::from),
        ScalarKind::Number => s.parse::<f64>().ok().and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        ScalarKind::Boolean => match s {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
    };
    parsed.unwrap_or_else(|| Value::String(s.to_owned()))
}

/// `Cookie: a=1; b=2` as pairs.
fn cookies(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .collect()
}
