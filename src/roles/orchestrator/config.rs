//! `[orchestrator]`: the device registry's listener, how often the fleet
//! may heartbeat, when a silent node is suspect and when dead, and the
//! limits on what a node may register.

use std::collections::BTreeMap;
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
# High availability: 3 or 5 orchestrators keep the registry, deployments,
# files, join tokens and node CA in one Raft log. Each member lists every
# member (the same list everywhere) by id and the URL of its listener;
# members call each other there with the bearer token (auth = "bearer" on
# every member, one token file). Agents are given every member's URL.
# [orchestrator.raft]
# This member's id, one of the keys of members.
# id = 1
# Where this member keeps its Raft log and snapshots.
# dir = "/var/lib/edgebox/raft"
# members = { 1 = "https://10.0.0.1:8080", 2 = "https://10.0.0.2:8080", 3 = "https://10.0.0.3:8080" }
# Leader heartbeat to followers, in milliseconds.
# heartbeat_ms = 250
# A follower that heard no leader for this long (up to twice it) starts
# an election, in milliseconds.
# election_timeout_ms = 1500
# Log entries after which a snapshot is taken and older entries dropped.
# snapshot_every = 20000
# CA bundle the members' certificates chain to, over https; absent: every
# member presents the same certificate as this one.
# ca_file = "/etc/edgebox/orchestrators-ca.pem"
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftConfig>,
}

/// `[orchestrator.raft]`: this member of a Raft cluster of orchestrators.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    pub id: u64,
    pub dir: PathBuf,
    /// Member id (as a TOML key) → the URL of its listener.
    pub members: BTreeMap<String, String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: u64,
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_heartbeat_ms() -> u64 {
    250
}

fn default_election_timeout_ms() -> u64 {
    1500
}

fn default_snapshot_every() -> u64 {
    20_000
}

impl RaftConfig {
    /// The members by id (what `validate` accepted).
    pub fn member_urls(&self) -> BTreeMap<u64, String> {
        self.members.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.clone()))).collect()
    }

    fn validate(&self, auth: AuthMode) -> Result<(), String> {
        if self.members.is_empty() || self.members.len() > 7 {
            return Err(format!(
                "orchestrator.raft.members: 1 to 7 members (3 or 5 to survive a loss), not {}",
                self.members.len()
            ));
        }
        for (id, url) in &self.members {
            match id.parse::<u64>() {
                Ok(n) if n > 0 => {}
                _ => return Err(format!("orchestrator.raft.members: member id {id:?} is not a number from 1")),
            }
            crate::roles::fleet::client::Target::parse(url)
                .map_err(|e| format!("orchestrator.raft.members.{id}: {e}"))?;
        }
        if !self.member_urls().contains_key(&self.id) {
            return Err(format!("orchestrator.raft.id {} is not one of orchestrator.raft.members", self.id));
        }
        if self.heartbeat_ms < 10 || self.election_timeout_ms < self.heartbeat_ms * 3 {
            return Err(
                "orchestrator.raft.heartbeat_ms must be at least 10 and election_timeout_ms at least three heartbeats"
                    .into(),
            );
        }
        if self.snapshot_every < 100 {
            return Err("orchestrator.raft.snapshot_every must be at least 100".into());
        }
        if self.members.len() > 1 && auth == AuthMode::None && self.members.values().any(|u| !is_loopback_url(u)) {
            return Err("orchestrator.raft: members on other hosts call each other with the bearer token: set auth = \"bearer\"".into());
        }
        Ok(())
    }
}

fn is_loopback_url(url: &str) -> bool {
    crate::roles::fleet::client::Target::parse(url)
        .is_ok_and(|t| t.host == "localhost" || t.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
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
            raft: None,
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
            Ok(id) if id.path().is_empty() => {}
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
        if let Some(r) = &self.raft {
            r.validate(self.auth)?;
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
        let raft = |id: u64, members: &[(&str, &str)]| RaftConfig {
            id,
            dir: "/tmp/r".into(),
            members: members.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            heartbeat_ms: 250,
            election_timeout_ms: 1500,
            snapshot_every: 20_000,
            ca_file: None,
        };
        let ok = [("1", "http://127.0.0.1:8081"), ("2", "http://127.0.0.1:8082"), ("3", "http://127.0.0.1:8083")];
        let good = OrchestratorConfig { raft: Some(raft(2, &ok)), ..Default::default() };
        assert_eq!(good.validate(), Ok(()));
        for (cfg, key) in [
            (raft(4, &ok), "raft.id 4"),
            (raft(1, &[("one", "http://127.0.0.1:1")]), "member id \"one\""),
            (raft(1, &[("1", "127.0.0.1:1")]), "raft.members.1"),
            (raft(1, &[("1", "http://127.0.0.1:1"), ("2", "http://10.0.0.2:8080")]), "bearer"),
            (RaftConfig { election_timeout_ms: 100, ..raft(1, &ok) }, "election_timeout_ms"),
        ] {
            let bad = OrchestratorConfig { raft: Some(cfg), ..Default::default() };
            assert!(bad.validate().unwrap_err().contains(key), "{key}: {:?}", bad.validate());
        }
    }
}
