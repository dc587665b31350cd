//! `edgebox orchestrator bench`: simulated agents against a local
//! orchestrator (bench.rs); `edgebox orchestrator token create|list|revoke`:
//! join tokens from the running orchestrator this config describes.

use clap::{Arg, ArgMatches, Command};

use crate::commands::Invocation;
use crate::core::httpclient;

pub fn command() -> Command {
    Command::new("orchestrator")
        .subcommand(
            Command::new("serve")
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .value_name("ADDR")
                        .help("listener, host:port or :port (all addresses)"),
                )
                .arg(
                    Arg::new("raft-dir")
                        .long("raft-dir")
                        .value_name("DIR")
                        .requires_all(["raft-id", "raft-members"])
                        .help("run as a Raft member keeping its log and snapshots here"),
                )
                .arg(
                    Arg::new("raft-id")
                        .long("raft-id")
                        .value_name("N")
                        .value_parser(clap::value_parser!(u64).range(1..))
                        .requires("raft-dir")
                        .help("this member's id"),
                )
                .arg(
                    Arg::new("raft-members")
                        .long("raft-members")
                        .value_name("ID=URL,…")
                        .requires("raft-dir")
                        .help("every member: 1=http://10.0.0.1:8080,2=…,3=…"),
                ),
        )
        .subcommand(
            Command::new("token")
                .about("Join tokens of the running orchestrator (its listener and token from the config)")
                .subcommand_required(true)
                .subcommand(
                    Command::new("create")
                        .about("Makes a join token and prints it (shown this once)")
                        .arg(
                            Arg::new("ttl")
                                .long("ttl")
                                .default_value("3600")
                                .value_parser(clap::value_parser!(u64).range(1..))
                                .help("seconds it stays valid"),
                        )
                        .arg(
                            Arg::new("uses")
                                .long("uses")
                                .default_value("1")
                                .value_parser(clap::value_parser!(u32).range(1..))
                                .help("joins it allows"),
                        )
                        .arg(Arg::new("node").long("node").value_name("ID").help("the one node id it may join as")),
                )
                .subcommand(Command::new("list").about("Lists join tokens (never their secrets)"))
                .subcommand(Command::new("revoke").about("Revokes a join token").arg(Arg::new("id").required(true))),
        )
        .subcommand(
            Command::new("bench")
                .about("Registration rate, heartbeat round trips, CPU, RSS and detection time for simulated fleets")
                .arg(
                    Arg::new("nodes")
                        .long("nodes")
                        .default_value("1000,17000,100000")
                        .help("fleet sizes, comma-separated"),
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

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
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
        Some(("token", m)) => token(m, inv),
        Some(("serve", m)) => serve(m, inv),
        _ => anyhow::bail!("usage: edgebox orchestrator serve|bench|token"),
    }
}

/// `serve` with its options over the config file's `[orchestrator]`.
fn serve(m: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    let usage = |e: String| crate::core::exit::UsageError(e);
    let mut cfg = inv.load_config()?.into_role::<super::Orchestrator>("orchestrator")?.cfg;
    if let Some(l) = m.get_one::<String>("listen") {
        let full = if l.starts_with(':') { format!("0.0.0.0{l}") } else { l.clone() };
        cfg.listen = full.parse().map_err(|e| usage(format!("--listen {l}: {e} (host:port or :port)")))?;
    }
    if let Some(dir) = m.get_one::<String>("raft-dir") {
        let mut members = std::collections::BTreeMap::new();
        for pair in m.get_one::<String>("raft-members").map(String::as_str).unwrap_or("").split(',') {
            let (id, url) =
                pair.split_once('=').ok_or_else(|| usage(format!("--raft-members {pair:?}: expected ID=URL")))?;
            members.insert(id.trim().to_owned(), url.trim().to_owned());
        }
        let defaults = cfg.raft.clone();
        cfg.raft = Some(super::config::RaftConfig {
            id: m.get_one::<u64>("raft-id").copied().unwrap_or_default(),
            dir: dir.into(),
            members,
            heartbeat_ms: defaults.as_ref().map_or(250, |d| d.heartbeat_ms),
            election_timeout_ms: defaults.as_ref().map_or(1500, |d| d.election_timeout_ms),
            snapshot_every: defaults.as_ref().map_or(20_000, |d| d.snapshot_every),
            ca_file: defaults.and_then(|d| d.ca_file),
        });
    }
    let role = super::Orchestrator::new(cfg).map_err(usage)?;
    crate::core::lifecycle::run_alone(inv, "orchestrator", Box::new(role))
}

/// `token create|list|revoke` against the running orchestrator.
fn token(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    let o: super::Orchestrator = inv.load_config()?.into_role("orchestrator")?;
    let c = &o.cfg;
    let (to, mut headers) =
        httpclient::local("orchestrator", c.listen, c.auth, c.token_file.as_deref(), c.tls.as_ref())?;
    let (method, path, body) = match matches.subcommand() {
        Some(("create", m)) => {
            headers.push(("Content-Type", "application/json".into()));
            let body = serde_json::json!({
                "ttl_s": m.get_one::<u64>("ttl").copied().unwrap_or(3600),
                "uses": m.get_one::<u32>("uses").copied().unwrap_or(1),
                "node": m.get_one::<String>("node"),
            });
            ("POST", "/v1/join-tokens".to_owned(), body.to_string())
        }
        Some(("revoke", m)) => {
            let id = m.get_one::<String>("id").cloned().unwrap_or_default();
            ("DELETE", format!("/v1/join-tokens/{id}"), String::new())
        }
        _ => ("GET", "/v1/join-tokens".to_owned(), String::new()),
    };
    let reply = httpclient::request(&to, method, &path, &headers, body.as_bytes())?;
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    anyhow::ensure!(
        (200..300).contains(&reply.status),
        "{method} {path}: {} {}",
        reply.status,
        v["error"].as_str().unwrap_or_default()
    );
    match v["token"].as_str() {
        // Only the token on stdout, so `T=$(edgebox orchestrator token create)` works.
        Some(t) => {
            println!("{t}");
            eprintln!("join token {} valid until {} ms, {} use(s)", v["id"], v["expires_ms"], v["uses"]);
        }
        None => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(())
}
