//! `[orchestrator]`: the device registry's listener, how often the fleet
//! may heartbeat, when a silent node is suspect and when dead, and the
//! limits on what a node may register.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::auth::AuthMode;
use crate::core::tls::ServerTlsConfig;

/// The documented default section, printed by `edgebox config default`.
pub const DEFAULT: &str = r#"[orchestrator]
# HTTP listener (HTTP/1.1 and HTTP/2): the node registry API and the
# agents' heartbeat streams.
listen = "127.0.0.1:8080"
# "none" (allowed on loopback addresses only) or "bearer".
auth = "none"
# File holding the bearer token, with auth = "bearer".
# token_file = "/etc/edgebox/orchestrator.token"
# Heartbeats per second the whole fleet may send: each node's interval is
# the fleet size divided by this, within the bounds below.
heartbeat_budget_per_s = 5000
# Shortest heartbeat interval handed out, in milliseconds.
min_heartbeat_interval_ms = 1000
# Longest heartbeat interval handed out, in milliseconds.
max_heartbeat_interval_ms = 30000
# Phi-accrual thresholds: a node whose phi (how unlikely its silence is,
# -log10 of the probability, given its heartbeat history) reaches
# phi_suspect is suspect, and dead at phi_dead.
phi_suspect = 5.0
# See phi_suspect.
phi_dead = 12.0
# Most labels a node may carry.
max_labels = 64
# Longest label key or value, in bytes.
max_label_bytes = 256
# Largest request body, in bytes.
max_body_bytes = 65536
# Largest file (blob) a deployment can carry, in bytes.
max_blob_bytes = 16777216
# SPIFFE trust domain of node certificates: a joined node is
# spiffe://<trust_domain>/node/<id>.
trust_domain = "edgebox"
# Seconds a node certificate is valid (30 days); agents renew it at two
# thirds of that, and a device offline past the end joins again.
node_cert_ttl_s = 2592000
# TLS for the listener (PEM files, re-read when they change). On TLS,
# devices join with a join token and present the node certificate they are
# given (mutual TLS) from then on; operators use the bearer token, or an
# X.509-SVID of a trust domain listed under spiffe_bundles.
# [orchestrator.tls]
# cert_file = "/etc/edgebox/orchestrator.crt"
# key_file = "/etc/edgebox/orchestrator.key"
"#;

/// The compliance section: an ephemeral port.
pub const COMPLIANCE: &str = "[orchestrator]\nlisten = \"127.0.0.1:0\"\n";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    pub listen: SocketAddr,
    pub auth: AuthMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    pub heartbeat_budget_per_s: u32,
    pub min_heartbeat_interval_ms: u64,
    pub max_heartbeat_interval_ms: u64,
    pub phi_suspect: f64,
    pub phi_dead: f64,
    pub max_labels: usize,
    pub max_label_bytes: usize,
    pub max_body_bytes: usize,
    pub max_blob_bytes: usize,
    pub trust_domain: String,
    pub node_cert_ttl_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthMode::None,
            token_file: None,
            heartbeat_budget_per_s: 5000,
            min_heartbeat_interval_ms: 1000,
            max_heartbeat_interval_ms: 30_000,
            phi_suspect: 5.0,
            phi_dead: 12.0,
            max_labels: 64,
            max_label_bytes: 256,
            max_body_bytes: 65_536,
            max_blob_bytes: 16 << 20,
            trust_domain: "edgebox".into(),
            node_cert_ttl_s: 30 * 24 * 3600,
            tls: None,
        }
    }
}

impl OrchestratorConfig {
    /// Cross-key checks, as one message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let client_certs = self.tls.as_ref().is_some_and(|t| t.requires_client_certs());
        if let Some(p) = crate::core::auth::problem(self.auth, self.listen, self.token_file.as_deref(), client_certs) {
            return Err(format!("orchestrator.listen/auth: {p}"));
        }
        if self.heartbeat_budget_per_s == 0 {
            return Err("orchestrator.heartbeat_budget_per_s must be at least 1".into());
        }
        if self.min_heartbeat_interval_ms < 100 || self.min_heartbeat_interval_ms > self.max_heartbeat_interval_ms {
            return Err(
                "orchestrator.min_heartbeat_interval_ms must be at least 100 and at most max_heartbeat_interval_ms"
                    .into(),
            );
        }
        if !(self.phi_suspect > 0.0 && self.phi_dead > self.phi_suspect) {
            return Err("orchestrator.phi_suspect must be positive and phi_dead above it".into());
        }
        match crate::core::tls::spiffe::SpiffeId::parse(&format!("spiffe://{}", self.trust_domain)) {
            Ok(id) if id.path.is_empty() => {}
            Ok(_) => return Err("orchestrator.trust_domain: a trust domain has no path".into()),
            Err(e) => return Err(format!("orchestrator.trust_domain: {e}")),
        }
        if !(10..=3650 * 24 * 3600).contains(&self.node_cert_ttl_s) {
            return Err("orchestrator.node_cert_ttl_s must be 10 to 315360000 (ten years)".into());
        }
        if self.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()) {
            return Err("orchestrator.tls.client_ca_file: nodes present the certificates the orchestrator issues; \
                        operators present a bearer token or an SVID of a trust domain under spiffe_bundles"
                .into());
        }
        if self.max_body_bytes < 1024 {
            return Err("orchestrator.max_body_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_section_parses_to_the_defaults() {
        crate::core::role::documented_default::<OrchestratorConfig>(DEFAULT, "orchestrator");
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = OrchestratorConfig { phi_dead: 1.0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("phi_dead"));
        let open = OrchestratorConfig { listen: "0.0.0.0:8080".parse().unwrap(), ..Default::default() };
        assert!(open.validate().unwrap_err().contains("loopback"));
        for td in ["Plant", "plant/x", ""] {
            let bad = OrchestratorConfig { trust_domain: td.into(), ..Default::default() };
            assert!(bad.validate().unwrap_err().contains("trust_domain"), "{td:?}");
        }
        let bad = OrchestratorConfig { node_cert_ttl_s: 5, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("node_cert_ttl_s"));
        let tls = ServerTlsConfig {
            cert_file: "c".into(),
            key_file: "k".into(),
            client_ca_file: Some("ca".into()),
            spiffe_bundles: Default::default(),
            client_cert_optional: false,
        };
        let bad = OrchestratorConfig { tls: Some(tls), ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("client_ca_file"));
    }
}
