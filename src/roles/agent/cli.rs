//! `edgebox agent --join URL --token T`: the agent alone, joined to the
//! orchestrator the command line names (the rest of `[agent]` still comes
//! from the config file). Over https the token is a join token, traded
//! once for the node certificate; over http it is the bearer token.
//! `--token-file` keeps the token out of the process list.

use clap::{Arg, ArgMatches, Command};

use super::Agent;
use crate::commands::Invocation;
use crate::core::exit::UsageError;

pub fn command() -> Command {
    Command::new("agent")
        .arg(Arg::new("join").long("join").value_name("URL").help("The orchestrator to join, http(s)://host:port (every member of a Raft cluster, comma-separated)"))
        .arg(
            Arg::new("token")
                .long("token")
                .value_name("TOKEN")
                .conflicts_with("token-file")
                .help("A join token for an https orchestrator (or its bearer token over http); visible to `ps`, prefer --token-file"),
        )
        .arg(Arg::new("token-file").long("token-file").value_name("FILE").help("A file holding that token"))
}

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    let Some(url) = matches.get_one::<String>("join") else {
        return Err(UsageError(
            "usage: edgebox agent serve | edgebox agent --join URL [--token T | --token-file F]".into(),
        )
        .into());
    };
    let mut cfg = inv.load_config()?.into_role::<Agent>("agent")?.cfg;
    cfg.orchestrator = url.clone();
    if let Some(f) = matches.get_one::<String>("token-file") {
        cfg.token_file = Some(f.into());
    }
    let token = matches.get_one::<String>("token").cloned();
    let agent = Agent::new(cfg).map_err(|e| UsageError(format!("--join: {e}")))?;
    crate::core::lifecycle::run_alone(inv, "agent", Box::new(Agent { token, ..agent }))
}
