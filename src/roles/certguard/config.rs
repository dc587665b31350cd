//! `[certguard]`: the embedded CA and the certificates it keeps current.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The documented default section, printed by `edgebox config default`.
pub const DEFAULT: &str = r#"[certguard]
# File holding the 32-byte key that encrypts the CA's private keys in the
# store; created (mode 0600) when missing. Absent: <data_dir>/certguard.key.
# Keep it off the data disk where the device allows.
# key_file = "/etc/edgebox/certguard.key"
# Common name of the embedded root CA (and, with " intermediate", of the
# intermediate that signs every certificate).
ca_name = "edgebox CA"
# Lifetime of the root CA, in days.
root_days = 3650
# Lifetime of the intermediate CA, in days (at most the root's). The CA
# rotates on it: at half of it the next root is published in the trust
# bundle, from three quarters on it signs, and the old root stays published
# until its last leaf expired. Leaves live at most a quarter of it.
intermediate_days = 365
# PEM file the trust bundle (the root) is written to. Absent: not written.
# trust_bundle_file = "/etc/edgebox/ca.pem"
# Seconds between checks of which certificates are due.
check_interval_s = 30
# ACME (RFC 8555) for certificates with issuer = "acme": the directory, the
# account's contact addresses, the CA bundle the server's HTTPS chains to
# (absent: the Mozilla roots built in), the listener answering http-01
# challenges (the ACME server must reach it as port 80 of every name), and
# the bundle probes trust for ACME certificates (absent: the built-in roots).
# [certguard.acme]
# directory_url = "https://acme-v02.api.letsencrypt.org/directory"
# contact = ["ops@example.com"]
# server_ca_file = "/etc/edgebox/acme-server-ca.pem"
# http01_listen = "0.0.0.0:80"
# probe_ca_file = "/etc/edgebox/acme-roots.pem"
# "http-01" (default), "tls-alpn-01" (answered on tls_alpn01_listen, which
# the ACME server must reach as port 443 of every name) or "dns-01" (needed
# for wildcard names): dns-01 runs dns01_hook (argv, no shell) with
# "present" or "cleanup", the record name (_acme-challenge.<name>.) and the
# TXT value, within dns01_hook_timeout_s.
# challenge = "http-01"
# tls_alpn01_listen = "0.0.0.0:443"
# dns01_hook = ["/usr/local/bin/acme-dns", "--zone", "example.com"]
# dns01_hook_timeout_s = 60
# Managed certificates: one [[certguard.certs]] table each.
# [[certguard.certs]]
# Name, unique: in logs, metrics and `edgebox certguard status`.
# name = "web"
# Subject alternative names: DNS names, IP addresses, a SPIFFE ID.
# dns_names = ["device-17.example"]
# ip_addresses = ["10.0.0.17"]
# spiffe_id = "spiffe://edge.example/node/17"
# "ecdsa-p256" (default), "ed25519", or "rsa-2048", "rsa-3072", "rsa-4096"
# for clients that know nothing else (slow to make: seconds for RSA-4096).
# key_type = "ecdsa-p256"
# "ca" (the embedded CA, default) or "acme".
# issuer = "ca"
# Lifetime in hours, and the fraction of it after which it is renewed
# (with up to 5% jitter either way; default 0.667, and 0.5 for a
# certificate with a SPIFFE ID, an SVID rotated at half-life).
# lifetime_hours = 2160
# renew_at = 0.667
# Targets taking the certificate after the canaries pass, per wave.
# wave_size = 5
# Where the certificate goes: one [[certguard.certs.targets]] table each.
# Canary targets get a new certificate first; the others only once every
# canary's probe passed. Any failure puts every target back.
# [[certguard.certs.targets]]
# Files written atomically: the certificate followed by the intermediate,
# and the private key (always mode 0600).
# cert_file = "/etc/nginx/web.pem"
# key_file = "/etc/nginx/web.key"
# Mode of the certificate file.
# cert_mode = "0644"
# Owner of both files, "user", "user:group" or numeric ids (the server
# reading the key runs as that user). Absent: certguard's own.
# owner = "www-data:www-data"
# After writing: signal the process in a pid file, and/or run a command
# (argv, no shell) within a timeout. edgebox's own listeners reload their
# files by themselves and need neither.
# reload_pid_file = "/run/nginx.pid"
# reload_signal = "HUP"
# reload_command = ["/usr/sbin/nginx", "-s", "reload"]
# and/or POST to an http:// URL, which must answer 2xx.
# reload_url = "http://127.0.0.1:8080/-/reload"
# reload_timeout_s = 30
# The TLS endpoint serving this target: after the reload it must present
# the new certificate, valid for probe_name (default: the first DNS name or
# IP address) against the trust bundle, within probe_timeout_s; and, with
# probe_http_path, answer a GET there with 2xx.
# probe = "127.0.0.1:443"
# probe_name = "device-17.example"
# probe_http_path = "/healthz"
# probe_timeout_s = 10
# canary = true
"#;

/// The compliance section: nothing to manage, the CA made in the store.
pub const COMPLIANCE: &str = "[certguard]\n";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertguardConfig {
    /// Key-encryption key file; absent: in the data directory.
    pub key_file: Option<PathBuf>,
    /// Root CA common name.
    pub ca_name: String,
    /// Root lifetime, days.
    pub root_days: u32,
    /// Intermediate lifetime, days.
    pub intermediate_days: u32,
    /// Where the root is written as the trust bundle.
    pub trust_bundle_file: Option<PathBuf>,
    /// Seconds between renewal checks.
    pub check_interval_s: u64,
    /// ACME, for certificates with issuer = "acme".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeConfig>,
    /// The managed certificates.
    pub certs: Vec<ManagedCert>,
}

/// `[certguard.acme]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    pub directory_url: String,
    #[serde(default)]
    pub contact: Vec<String>,
    #[serde(default)]
    pub server_ca_file: Option<PathBuf>,
    #[serde(default = "default_http01")]
    pub http01_listen: std::net::SocketAddr,
    #[serde(default)]
    pub probe_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub challenge: ChallengeKind,
    #[serde(default = "default_tls_alpn01")]
    pub tls_alpn01_listen: std::net::SocketAddr,
    #[serde(default)]
    pub dns01_hook: Vec<String>,
    #[serde(default = "default_hook_timeout")]
    pub dns01_hook_timeout_s: u64,
}

/// How ACME validates control of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum ChallengeKind {
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    #[serde(rename = "dns-01")]
    Dns01,
}

fn default_tls_alpn01() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 443))
}

fn default_hook_timeout() -> u64 {
    60
}

fn default_http01() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 80))
}

/// Who signs a managed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    #[default]
    Ca,
    Acme,
}

impl Default for CertguardConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            ca_name: "edgebox CA".into(),
            root_days: 3650,
            intermediate_days: 365,
            trust_bundle_file: None,
            check_interval_s: 30,
            acme: None,
            certs: Vec::new(),
        }
    }
}

/// The key algorithm of a managed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    Ed25519,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

/// One certificate certguard issues, rolls out and renews.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedCert {
    pub name: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<IpAddr>,
    #[serde(default)]
    pub spiffe_id: Option<String>,
    #[serde(default)]
    pub key_type: KeyType,
    #[serde(default)]
    pub issuer: IssuerKind,
    /// Lifetime in hours; fractions allow the short ones tests use.
    #[serde(default = "default_lifetime_hours")]
    pub lifetime_hours: f64,
    #[serde(default)]
    pub renew_at: Option<f64>,
    #[serde(default = "default_wave_size")]
    pub wave_size: usize,
    pub targets: Vec<Target>,
}

impl ManagedCert {
    /// The fraction of the lifetime after which it is renewed: as set, else
    /// two thirds, or half for an X.509-SVID (SPIFFE rotates at half-life).
    pub fn renewal_fraction(&self) -> f64 {
        self.renew_at.unwrap_or(if self.spiffe_id.is_some() { 0.5 } else { 0.667 })
    }
}

/// Where a certificate is installed, how its server is told, and how the
/// rollout checks that the server took it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default = "default_cert_mode")]
    pub cert_mode: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub reload_pid_file: Option<PathBuf>,
    #[serde(default = "default_signal")]
    pub reload_signal: String,
    #[serde(default)]
    pub reload_command: Vec<String>,
    #[serde(default)]
    pub reload_url: Option<String>,
    #[serde(default = "default_reload_timeout")]
    pub reload_timeout_s: u64,
    #[serde(default)]
    pub probe: Option<String>,
    #[serde(default)]
    pub probe_name: Option<String>,
    #[serde(default)]
    pub probe_http_path: Option<String>,
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_s: u64,
    #[serde(default)]
    pub canary: bool,
}

fn default_lifetime_hours() -> f64 {
    2160.0
}
fn default_wave_size() -> usize {
    5
}
fn default_cert_mode() -> String {
    "0644".into()
}
fn default_signal() -> String {
    "HUP".into()
}
fn default_reload_timeout() -> u64 {
    30
}
fn default_probe_timeout() -> u64 {
    10
}

impl Target {
    /// The certificate file's mode as a number.
    pub fn mode(&self) -> Result<u32, String> {
        u32::from_str_radix(self.cert_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| format!("{}: cert_mode {:?} is not an octal mode", self.cert_file.display(), self.cert_mode))
    }

    /// The signal name for `reload_signal`, as kill(1) takes it.
    pub fn signal(&self) -> Result<&str, String> {
        match self.reload_signal.trim_start_matches("SIG") {
            s @ ("HUP" | "USR1" | "USR2" | "TERM" | "QUIT") => Ok(s),
            other => {
                Err(format!("{}: reload_signal {other:?}: use HUP, USR1, USR2, QUIT or TERM", self.cert_file.display()))
            }
        }
    }
}

impl CertguardConfig {
    /// Cross-key checks, as one message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.ca_name.trim().is_empty() {
            return Err("certguard.ca_name: must not be empty".into());
        }
        if self.root_days == 0 || self.intermediate_days == 0 || self.intermediate_days > self.root_days {
            return Err("certguard.root_days and intermediate_days: at least 1, intermediate within root".into());
        }
        if self.check_interval_s == 0 {
            return Err("certguard.check_interval_s: must be at least 1".into());
        }
        if let Some(a) = &self.acme {
            if !a.directory_url.starts_with("https://") {
                return Err(format!("certguard.acme.directory_url {:?}: must be https://", a.directory_url));
            }
            if a.challenge == ChallengeKind::Dns01 && (a.dns01_hook.is_empty() || a.dns01_hook_timeout_s == 0) {
                return Err("certguard.acme.dns01_hook: challenge = \"dns-01\" needs a hook command".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut files = std::collections::BTreeSet::new();
        for c in &self.certs {
            let at = |k: &str| format!("certguard.certs.{}.{k}", c.name);
            if c.name.is_empty() || !names.insert(c.name.as_str()) {
                return Err(format!("certguard.certs: name {:?} is empty or used twice", c.name));
            }
            if c.dns_names.is_empty() && c.ip_addresses.is_empty() && c.spiffe_id.is_none() {
                return Err(format!("{}: needs dns_names, ip_addresses or spiffe_id", at("name")));
            }
            if let Some(Err(e)) = c.spiffe_id.as_deref().map(crate::core::tls::spiffe::SpiffeId::parse) {
                return Err(format!("{}: {e}", at("spiffe_id")));
            }
            if !(c.lifetime_hours > 0.0 && c.lifetime_hours * 3600.0 >= 2.0) {
                return Err(format!("{}: must be positive (at least two seconds)", at("lifetime_hours")));
            }
            if c.issuer == IssuerKind::Ca && c.lifetime_hours > f64::from(self.intermediate_days) * 24.0 / 4.0 {
                return Err(format!(
                    "{}: at most a quarter of intermediate_days, so CA rotations overlap every leaf",
                    at("lifetime_hours")
                ));
            }
            if !(0.1..=0.95).contains(&c.renewal_fraction()) {
                return Err(format!("{}: must be between 0.1 and 0.95", at("renew_at")));
            }
            if c.issuer == IssuerKind::Acme {
                if self.acme.is_none() {
                    return Err(format!("{}: issuer = \"acme\" needs a [certguard.acme] section", at("issuer")));
                }
                if c.spiffe_id.is_some() || c.dns_names.is_empty() && c.ip_addresses.is_empty() {
                    return Err(format!("{}: ACME certifies DNS names and IP addresses, not SPIFFE IDs", at("issuer")));
                }
                let dns01 = self.acme.as_ref().is_some_and(|a| a.challenge == ChallengeKind::Dns01);
                if !dns01 && c.dns_names.iter().any(|n| n.starts_with("*.")) {
                    return Err(format!("{}: wildcard names need challenge = \"dns-01\"", at("dns_names")));
                }
            }
            if c.targets.is_empty() || c.wave_size == 0 {
                return Err(format!("{}: needs at least one target, and wave_size at least 1", at("targets")));
            }
            for t in &c.targets {
                let bad = |what: String| format!("{}: {what}", at("targets"));
                if t.cert_file == t.key_file {
                    return Err(bad(format!("{} is both cert_file and key_file", t.cert_file.display())));
                }
                if !files.insert(t.cert_file.clone()) || !files.insert(t.key_file.clone()) {
                    return Err(bad(format!("{} or {} is written twice", t.cert_file.display(), t.key_file.display())));
                }
                t.mode().map_err(bad)?;
                t.signal().map_err(bad)?;
                if t.reload_timeout_s == 0 || t.probe_timeout_s == 0 {
                    return Err(bad("reload_timeout_s and probe_timeout_s must be at least 1".into()));
                }
                if let Some(u) = &t.reload_url
                    && !u.starts_with("http://")
                {
                    return Err(bad(format!("reload_url {u:?}: must start with http://")));
                }
                if let Some(p) = &t.probe
                    && !p.contains(':')
                {
                    return Err(bad(format!("probe {p:?}: needs host:port")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_default_equals_the_code_default() {
        crate::core::role::documented_default::<CertguardConfig>(DEFAULT, "certguard").validate().unwrap();
    }

    #[test]
    fn bad_certificates_are_named() {
        let cert = |extra: &str| {
            let (cert, target) = extra.split_once('|').unwrap_or((extra, ""));
            let text = format!(
                "[[certs]]\nname = \"a\"\n{cert}\n[[certs.targets]]\ncert_file = \"/c\"\nkey_file = \"/k\"\n{target}\n"
            );
            toml::from_str::<CertguardConfig>(&text).unwrap().validate()
        };
        assert!(cert("dns_names = [\"a.example\"]").is_ok());
        assert!(cert("").unwrap_err().contains("certguard.certs.a.name: needs dns_names"));
        assert!(cert("spiffe_id = \"http://x\"").unwrap_err().contains("spiffe_id"));
        assert!(cert("dns_names = [\"a\"]\nrenew_at = 1.5").unwrap_err().contains("renew_at"));
        assert!(cert("dns_names = [\"a\"]|cert_mode = \"999\"").unwrap_err().contains("cert_mode"));
        assert!(cert("dns_names = [\"a\"]|reload_signal = \"KILL\"").unwrap_err().contains("reload_signal"));
        assert!(cert("dns_names = [\"a\"]|probe = \"nohost\"").unwrap_err().contains("host:port"));
        assert!(cert("dns_names = [\"a\"]\nlifetime_hours = 3000").unwrap_err().contains("intermediate_days"));
    }

    #[test]
    fn svids_renew_at_half_life_unless_told_otherwise() {
        let parse = |extra: &str| {
            let text = format!("name = \"a\"\n{extra}\ntargets = []\n");
            toml::from_str::<ManagedCert>(&text).unwrap().renewal_fraction()
        };
        assert_eq!(parse("dns_names = [\"a.example\"]"), 0.667);
        assert_eq!(parse("spiffe_id = \"spiffe://edge.example/node/1\""), 0.5);
        assert_eq!(parse("spiffe_id = \"spiffe://edge.example/node/1\"\nrenew_at = 0.8"), 0.8);
    }
}
