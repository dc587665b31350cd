//! `edgebox streamer dump FILE | --server`: decoded binlog events as JSON
//! lines, as `mysqlbinlog -v` shows them.

use std::any::Any;

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Streamer;
use crate::commands::Invocation;

pub fn command() -> Command {
    Command::new("streamer").subcommand(
        Command::new("dump")
            .about("Print binlog events as JSON lines, from a file or from the configured source")
            .arg(Arg::new("file").help("a binlog file (omit with --server)"))
            .arg(
                Arg::new("server")
                    .long("server")
                    .action(ArgAction::SetTrue)
                    .help("read from [streamer.source] as a replica"),
            )
            .arg(
                Arg::new("from")
                    .long("from")
                    .help("with --server: earliest, current, gtid:<pos> or file:<name>:<pos> (default: earliest)"),
            )
            .arg(
                Arg::new("follow")
                    .long("follow")
                    .action(ArgAction::SetTrue)
                    .help("with --server: wait for new events instead of stopping at the end"),
            ),
    )
}

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    // `streamer dump … | head` ends quietly when the reader goes away.
    let quiet_on_closed_pipe = |r: anyhow::Result<()>| match r {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            Ok(())
        }
        other => other,
    };
    quiet_on_closed_pipe(dispatch(matches, inv))
}

fn dispatch(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("dump", m)) => {
            let mut out = std::io::stdout().lock();
            if m.get_flag("server") {
                let cfg = config(inv)?;
                let mut src =
                    cfg.source.clone().context("streamer dump --server needs [streamer.source] in the config")?;
                if let Some(from) = m.get_one::<String>("from") {
                    src.start = from.clone();
                } else {
                    src.start = "earliest".into();
                }
                super::config::Start::parse(&src.start).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(super::dump::server(&src, m.get_flag("follow"), &mut out))
            } else {
                let file = m.get_one::<String>("file").context("streamer dump: give a binlog FILE or --server")?;
                super::dump::file(std::path::Path::new(file), &mut out)
            }
        }
        _ => anyhow::bail!("usage: edgebox streamer serve|dump"),
    }
}

fn config(inv: &Invocation) -> anyhow::Result<super::config::StreamerConfig> {
    let loaded = inv.load_config()?;
    let role = loaded.roles.into_iter().find(|r| r.entry.name == "streamer").map(|r| r.role as Box<dyn Any>);
    let s = role.and_then(|r| r.downcast::<Streamer>().ok()).context("the config does not run the streamer role")?;
    Ok(s.cfg)
}
