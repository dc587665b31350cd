//! Bearer-token authentication for HTTP listeners, the same for the admin
//! service and every role: deny by default, "none" only where the config
//! says so and only on loopback, tokens compared in constant time and never
//! logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use crate::core::exit::ConfigProblem;
use crate::core::httpserve::{FullResponse, respond};

/// How a listener authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: accepted on loopback addresses only.
    None,
    /// `Authorization: Bearer <token>`, the token read from a file.
    Bearer,
}

/// Why an auth setting is refused, or None when it is acceptable. A
/// listener whose TLS requires client certificates (mutual TLS) is
/// authenticated by them, so it may use auth = "none" on any address.
pub fn problem(mode: AuthMode, listen: SocketAddr, token_file: Option<&Path>, client_certs: bool) -> Option<String> {
    match (mode, token_file) {
        (AuthMode::None, _) if !listen.ip().is_loopback() && !client_certs => Some(format!(
            "{listen} is not a loopback address; set auth = \"bearer\" with a token_file, or require client \
             certificates with tls.client_ca_file, to expose it"
        )),
        (AuthMode::Bearer, None) => Some("auth = \"bearer\" needs token_file".into()),
        _ => None,
    }
}

/// A loaded authentication check.
#[derive(Clone)]
pub struct Auth {
    token: Option<String>,
}

impl Auth {
    /// Reads the token file when `mode` is bearer. `key` names the config key
    /// in errors (e.g. "admin.token_file").
    pub fn load(mode: AuthMode, token_file: Option<&PathBuf>, key: &str) -> anyhow::Result<Self> {
        let token = match (mode, token_file) {
            (AuthMode::Bearer, Some(path)) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| ConfigProblem(format!("{key} {}: {e}", path.display())))?
                    .trim()
                    .to_owned();
                if token.len() < 16 {
                    return Err(ConfigProblem(format!(
                        "{key} {}: token is shorter than 16 characters",
                        path.display()
                    ))
                    .into());
                }
                Some(token)
            }
            (AuthMode::Bearer, None) => {
                return Err(ConfigProblem(format!("{key}: auth = \"bearer\" needs a token file")).into());
            }
            (AuthMode::None, _) => None,
        };
        Ok(Self { token })
    }

    /// None when the request may pass; else the 401 answer to send.
    pub fn check<B>(&self, req: &Request<B>, role: &'static str) -> Option<FullResponse> {
        let expected = self.token.as_deref()?;
        let given = bearer(req);
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            return None;
        }
        metrics::counter!("edgebox_unauthorized_requests_total", "edgebox_role" => role).increment(1);
        let mut r = respond("", StatusCode::UNAUTHORIZED, "text/plain", "missing or wrong bearer token\n");
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        Some(r)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// Compares without an early exit, so timing does not reveal the prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn unauthenticated_listeners_stay_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(problem(AuthMode::None, lo, None, false).is_none());
        assert!(problem(AuthMode::None, any, None, false).unwrap().contains("not a loopback"));
        assert!(problem(AuthMode::None, any, None, true).is_none());
        assert!(problem(AuthMode::Bearer, any, None, false).unwrap().contains("token_file"));
        assert!(problem(AuthMode::Bearer, any, Some(Path::new("/t")), false).is_none());
    }

    #[test]
    fn requests_need_the_exact_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "0123456789abcdef-token\n").unwrap();
        let auth = Auth::load(AuthMode::Bearer, Some(&f), "x.token_file").unwrap();
        let req = |h: Option<&str>| {
            let mut b = Request::get("/");
            if let Some(h) = h {
                b = b.header("authorization", h);
            }
            b.body(()).unwrap()
        };
        assert!(auth.check(&req(Some("Bearer 0123456789abcdef-token")), "t").is_none());
        assert!(auth.check(&req(Some("Bearer 0123456789abcdef-tokeN")), "t").is_some());
        assert!(auth.check(&req(None), "t").is_some());
        std::fs::write(&f, "short").unwrap();
        assert!(Auth::load(AuthMode::Bearer, Some(&f), "x.token_file").is_err());
        assert!(Auth::load(AuthMode::None, None, "x").unwrap().check(&req(None), "t").is_none());
    }
}
