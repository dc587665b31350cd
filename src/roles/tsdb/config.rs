//! `[tsdb]`: the time-series database's config section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::auth::AuthMode;
use crate::core::tls::{ClientTlsConfig, ServerTlsConfig};

/// The documented default section, printed by `edgebox config default`.
pub const DEFAULT: &str = r#"[tsdb]
# HTTP listener: Influx /write and /api/v2/write, the Prometheus query API,
# JSON-lines import and export.
listen = "127.0.0.1:9090"
# "none" (allowed on loopback addresses only) or "bearer".
auth = "none"
# File holding the bearer token, with auth = "bearer".
# token_file = "/etc/edgebox/tsdb.token"
# Largest request body accepted, in bytes (after gzip decoding too).
max_body_bytes = 16777216
# Most samples one PromQL query may load (Prometheus's --query.max-samples);
# each costs 16 bytes while the query runs. A query past it answers 422,
# refused as soon as the samples found pass the limit.
max_query_samples = 50000000
# Seconds one PromQL query may run (Prometheus's --query.timeout), checked
# between its selectors and its steps; past it the query answers 503.
query_timeout_s = 120
# Most PromQL queries evaluated at once (Prometheus's --query.max-concurrency);
# more wait their turn, the wait counting toward query_timeout_s. Each may
# hold up to 16 bytes x max_query_samples while it runs.
max_concurrent_queries = 4
# Samples older than a series' newest sample by more than this many seconds
# are refused (out-of-order window). 0 refuses every out-of-order sample.
out_of_order_window_s = 3600
# Samples whose timestamp is further than this many seconds in the future
# are refused.
max_future_s = 600
# Samples are kept this long; 0 keeps them forever.
retention_days = 30
# Days 5-minute rollups (min, max, sum and count per bucket) are kept:
# longer than raw samples, they answer queries over the time raw retention
# dropped. They are made a day before the raw samples leave (raw samples
# stay until they are rolled up); without retention_days none are needed.
# 0 turns them off.
rollup_5m_days = 90
# Days 1-hour rollups are kept, for queries older than the 5-minute ones.
rollup_1h_days = 365
# Most bytes chunks, heads and the log may take; past it the oldest chunks go.
# 0: no size limit.
retention_max_bytes = 0
# Most series in total; a write that would add more answers 429.
max_series = 1000000
# Most series of one metric name; a write that would add more answers 429.
max_series_per_metric = 100000
# Every this many seconds the in-memory heads are checkpointed into chunks
# in the store and the write-ahead log they cover is dropped; a restart
# replays at most this much log.
checkpoint_interval_s = 60
# Upstream remote_write endpoint (Prometheus, VictoriaMetrics, Mimir) that
# every accepted sample is forwarded to, store-and-forward, over http:// or
# https://. Absent: none.
# forward_url = "https://central:8428/api/v1/write"
# Samples per forwarded batch.
forward_batch_samples = 5000
# File holding a bearer token sent to the upstream.
# forward_token_file = "/etc/edgebox/upstream.token"
# Basic auth for the upstream: the user, and the file holding the password.
# forward_username = "edge-17"
# forward_password_file = "/etc/edgebox/upstream.password"
# Extra headers on every forwarded request, e.g. Mimir's tenant.
# forward_headers = { "X-Scope-OrgID" = "edge" }
# TLS for the listener (PEM files, re-read within a second when they
# change). With client_ca_file every client must present a certificate
# signed by that CA, and auth = "none" is then allowed off loopback.
# [tsdb.tls]
# cert_file = "/etc/edgebox/tsdb.pem"
# key_file = "/etc/edgebox/tsdb.key"
# client_ca_file = "/etc/edgebox/clients-ca.pem"
# TLS to an https forward_url: the CA bundle the upstream must chain to
# (absent: the Mozilla roots built in), a client certificate for upstreams
# that ask for one, and the name to check when it is not the URL's host.
# [tsdb.forward_tls]
# ca_file = "/etc/edgebox/upstream-ca.pem"
# cert_file = "/etc/edgebox/edge.pem"
# key_file = "/etc/edgebox/edge.key"
# server_name = "central.example"
"#;

/// The same section used by the compliance test: any free port.
pub const COMPLIANCE: &str = "[tsdb]\nlisten = \"127.0.0.1:0\"\n";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsdbConfig {
    /// HTTP listener for ingest and queries.
    pub listen: SocketAddr,
    /// "none" (loopback only) or "bearer".
    pub auth: AuthMode,
    /// Bearer token file, with auth = "bearer".
    pub token_file: Option<PathBuf>,
    /// Largest request body, in bytes (also after gzip decoding).
    pub max_body_bytes: usize,
    /// Most samples one query may load.
    pub max_query_samples: usize,
    /// Seconds one query may run.
    pub query_timeout_s: u64,
    /// Most queries evaluated at once.
    pub max_concurrent_queries: usize,
    /// How far behind a series' newest sample a write may be, in seconds.
    pub out_of_order_window_s: u64,
    /// How far ahead of the clock a sample may be, in seconds.
    pub max_future_s: u64,
    /// Retention in days; 0 keeps data forever.
    pub retention_days: u64,
    /// Days 5-minute rollups are kept; 0: none.
    pub rollup_5m_days: u64,
    /// Days 1-hour rollups are kept; 0: none.
    pub rollup_1h_days: u64,
    /// Size retention in bytes of sample data; 0: none.
    pub retention_max_bytes: u64,
    /// Series limit in total.
    pub max_series: usize,
    /// Series limit per metric name.
    pub max_series_per_metric: usize,
    /// Seconds between checkpoints of the heads into chunks.
    pub checkpoint_interval_s: u64,
    /// Upstream remote_write URL; absent: no forwarding.
    pub forward_url: Option<String>,
    /// Samples per forwarded batch.
    pub forward_batch_samples: usize,
    /// Bearer token file for the upstream.
    pub forward_token_file: Option<PathBuf>,
    /// Basic-auth user for the upstream.
    pub forward_username: Option<String>,
    /// File holding the basic-auth password.
    pub forward_password_file: Option<PathBuf>,
    /// Extra headers on forwarded requests.
    pub forward_headers: BTreeMap<String, String>,
    /// TLS for the listener; absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// TLS to an https upstream.
    pub forward_tls: ClientTlsConfig,
}

impl Default for TsdbConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            auth: AuthMode::None,
            token_file: None,
            max_body_bytes: 16 << 20,
            max_query_samples: 50_000_000,
            query_timeout_s: 120,
            max_concurrent_queries: 4,
            out_of_order_window_s: 3600,
            max_future_s: 600,
            retention_days: 30,
            rollup_5m_days: 90,
            rollup_1h_days: 365,
            retention_max_bytes: 0,
            max_series: 1_000_000,
            max_series_per_metric: 100_000,
            checkpoint_interval_s: 60,
            forward_url: None,
            forward_batch_samples: 5000,
            forward_token_file: None,
            forward_username: None,
            forward_password_file: None,
            forward_headers: BTreeMap::new(),
            tls: None,
            forward_tls: ClientTlsConfig::default(),
        }
    }
}

impl TsdbConfig {
    /// Retention as the storage engine takes it.
    pub fn retention(&self) -> super::storage::Retention {
        let days = |d: u64| (d as i64).saturating_mul(86_400_000);
        super::storage::Retention {
            raw_ms: (self.retention_days > 0).then(|| days(self.retention_days)),
            rollups: super::storage::RollupPolicy {
                keep_5m_ms: days(self.rollup_5m_days),
                keep_1h_ms: days(self.rollup_1h_days),
            },
        }
    }

    /// Cross-key checks, as one message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let client_certs = self.tls.as_ref().is_some_and(|t| t.requires_client_certs());
        if let Some(p) = crate::core::auth::problem(self.auth, self.listen, self.token_file.as_deref(), client_certs) {
            return Err(format!("tsdb.listen/auth: {p}"));
        }
        if self.query_timeout_s == 0 {
            return Err("tsdb.query_timeout_s: must be at least 1".into());
        }
        if self.max_concurrent_queries == 0 {
            return Err("tsdb.max_concurrent_queries: must be at least 1".into());
        }
        if self.max_query_samples < 1000 {
            return Err("tsdb.max_query_samples: must be at least 1000".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("tsdb.max_body_bytes: must be at least 1024".into());
        }
        if let Some(url) = &self.forward_url {
            super::forward::Upstream::parse(url)?;
        }
        if self.forward_username.is_some() != self.forward_password_file.is_some() {
            return Err("tsdb.forward_username and tsdb.forward_password_file go together".into());
        }
        if self.forward_username.is_some() && self.forward_token_file.is_some() {
            return Err("tsdb.forward_token_file and tsdb.forward_username: choose bearer or basic auth".into());
        }
        for (name, value) in &self.forward_headers {
            if http::HeaderName::try_from(name.as_str()).is_err()
                || http::HeaderValue::try_from(value.as_str()).is_err()
            {
                return Err(format!("tsdb.forward_headers.{name}: not a valid HTTP header"));
            }
        }
        if self.forward_batch_samples == 0 {
            return Err("tsdb.forward_batch_samples: must be at least 1".into());
        }
        if self.checkpoint_interval_s == 0 {
            return Err("tsdb.checkpoint_interval_s: must be at least 1".into());
        }
        if self.max_series == 0 || self.max_series_per_metric == 0 {
            return Err("tsdb.max_series and tsdb.max_series_per_metric must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_default_equals_the_code_default() {
        crate::core::role::documented_default::<TsdbConfig>(DEFAULT, "tsdb").validate().unwrap();
    }
}
