//! The command line, defined once: help, man page and shell completions are
//! all generated from these clap definitions plus the role table.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{self, Invocation};
use crate::core::config::{LogConfig, LogFormat};
use crate::core::exit::UsageError;
use crate::core::runtime::IoMode;
use crate::core::sysinfo;
use crate::roles::ROLES;

/// edgebox: one static binary that turns any Linux device into a managed edge
/// appliance.
#[derive(Parser, Debug)]
#[command(name = "edgebox", version, long_version = sysinfo::long_version(), about, long_about = None)]
#[command(after_help = "Roles also run through symlinks named after them: `ln -s edgebox tsdb; ./tsdb serve`.")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Print the roles compiled into this binary and exit.
    #[arg(long)]
    pub list: bool,
    #[command(subcommand)]
    pub command: Option<CoreCommand>,
}

/// Flags every command takes; they override the config file.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Config file [default: /etc/edgebox/edgebox.toml if it exists].
    #[arg(long, global = true, env = "EDGEBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (store, control socket, role files).
    #[arg(long, global = true, env = "EDGEBOX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter, e.g. info or edgebox=debug.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// File I/O path.
    #[arg(long, global = true, value_enum)]
    pub io: Option<IoMode>,
    /// Runtime worker threads (0: one per core).
    #[arg(long, global = true, value_name = "N")]
    pub workers: Option<usize>,
    /// Admin listener address (/metrics, /healthz, /readyz, /v1/roles).
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin_listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum CoreCommand {
    /// Run every role enabled in the config in one process (appliance mode).
    Up,
    /// Show the build, the machine, the I/O path, the roles and the store.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create the role symlinks.
    Install {
        /// Directory for one symlink per role, each pointing at this binary.
        #[arg(long, value_name = "DIR", required = true)]
        symlinks: PathBuf,
        /// Replace files that are not already links to this binary.
        #[arg(long)]
        force: bool,
    },
    /// Print or check configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and maintain the embedded store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the full default config, every key documented.
    Default,
    /// Validate a config file without starting anything.
    Check {
        /// The file to check [default: the config edgebox would use].
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Size, schema versions and tables (asks the running appliance if the
    /// store is in use).
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Verify checksums and structure (the appliance must be stopped).
    Check,
    /// Release free space (the appliance must be stopped).
    Compact,
    /// Write a consistent, verified copy; works while the appliance runs.
    Backup { file: PathBuf },
    /// Replace the store with a backup (the appliance must be stopped).
    Restore { file: PathBuf },
    /// Measure acknowledged durable writes per second with concurrent writers.
    Bench {
        /// Concurrent writer threads.
        #[arg(long, default_value_t = 16)]
        writers: u32,
        /// Writes per writer.
        #[arg(long, default_value_t = 2000)]
        writes: u64,
        /// Print `ack WRITER SEQ` as each write is acknowledged (crash tests).
        #[arg(long)]
        print_acks: bool,
    },
}

/// The whole command tree: the core's commands plus one per role.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for role in ROLES {
        let own = (role.command)();
        // A role with options of its own runs from them without a
        // subcommand (`edgebox agent --join URL`).
        let bare = own.get_arguments().next().is_some();
        let mut sub = clap::Command::new(role.name)
            .about(role.summary)
            .subcommand_required(!bare)
            .args_conflicts_with_subcommands(bare)
            .arg_required_else_help(true)
            // A role may give `serve` options of its own (`edgebox
            // orchestrator serve --listen :8080 --raft-dir DIR`).
            .subcommand(
                own.find_subcommand("serve")
                    .cloned()
                    .unwrap_or_else(|| clap::Command::new("serve"))
                    .about(format!("Run the {} role alone", role.name)),
            );
        for arg in own.get_arguments() {
            sub = sub.arg(arg.clone());
        }
        for extra in own.get_subcommands().filter(|c| c.get_name() != "serve") {
            sub = sub.subcommand(extra.clone());
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

/// Parses `args` and runs what they ask for.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.print()?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let global = GlobalArgs::from_arg_matches(&matches)?;
    if !serves(&matches) {
        // Short commands log warnings and errors only, unless asked for more.
        let log = LogConfig {
            level: global.log_level.clone().unwrap_or_else(|| "warn".into()),
            format: global.log_format.unwrap_or(LogFormat::Text),
        };
        crate::core::telemetry::init_logging(&log)?;
    }
    let inv = Invocation::new(global);
    if let Some((role, sub)) = matches.subcommand().and_then(|(n, sub)| Some((crate::roles::find(n)?, sub))) {
        return commands::role::run(role, sub, &inv);
    }
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.list {
        return Ok(commands::list()?);
    }
    match cli.command {
        Some(CoreCommand::Up) => crate::core::lifecycle::run(&inv, None),
        Some(CoreCommand::Info { json }) => commands::info::run(&inv, json),
        Some(CoreCommand::Install { symlinks, force }) => commands::install::run(&symlinks, force),
        Some(CoreCommand::Config(c)) => commands::config::run(&inv, c),
        Some(CoreCommand::Store(c)) => commands::store::run(&inv, c),
        Some(CoreCommand::Completions { shell }) => {
            clap_complete::generate(shell, &mut command(), "edgebox", &mut std::io::stdout());
            Ok(())
        }
        Some(CoreCommand::Man) => {
            clap_mangen::Man::new(command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        None => {
            let _ = command().print_help();
            Err(UsageError("no command given; try `edgebox up`, `edgebox --list` or `edgebox --help`".into()).into())
        }
    }
}

/// True for the commands that run roles (they set up the full telemetry
/// plane themselves).
fn serves(matches: &clap::ArgMatches) -> bool {
    match matches.subcommand() {
        Some(("up", _)) => true,
        // `serve`, or a role's own options without a subcommand (`edgebox
        // agent --join URL`), run the role.
        Some((name, sub)) => {
            crate::roles::find(name).is_some() && matches!(sub.subcommand_name(), Some("serve") | None)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_tree_is_consistent() {
        super::command().debug_assert();
    }
}
