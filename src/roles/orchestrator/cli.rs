//! `edgebox orchestrator bench`: simulated agents against a local
//! orchestrator (bench.rs).

use clap::{Arg, ArgMatches, Command};

use crate::commands::Invocation;

pub fn command() -> Command {
    Command::new("orchestrator").subcommand(
        Command::new("bench")
            .about("Registration rate, heartbeat round trips, CPU, RSS and detection time for simulated fleets")
            .arg(
                Arg::new("nodes").long("nodes").default_value("1000,17000,100000").help("fleet sizes, comma-separated"),
            )
            .arg(
                Arg::new("budget")
                    .long("budget")
                    .default_value("20000")
                    .value_parser(clap::value_parser!(u32).range(1..))
                    .help("heartbeat_budget_per_s of the orchestrator under test"),
            )
            .arg(
                Arg::new("seconds")
                    .long("seconds")
                    .default_value("20")
                    .value_parser(clap::value_parser!(u64).range(1..))
                    .help("measurement window per fleet size"),
            )
            .arg(
                Arg::new("max-unavailable")
                    .long("max-unavailable")
                    .default_value("25")
                    .value_parser(clap::value_parser!(u8).range(1..=100))
                    .help("the timed rollout's max_unavailable, in percent of the fleet"),
            )
            .arg(
                Arg::new("silence")
                    .long("silence")
                    .default_value("20")
                    .value_parser(clap::value_parser!(usize))
                    .help("agents made silent to time detection"),
            ),
    )
}

pub fn run(matches: &ArgMatches, _inv: &Invocation) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("bench", m)) => {
            let nodes = m
                .get_one::<String>("nodes")
                .map(|r| r.split(',').map(|x| x.trim().parse::<usize>()).collect::<Result<Vec<_>, _>>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--nodes: {e}"))?
                .unwrap_or_default();
            anyhow::ensure!(nodes.iter().all(|&n| n > 0), "--nodes: fleet sizes of at least 1");
            super::bench::run(&super::bench::Options {
                nodes,
                budget: m.get_one::<u32>("budget").copied().unwrap_or(20_000),
                seconds: m.get_one::<u64>("seconds").copied().unwrap_or(20),
                silence: m.get_one::<usize>("silence").copied().unwrap_or(20),
                max_unavailable_percent: m.get_one::<u8>("max-unavailable").copied().unwrap_or(25),
            })
        }
        _ => anyhow::bail!("usage: edgebox orchestrator serve|bench"),
    }
}
