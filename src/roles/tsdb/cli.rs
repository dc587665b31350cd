//! `edgebox tsdb write|query`: talk to the running tsdb from a shell.

use std::io::Read;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::promql::{Metric, format_value};
use crate::commands::Invocation;
use crate::core::httpclient::{self, Endpoint};

pub fn command() -> Command {
    Command::new("tsdb")
        .subcommand(
            Command::new("write")
                .about("Write line protocol (arguments, or stdin) to the running tsdb")
                .arg(Arg::new("lines").num_args(0..).help("lines of line protocol; none: read stdin"))
                .arg(
                    Arg::new("precision")
                        .long("precision")
                        .default_value("ns")
                        .help("timestamp unit: ns, us, ms, s, m, h"),
                ),
        )
        .subcommand(
            Command::new("query")
                .about("Run a PromQL query against the running tsdb")
                .arg(Arg::new("promql").required(true))
                .arg(Arg::new("time").long("time").help("instant query time (Unix seconds or RFC 3339); default now"))
                .arg(Arg::new("start").long("start").help("range query start"))
                .arg(Arg::new("end").long("end").help("range query end (default now)"))
                .arg(Arg::new("step").long("step").default_value("60s").help("range query step"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the API's JSON")),
        )
        .subcommand(
            Command::new("bench")
                .about("Benchmark against VictoriaMetrics and InfluxDB on this machine (same data, same run)")
                .arg(
                    Arg::new("hosts")
                        .long("hosts")
                        .default_value("100")
                        .value_parser(clap::value_parser!(usize))
                        .help("simulated hosts, 100 series each"),
                )
                .arg(
                    Arg::new("points")
                        .long("points")
                        .default_value("200")
                        .value_parser(clap::value_parser!(usize))
                        .help("samples per series, 15 s apart"),
                )
                .arg(
                    Arg::new("batch")
                        .long("batch")
                        .default_value("10000")
                        .value_parser(clap::value_parser!(usize))
                        .help("lines per write request"),
                )
                .arg(
                    Arg::new("clients")
                        .long("clients")
                        .default_value("2")
                        .value_parser(clap::value_parser!(usize))
                        .help("concurrent writers"),
                )
                .arg(
                    Arg::new("peers")
                        .long("peers")
                        .default_value("victoria-metrics,influxdb")
                        .help("peers to compare with, comma-separated; empty for none"),
                )
                .arg(
                    Arg::new("rss-series")
                        .long("rss-series")
                        .default_value("100000")
                        .value_parser(clap::value_parser!(usize))
                        .help("active series for the RSS measurement"),
                )
                .arg(
                    Arg::new("rss-points")
                        .long("rss-points")
                        .default_value("1")
                        .value_parser(clap::value_parser!(usize))
                        .help("samples each of them gets, 15 s apart (a chunk seals at 240)"),
                ),
        )
}

/// The running role's listener as the config describes it, and the headers
/// that authenticate to it.
fn tsdb_endpoint(inv: &Invocation) -> anyhow::Result<(Endpoint, Vec<(&'static str, String)>)> {
    let tsdb: super::Tsdb = inv.load_config()?.into_role("tsdb")?;
    let c = &tsdb.cfg;
    httpclient::local("tsdb", c.listen, c.auth, c.token_file.as_deref(), c.tls.as_ref())
}

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    if let Some(("bench", m)) = matches.subcommand() {
        let n = |k: &str| m.get_one::<usize>(k).copied().unwrap_or(1).max(1);
        let peers = m
            .get_one::<String>("peers")
            .map(|p| p.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        return super::bench::run(&super::bench::Options {
            hosts: n("hosts"),
            points: n("points"),
            batch: n("batch"),
            clients: n("clients"),
            peers,
            rss_series: n("rss-series"),
            rss_points: n("rss-points"),
        });
    }
    let (to, mut headers) = tsdb_endpoint(inv)?;
    match matches.subcommand() {
        Some(("write", m)) => {
            let body = match m.get_many::<String>("lines") {
                Some(lines) => lines.cloned().collect::<Vec<_>>().join("\n").into_bytes(),
                None => {
                    let mut b = Vec::new();
                    std::io::stdin().read_to_end(&mut b)?;
                    b
                }
            };
            let precision = m.get_one::<String>("precision").map_or("ns", String::as_str);
            let reply = httpclient::request(&to, "POST", &format!("/write?precision={precision}"), &headers, &body)?;
            if reply.status == 204 {
                return Ok(());
            }
            anyhow::bail!("tsdb answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body).trim());
        }
        Some(("query", m)) => {
            let q = m.get_one::<String>("promql").cloned().unwrap_or_default();
            let mut form: Vec<(String, String)> = vec![("query".into(), q)];
            let range = m.get_one::<String>("start").is_some();
            let path = if range {
                for k in ["start", "end", "step"] {
                    if let Some(v) = m.get_one::<String>(k) {
                        form.push((k.into(), v.clone()));
                    }
                }
                if m.get_one::<String>("end").is_none() {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
                    form.push(("end".into(), now.to_string()));
                }
                "/api/v1/query_range"
            } else {
                if let Some(t) = m.get_one::<String>("time") {
                    form.push(("time".into(), t.clone()));
                }
                "/api/v1/query"
            };
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
            headers.push(("Content-Type", "application/x-www-form-urlencoded".into()));
            let reply = httpclient::request(&to, "POST", path, &headers, body.as_bytes())?;
            let v: serde_json::Value = serde_json::from_slice(&reply.body)
                .map_err(|e| anyhow::anyhow!("tsdb answered {} with a body that is not JSON: {e}", reply.status))?;
            if v["status"] != "success" {
                anyhow::bail!("{}", v["error"].as_str().unwrap_or("query failed"));
            }
            if m.get_flag("json") {
                println!("{}", serde_json::to_string_pretty(&v["data"])?);
            } else {
                print_table(&v["data"]);
            }
            Ok(())
        }
        _ => {
            Err(crate::core::exit::UsageError("`edgebox tsdb` needs a subcommand: serve, write or query".into()).into())
        }
    }
}

fn print_table(data: &serde_json::Value) {
    let metric = |m: &serde_json::Value| {
        let pairs: Vec<(String, String)> = m
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
            .collect();
        let m = Metric::new(pairs);
        let name = m.get("__name__").unwrap_or("").to_owned();
        let rest: Vec<String> = m.without_name().labels().iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{name}{{{}}}", rest.join(", "))
    };
    match data["resultType"].as_str() {
        Some("scalar" | "string") => println!("{}", data["result"][1].as_str().unwrap_or("")),
        Some("vector") => {
            for s in data["result"].as_array().into_iter().flatten() {
                println!("{}  {}", metric(&s["metric"]), s["value"][1].as_str().unwrap_or(""));
            }
        }
        _ => {
            for s in data["result"].as_array().into_iter().flatten() {
                println!("{}", metric(&s["metric"]));
                for p in s["values"].as_array().into_iter().flatten() {
                    println!("  {}  {}", p[0], p[1].as_str().unwrap_or(&format_value(f64::NAN)));
                }
            }
        }
    }
}
