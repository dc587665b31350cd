//! The one config file: a section for the core and one per role.
//!
//! Why one file: an appliance is configured, shipped and diffed as a whole.
//! Sections are parsed strictly (unknown keys are errors) and every error
//! names the file, line and key at fault. `defaults.toml` is the documented
//! default config; a test keeps it equal to the `Default` impls below.

mod load;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::tls::ServerTlsConfig;

pub use crate::core::auth::AuthMode;
pub use load::{CORE_SECTIONS, ConfigError, LoadedConfig, default_config_text, load, load_section, load_text};

/// Where the config is looked for when neither `--config` nor EDGEBOX_CONFIG
/// names one. A missing file here means "built-in defaults".
pub const DEFAULT_PATH: &str = "/etc/edgebox/edgebox.toml";

/// The core's own sections.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    pub edgebox: ApplianceConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub telemetry: TelemetryConfig,
}

/// `[edgebox]`: the process as a whole.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplianceConfig {
    /// Directory for the store, the control socket and role files.
    pub data_dir: PathBuf,
    /// Roles `edgebox up` runs. Absent: every role compiled in.
    pub roles: Option<Vec<String>>,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    /// File I/O path: "auto" (io_uring when usable), "uring" or "blocking".
    pub io: crate::core::runtime::IoMode,
    /// How long roles get to drain on SIGTERM/SIGINT before the process exits.
    pub shutdown_timeout_ms: u64,
}

impl Default for ApplianceConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/edgebox"),
            roles: None,
            workers: 0,
            io: crate::core::runtime::IoMode::Auto,
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: "info", "debug", "edgebox=debug,hyper=warn", …
    pub level: String,
    /// "auto" (text on a terminal, JSON otherwise), "text" or "json".
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Auto }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// `[admin]`: the shared HTTP listener for /metrics, /healthz, /readyz and
/// /v1/roles.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (port 0: any free port).
    pub listen: SocketAddr,
    /// "none" (allowed on loopback addresses only) or "bearer".
    pub auth: AuthMode,
    /// File holding the bearer token, with auth = "bearer".
    pub token_file: Option<PathBuf>,
    /// TLS for the listener; absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

impl AdminConfig {
    /// Whether the listener requires client certificates.
    pub fn client_certs(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.requires_client_certs())
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9464)), auth: AuthMode::None, token_file: None, tls: None }
    }
}

/// `[store]`: the embedded redb store shared by every role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Store file. Absent: <data_dir>/edgebox.redb.
    pub path: Option<PathBuf>,
    /// Page cache size in MiB.
    pub cache_mb: usize,
    /// The most writes grouped into one commit.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: None, cache_mb: 64, max_batch: 1024 }
    }
}

/// `[telemetry]`: OpenTelemetry trace export over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint, e.g. "http://127.0.0.1:4317"; absent: no export.
    pub otlp_endpoint: Option<String>,
    /// service.name resource attribute.
    pub service_name: String,
    /// Fraction of root spans sampled, 0.0 to 1.0.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "edgebox".into(), sample_ratio: 1.0 }
    }
}

impl CoreConfig {
    /// The store file this config points at.
    pub fn store_path(&self) -> PathBuf {
        self.store.path.clone().unwrap_or_else(|| self.edgebox.data_dir.join("edgebox.redb"))
    }

    /// The control socket of a running appliance.
    pub fn control_socket(&self) -> PathBuf {
        self.edgebox.data_dir.join("edgebox.ctl")
    }
}

#[cfg(test)]
mod tests;
