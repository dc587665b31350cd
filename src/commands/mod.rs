//! The core's subcommands. Each file is one command; they share the
//! [`Invocation`] (global flags) and nothing else.

pub mod config;
pub mod info;
pub mod install;
pub mod role;
pub mod store;

use std::path::PathBuf;

use crate::cli::GlobalArgs;
use crate::core::config::{self as cfg, LoadedConfig};
use crate::roles::ROLES;

/// The global flags of one run, and how they turn into a config.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub global: GlobalArgs,
}

impl Invocation {
    pub fn new(global: GlobalArgs) -> Self {
        Self { global }
    }

    /// The config file in use: --config / EDGEBOX_CONFIG, else the default
    /// path if it exists, else none (built-in defaults).
    pub fn config_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.global.config {
            return Some(p.clone());
        }
        let default = PathBuf::from(cfg::DEFAULT_PATH);
        default.exists().then_some(default)
    }

    /// Loads the config and applies the command-line overrides.
    pub fn load_config(&self) -> anyhow::Result<LoadedConfig> {
        let mut loaded = match self.config_path() {
            Some(path) => cfg::load(&path)?,
            None => cfg::load_text("", "<built-in defaults>")?,
        };
        let g = &self.global;
        let core = &mut loaded.core;
        if let Some(d) = &g.data_dir {
            core.edgebox.data_dir = d.clone();
        }
        if let Some(l) = &g.log_level {
            core.log.level = l.clone();
        }
        if let Some(f) = g.log_format {
            core.log.format = f;
        }
        if let Some(io) = g.io {
            core.edgebox.io = io;
        }
        if let Some(w) = g.workers {
            core.edgebox.workers = w;
        }
        if let Some(a) = g.admin_listen {
            if core.admin.auth == cfg::AuthMode::None && !a.ip().is_loopback() {
                return Err(crate::core::exit::ConfigProblem(format!(
                    "--admin-listen {a}: not a loopback address and admin.auth is \"none\""
                ))
                .into());
            }
            core.admin.listen = a;
        }
        Ok(loaded)
    }
}

/// `edgebox --list`: one line per compiled-in role. A reader that stops
/// early (`edgebox --list | grep -q tsdb`) ends it quietly.
pub fn list() -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = (|| {
        if ROLES.is_empty() {
            writeln!(out, "(no roles compiled in; the core commands still work)")?;
        }
        let width = ROLES.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in ROLES {
            writeln!(out, "{:width$}  {}", r.name, r.summary)?;
        }
        out.flush()
    })();
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
