//! `[gateway]`: the listener, who may call (SVIDs, JWT-SVIDs), and the
//! services behind it, each described by an OpenAPI 3.1 document.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::tls::{ClientTlsConfig, ServerTlsConfig};

/// The documented default section, printed by `edgebox config default`.
pub const DEFAULT: &str = r#"[gateway]
# The listener callers reach. Without any [[gateway.services]] the gateway
# has nothing to route and does not listen.
listen = "127.0.0.1:8443"
# Largest request body taken, in bytes; larger answers 413. (Request
# headers are limited to 64 KiB for every edgebox listener: 431.)
max_body_bytes = 1048576
# Seconds a client may take to send its request body; slower answers 408.
# (Headers must arrive within 10 s on every edgebox listener.)
body_timeout_s = 30
# The header that colours a request for the canary (its value "canary"),
# propagated upstream with traceparent.
colour_header = "x-edgebox-stage"
# One JSON line per request with the caller's SPIFFE ID: "log" (through
# the process log, target edgebox::gateway::access), "off", or a file
# (buffered, flushed every 250 ms; reopened on SIGUSR1 for logrotate).
access_log = "log"
# How request metrics label the caller: "id" (its SPIFFE ID: one series per
# caller, mind a large fleet), "trust-domain", or "none".
metrics_caller = "id"
# Without TLS client certificates or JWT-SVIDs every caller is anonymous;
# that must be said here, and only for a loopback listener.
allow_anonymous = false
# TLS with SPIFFE identity: the gateway's own SVID, and per trust domain the
# bundle a caller's X.509-SVID must chain to (a caller of one trust domain is
# checked against that domain's bundle only). Files are re-read when they
# change. client_cert_optional lets callers without a certificate through the
# handshake to present a JWT-SVID instead.
# [gateway.tls]
# cert_file = "/etc/edgebox/gateway.pem"
# key_file = "/etc/edgebox/gateway.key"
# spiffe_bundles = { "edge.example" = "/etc/edgebox/edge-bundle.pem" }
# client_cert_optional = false
# JWT-SVIDs (Authorization: Bearer) as the alternative for HTTP callers: the
# audiences this gateway accepts (at least one: the audience is always
# checked) and per trust domain a JWKS file with the signing keys; sub must
# be a SPIFFE ID of that trust domain and exp is required.
# [gateway.jwt]
# audience = ["spiffe://edge.example/gateway"]
# bundles = { "edge.example" = "/etc/edgebox/edge-jwks.json" }
# leeway_s = 30
# One [[gateway.services]] table per upstream service.
# [[gateway.services]]
# Name, unique: in logs and metrics.
# name = "inventory"
# The OpenAPI 3.1 document (JSON or YAML): only its operations are
# reachable; parameters and JSON bodies are validated against its schemas;
# x-edgebox-allow lists the SPIFFE IDs (exact, "spiffe://td/path/*" for a
# path prefix, "*" for any authenticated caller) that may call an operation
# (on the operation, its path item, or the document as the default), and
# x-edgebox-mode = "shadow" on the document only logs denials.
# openapi_file = "/etc/edgebox/inventory.openapi.yaml"
# A policy file (TOML) whose rules override the document's: mode =
# "enforce" | "shadow", and [[rules]] with operation (operationId or
# "GET /path/{template}") and allow.
# policy_file = "/etc/edgebox/inventory.policy.toml"
# The upstream, http:// or https:// (its TLS settings below); the request
# path is appended.
# upstream = "http://127.0.0.1:8080"
# Speak HTTP/2 to it (h2c for http://; ALPN decides for https://). Over
# HTTP/1.1 each caller's connection keeps its own upstream connections;
# over HTTP/2 callers share a pool.
# http2 = false
# Per attempt, the whole upstream exchange.
# timeout_ms = 30000
# Extra attempts for idempotent methods after a connection failure or a
# timeout.
# retries = 1
# TLS to an https:// upstream: its CA, and the gateway's SVID to present.
# [gateway.services.upstream_tls]
# ca_file = "/etc/edgebox/edge-bundle.pem"
# cert_file = "/etc/edgebox/gateway.pem"
# key_file = "/etc/edgebox/gateway.key"
# The canary: requests coloured "canary", or percent of the rest (sticky by
# sticky_header's value, else the caller's SPIFFE ID), go there while it is
# healthy; health_path is checked every health_interval_ms on both upstreams,
# and unhealthy_after failures in a row (checks or requests) take an
# upstream out until a check passes again.
# [gateway.services.canary]
# upstream = "http://127.0.0.1:8081"
# percent = 10
# sticky_header = "x-user"
# health_path = "/healthz"
# health_interval_ms = 2000
# unhealthy_after = 3
"#;

/// The compliance section: the default (no services, no listener).
pub const COMPLIANCE: &str = "[gateway]\n";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub body_timeout_s: u64,
    pub colour_header: String,
    pub access_log: String,
    pub metrics_caller: MetricsCaller,
    pub allow_anonymous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            max_body_bytes: 1 << 20,
            body_timeout_s: 30,
            colour_header: "x-edgebox-stage".into(),
            access_log: "log".into(),
            metrics_caller: MetricsCaller::Id,
            allow_anonymous: false,
            tls: None,
            jwt: None,
            services: Vec::new(),
        }
    }
}

/// The caller label of request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricsCaller {
    Id,
    TrustDomain,
    None,
}

/// JWT-SVID verification.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub audience: Vec<String>,
    /// Trust domain → JWKS file.
    pub bundles: BTreeMap<String, PathBuf>,
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    30
}

/// One upstream service and its API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub openapi_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PathBuf>,
    pub upstream: String,
    #[serde(default)]
    pub http2: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<ClientTlsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_retries() -> u32 {
    1
}

/// Where canary traffic goes and how its health is judged.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    pub upstream: String,
    #[serde(default)]
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
}

fn default_health_interval_ms() -> u64 {
    2000
}
fn default_unhealthy_after() -> u32 {
    3
}

impl GatewayConfig {
    /// Every contradiction, each naming its key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(tls) = &self.tls {
            problems.extend(tls.problem("gateway.tls"));
        }
        let svids = self.tls.as_ref().is_some_and(|t| !t.spiffe_bundles.is_empty());
        if !self.services.is_empty() && !svids && self.jwt.is_none() {
            if !self.allow_anonymous {
                problems.push(
                    "gateway: no caller identity (gateway.tls.spiffe_bundles or [gateway.jwt]); set \
                     allow_anonymous = true to route anonymous callers on a loopback listener"
                        .to_owned(),
                );
            } else if !self.listen.ip().is_loopback() {
                problems
                    .push(format!("gateway.allow_anonymous: only on a loopback listener ({} is not one)", self.listen));
            }
        }
        if let Some(jwt) = &self.jwt {
            if jwt.audience.iter().all(|a| a.trim().is_empty()) {
                problems.push("gateway.jwt.audience: at least one audience (it is always checked)".to_owned());
            }
            if jwt.bundles.is_empty() {
                problems.push("gateway.jwt.bundles: at least one trust domain's JWKS file".to_owned());
            }
        }
        if self.max_body_bytes == 0 || self.body_timeout_s == 0 {
            problems.push("gateway.max_body_bytes and body_timeout_s: must be above 0".to_owned());
        }
        if http::HeaderName::try_from(self.colour_header.as_str()).is_err() {
            problems.push(format!("gateway.colour_header: {:?} is not a header name", self.colour_header));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.services {
            let at = |k: &str| format!("gateway.services.{}.{k}", s.name);
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                problems.push(format!("gateway.services: name {:?} is empty or not unique", s.name));
            }
            for (key, url) in std::iter::once(("upstream", &s.upstream))
                .chain(s.canary.iter().map(|c| ("canary.upstream", &c.upstream)))
            {
                if let Err(e) = upstream_problem(url) {
                    problems.push(format!("{}: {e}", at(key)));
                }
            }
            if s.timeout_ms == 0 {
                problems.push(format!("{}: must be above 0", at("timeout_ms")));
            }
            if let Some(c) = &s.canary {
                if !(0.0..=100.0).contains(&c.percent) {
                    problems.push(format!("{}: between 0 and 100", at("canary.percent")));
                }
                if c.health_path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                    problems.push(format!("{}: a path starting with /", at("canary.health_path")));
                }
                if c.unhealthy_after == 0 || c.health_interval_ms < 100 {
                    problems.push(format!("{}: unhealthy_after ≥ 1, health_interval_ms ≥ 100", at("canary")));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }

    /// Files the gateway reads (other roles may write them).
    pub fn inputs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.tls.iter().flat_map(|t| t.files()).collect();
        for s in &self.services {
            out.push(&s.openapi_file);
            out.extend(s.policy_file.as_deref());
            out.extend(s.upstream_tls.iter().flat_map(|t| t.files()));
        }
        out.extend(self.jwt.iter().flat_map(|j| j.bundles.values().map(PathBuf::as_path)));
        out
    }
}

/// Why an upstream URL is unusable: http(s)://host[:port] with no query.
fn upstream_problem(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?}: http:// or https://")),
    }
    if uri.host().is_none() || uri.query().is_some() {
        return Err(format!("{url:?}: a host, and no query"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_default_equals_the_code_default() {
        let documented: GatewayConfig = crate::core::role::documented_default(DEFAULT, "gateway");
        assert_eq!(documented, GatewayConfig::default());
    }

    #[test]
    fn services_need_an_identity_and_sound_upstreams() {
        let parse = |extra: &str| {
            let text = format!(
                "{extra}\n[[services]]\nname = \"a\"\nopenapi_file = \"/a.yaml\"\nupstream = \"http://127.0.0.1:1\"\n"
            );
            toml::from_str::<GatewayConfig>(&text).unwrap().validate()
        };
        assert!(parse("").unwrap_err().contains("no caller identity"));
        assert!(parse("allow_anonymous = true").is_ok());
        assert!(parse("allow_anonymous = true\nlisten = \"0.0.0.0:8443\"").unwrap_err().contains("loopback"));
        let jwt = "[jwt]\naudience = [\"\"]\nbundles = { \"td\" = \"/j.json\" }";
        assert!(parse(jwt).unwrap_err().contains("always checked"));
        let bad = toml::from_str::<GatewayConfig>(
            "allow_anonymous = true\n[[services]]\nname = \"a\"\nopenapi_file = \"/a\"\nupstream = \"ftp://x\"\n\
             [services.canary]\nupstream = \"http://h\"\npercent = 120.0\n",
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(bad.contains("gateway.services.a.upstream") && bad.contains("canary.percent"), "{bad}");
    }
}
