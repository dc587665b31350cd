//! `edgebox streamer dump FILE | --server`: decoded binlog events as JSON
//! lines, as `mysqlbinlog -v` shows them.

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
    .subcommand(
        Command::new("bench")
            .about("End-to-end latency and throughput against a local MariaDB and tansu, beside python-mysql-replication")
            .arg(Arg::new("broker").long("broker").default_value("tansu").help("tansu (a real broker) or mock (librdkafka's)"))
            .arg(Arg::new("rates").long("rates").default_value("1000,10000,50000").help("rows/s to hold, comma-separated"))
            .arg(
                Arg::new("seconds")
                    .long("seconds")
                    .default_value("10")
                    .value_parser(clap::value_parser!(u64))
                    .help("seconds per rate"),
            )
            .arg(
                Arg::new("backlog")
                    .long("backlog")
                    .default_value("200000")
                    .value_parser(clap::value_parser!(u64))
                    .help("rows for the throughput run"),
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
        Some(("bench", m)) => {
            let rates: Vec<u64> = m
                .get_one::<String>("rates")
                .map(|r| r.split(',').map(|x| x.trim().parse()).collect::<Result<_, _>>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--rates: {e}"))?
                .unwrap_or_default();
            let seconds = m.get_one::<u64>("seconds").copied().unwrap_or(10).max(1);
            let broker = m.get_one::<String>("broker").map_or("tansu", String::as_str);
            super::bench::run(broker, &rates, seconds, m.get_one::<u64>("backlog").copied().unwrap_or(200_000).max(1))
        }
        _ => anyhow::bail!("usage: edgebox streamer serve|dump|bench"),
    }
}

fn config(inv: &Invocation) -> anyhow::Result<super::config::StreamerConfig> {
    let s: Streamer = inv.load_config()?.into_role("streamer")?;
    Ok(s.cfg)
}
