//! Refusals as RFC 9457 problem documents (application/problem+json): the
//! status, a title, the detail, and for validation failures every failing
//! parameter or body location as a JSON pointer.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

/// One refusal; `reason` labels the rejection metric.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
    /// `{"in", "pointer", "detail"}` per failing location.
    pub errors: Vec<Value>,
    /// The Allow header of a 405.
    pub allow: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, reason: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, reason, detail: detail.into(), errors: Vec::new(), allow: None }
    }

    /// A 400 listing `errors`; the detail is the first one's.
    pub fn invalid(errors: Vec<Value>) -> Problem {
        let detail = errors
            .first()
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e["in"].as_str().unwrap_or(""),
                    e["pointer"].as_str().unwrap_or(""),
                    e["detail"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        Problem { status: StatusCode::BAD_REQUEST, reason: "invalid_request", detail, errors, allow: None }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = Value::Array(self.errors.clone());
        }
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/problem+json"));
        if let Some(allow) = self.allow.as_deref().and_then(|a| http::HeaderValue::from_str(a).ok()) {
            headers.insert(http::header::ALLOW, allow);
        }
        resp
    }
}
