//! `[agent]`: the orchestrator a device joins, and how it presents itself.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::tls::ClientTlsConfig;

/// The documented default section, printed by `edgebox config default`.
pub const DEFAULT: &str = r#"[agent]
# The orchestrator to join, "http://host:port" or "https://host:port"; of
# a Raft cluster, every member's URL, comma-separated (the agent follows
# the leader). The agent dials out (devices behind NAT work); empty: idle.
orchestrator = ""
# File holding the bearer token the orchestrator expects.
# token_file = "/etc/edgebox/agent.token"
# This node's id; empty: the host name (lower case, other characters as -).
id = ""
# Labels registered with the node (site and zone group the topology).
labels = {}
# Reconnection backoff after the orchestrator goes away, doubling up to this.
reconnect_max_s = 30
# How long a role started from desired state may take to be ready before
# its deployment is reported failed (which pauses a rollout).
apply_timeout_s = 30
# TLS to an https orchestrator (CA, and a client certificate for mTLS).
# [agent.tls]
# ca_file = "/etc/edgebox/orchestrator-ca.pem"
"#;

/// The compliance section: the default (no orchestrator, idle).
pub const COMPLIANCE: &str = "[agent]\n";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub orchestrator: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub reconnect_max_s: u64,
    pub apply_timeout_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            orchestrator: String::new(),
            token_file: None,
            id: String::new(),
            labels: BTreeMap::new(),
            reconnect_max_s: 30,
            apply_timeout_s: 30,
            tls: None,
        }
    }
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.orchestrator.is_empty() {
            crate::roles::fleet::client::Target::parse_list(&self.orchestrator)
                .map_err(|e| format!("agent.orchestrator: {e}"))?;
        }
        if self.reconnect_max_s == 0 {
            return Err("agent.reconnect_max_s must be at least 1".into());
        }
        if self.apply_timeout_s == 0 {
            return Err("agent.apply_timeout_s must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_section_parses_to_the_defaults() {
        crate::core::role::documented_default::<AgentConfig>(DEFAULT, "agent");
    }

    #[test]
    fn a_bad_orchestrator_url_names_the_key() {
        let bad = AgentConfig { orchestrator: "ftp://x".into(), ..Default::default() };
        assert!(bad.validate().unwrap_err().starts_with("agent.orchestrator"));
    }
}
