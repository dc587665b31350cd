//! JSON-lines import and export (`/api/v1/import`, `/api/v1/export`), in
//! the VictoriaMetrics format, for backups and migration:
//! `{"metric":{"__name__":"up","job":"node"},"values":[1,0],"timestamps":[1700000000000,1700000015000]}`

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{Api, ApiError};
use super::params::Params;
use super::query::selectors;
use super::storage::{Incoming, Labels};
use crate::core::httpserve::{FullResponse, respond};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    metric: BTreeMap<String, String>,
    values: Vec<Option<f64>>,
    timestamps: Vec<i64>,
}

/// Every series matching `match[]` in `[start, end]`, one JSON line each.
/// Stale markers and other NaNs are written as null.
pub async fn export_lines(api: &Api, params: &Params) -> Result<String, ApiError> {
    let matchers = params.all("match[]");
    if matchers.is_empty() {
        return Err(ApiError::bad_data("at least one match[] selector is required"));
    }
    let start = params.time("start", i64::MIN).map_err(ApiError::bad_data)?;
    let end = params.time("end", i64::MAX).map_err(ApiError::bad_data)?;
    let ids = selectors(api, &matchers)?;
    let labels: BTreeMap<u64, Arc<Labels>> = ids.iter().cloned().collect();
    let data =
        api.storage.read(ids.iter().map(|(id, _)| *id).collect(), start, end).await.map_err(ApiError::internal)?;
    let mut out = String::new();
    for (id, points) in data {
        if points.is_empty() {
            continue;
        }
        let metric = labels[&id].iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let line = Line {
            metric,
            values: points.iter().map(|p| p.1.is_finite().then_some(p.1)).collect(),
            timestamps: points.iter().map(|p| p.0).collect(),
        };
        out.push_str(&serde_json::to_string(&line).map_err(|e| ApiError::internal(e.into()))?);
        out.push('\n');
    }
    Ok(out)
}

/// Stores JSON lines; answers 204, or 400 naming the bad lines (the good
/// ones are stored).
pub async fn import(api: &Api, body: &[u8], now_ms: i64) -> FullResponse {
    let route = "/api/v1/import";
    let mut samples = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = i + 1;
        let parsed: Line = match serde_json::from_slice(raw) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        if parsed.values.len() != parsed.timestamps.len() {
            problems.push(format!(
                "line {line}: {} values but {} timestamps",
                parsed.values.len(),
                parsed.timestamps.len()
            ));
            continue;
        }
        let labels = match Labels::new(parsed.metric.into_iter().collect()) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        for (v, t) in parsed.values.into_iter().zip(parsed.timestamps) {
            samples.push(Incoming { labels: labels.clone(), t, v: v.unwrap_or(f64::NAN), line });
        }
    }
    let outcome = match api.storage.append(samples, now_ms).await {
        Ok(o) => o,
        Err(e) => {
            let status = match e {
                super::storage::AppendError::Cardinality(_) => StatusCode::TOO_MANY_REQUESTS,
                super::storage::AppendError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return respond(route, status, "text/plain", format!("{e}\n"));
        }
    };
    problems.extend(outcome.rejected.iter().map(|(line, why)| format!("line {line}: {why}")));
    if problems.is_empty() {
        respond(route, StatusCode::NO_CONTENT, "text/plain", "")
    } else {
        problems.truncate(20);
        respond(route, StatusCode::BAD_REQUEST, "text/plain", format!("partial import: {}\n", problems.join("; ")))
    }
}
