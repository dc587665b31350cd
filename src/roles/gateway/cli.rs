//! `edgebox gateway check`: reads the config and every document, policy and
//! key file it names, compiles them as `serve` would, and prints the
//! operations and who may call them, so a change is tried before a reload.

use clap::{Arg, ArgMatches, Command};

use super::Gateway;
use super::state::{HealthBook, State};
use crate::commands::Invocation;

pub fn command() -> Command {
    Command::new("gateway")
        .subcommand(
            Command::new("check").about("Compile the configured OpenAPI documents and policies; print the operations"),
        )
        .subcommand(
            Command::new("bench")
                .about("Requests/s and latency through the gateway, direct, and through nginx (mTLS), in one run")
                .arg(
                    Arg::new("concurrency")
                        .long("concurrency")
                        .default_value("32")
                        .value_parser(clap::value_parser!(usize))
                        .help("keep-alive connections"),
                )
                .arg(
                    Arg::new("seconds")
                        .long("seconds")
                        .default_value("10")
                        .value_parser(clap::value_parser!(u64))
                        .help("seconds of load per target"),
                ),
        )
}

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("check", _)) => check(inv),
        Some(("bench", m)) => {
            let concurrency = m.get_one::<usize>("concurrency").copied().unwrap_or(32).max(1);
            super::bench::run(concurrency, m.get_one::<u64>("seconds").copied().unwrap_or(10).max(1))
        }
        _ => anyhow::bail!("usage: edgebox gateway serve|check|bench"),
    }
}

fn check(inv: &Invocation) -> anyhow::Result<()> {
    let gateway: Gateway = inv.load_config()?.into_role("gateway")?;
    let state = State::build(&gateway.cfg, &HealthBook::default())?;
    for svc in &state.services {
        println!(
            "{} → {}{}",
            svc.name,
            svc.stable.url,
            svc.canary
                .as_ref()
                .map(|c| format!(" (canary {} at {}%)", c.upstream.url, c.cfg.percent))
                .unwrap_or_default()
        );
        for route in &svc.api.routes {
            for (_, op) in &route.operations {
                let who = op.allow.as_ref().map_or("nobody (no rule)".to_owned(), |a| a.join(", "));
                let mode = if op.shadow { " [shadow]" } else { "" };
                println!("  {:<40} {:<24} {who}{mode}", op.route, op.id);
            }
        }
    }
    println!("ok: {} services", state.services.len());
    Ok(())
}
