//! `edgebox config default|check`.

use crate::cli::ConfigCommand;
use crate::commands::Invocation;
use crate::core::config;
use crate::core::exit::UsageError;

pub fn run(inv: &Invocation, cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Default => {
            print!("{}", config::default_config_text());
            Ok(())
        }
        ConfigCommand::Check { file } => {
            let Some(path) = file.or_else(|| inv.config_path()) else {
                return Err(UsageError(format!(
                    "no config file to check: give one, set --config, or create {}",
                    config::DEFAULT_PATH
                ))
                .into());
            };
            let loaded = config::load(&path)?;
            let roles = loaded.enabled_roles();
            println!(
                "{}: ok; `edgebox up` would run: admin{}{}",
                path.display(),
                if roles.is_empty() { "" } else { ", " },
                roles.join(", ")
            );
            Ok(())
        }
    }
}
