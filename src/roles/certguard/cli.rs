//! `edgebox certguard status|renew|rollback`: the managed certificates of
//! the running appliance (status from the admin listener's role status;
//! renew and rollback through the control socket, answered once the
//! rollout is done).

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::commands::Invocation;
use crate::core::control::{self, Request};
use crate::core::exit::UsageError;
use crate::core::httpclient;

pub fn command() -> Command {
    let name = || Arg::new("name").required(true).help("the managed certificate's name");
    Command::new("certguard")
        .subcommand(
            Command::new("status")
                .about("Show managed certificates: serial, expiry, next renewal, failures")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON")),
        )
        .subcommand(
            Command::new("renew")
                .about("Issue and roll out a new certificate now (canaries first, rolled back on failure)")
                .arg(name())
                .arg(Arg::new("now").long("now").action(ArgAction::SetTrue).required(true).help("renew at once")),
        )
        .subcommand(
            Command::new("issue")
                .about("Issue one certificate from the embedded CA to files (not managed: no reload, no renewal)")
                .arg(Arg::new("name").long("name").default_value("one-off").help("a name for logs"))
                .arg(Arg::new("dns").long("dns").action(ArgAction::Append).help("a DNS name (repeatable)"))
                .arg(Arg::new("ip").long("ip").action(ArgAction::Append).help("an IP address (repeatable)"))
                .arg(Arg::new("spiffe-id").long("spiffe-id").help("a SPIFFE ID (spiffe://…)"))
                .arg(Arg::new("key-type").long("key-type").default_value("ecdsa-p256").help("ecdsa-p256 or ed25519"))
                .arg(Arg::new("lifetime-hours").long("lifetime-hours").default_value("24").help("lifetime"))
                .arg(Arg::new("cert-out").long("cert-out").required(true).help("certificate chain file to write"))
                .arg(Arg::new("key-out").long("key-out").required(true).help("private key file to write (mode 0600)")),
        )
        .subcommand(
            Command::new("bench")
                .about("Time rotating N certificates through the canary rollout on this machine")
                .arg(
                    Arg::new("certs")
                        .long("certs")
                        .default_value("1000")
                        .value_parser(clap::value_parser!(usize))
                        .help("certificates, each with its own TLS listener to probe"),
                )
                .arg(
                    Arg::new("acme")
                        .long("acme")
                        .action(ArgAction::SetTrue)
                        .help("instead: issue one certificate from a real Pebble, certguard against certbot"),
                ),
        )
        .subcommand(
            Command::new("rollback")
                .about("Put the previous certificate back, through the same canary rollout")
                .arg(name()),
        )
}

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    match matches.subcommand() {
        Some(("status", m)) => status(m, inv),
        Some(("bench", m)) if m.get_flag("acme") => super::bench::acme_vs_certbot().map(|_| ()),
        Some(("bench", m)) => {
            super::bench::run(m.get_one::<usize>("certs").copied().unwrap_or(1000).max(1)).map(|_| ())
        }
        Some((op @ ("renew" | "rollback"), m)) => {
            let name = m.get_one::<String>("name").cloned().unwrap_or_default();
            let done = ask(inv, serde_json::json!({ "op": op, "name": name }))?;
            println!("{name}: serial {} in service", done["serial"].as_str().unwrap_or("?"));
            Ok(())
        }
        Some(("issue", m)) => {
            let many = |k: &str| m.get_many::<String>(k).map(|v| v.cloned().collect::<Vec<_>>()).unwrap_or_default();
            let one = |k: &str| m.get_one::<String>(k).cloned();
            let absolute = |k: &str| std::path::absolute(one(k).unwrap_or_default());
            let lifetime: f64 = one("lifetime-hours")
                .unwrap_or_default()
                .parse()
                .map_err(|e| UsageError(format!("--lifetime-hours: {e}")))?;
            let cert = serde_json::json!({
                "name": one("name"), "dns_names": many("dns"), "ip_addresses": many("ip"),
                "spiffe_id": one("spiffe-id"), "key_type": one("key-type"), "lifetime_hours": lifetime,
                "targets": [{ "cert_file": absolute("cert-out")?, "key_file": absolute("key-out")? }],
            });
            let done = ask(inv, serde_json::json!({ "op": "issue", "cert": cert }))?;
            println!(
                "serial {}, valid until {} (Unix seconds)",
                done["serial"].as_str().unwrap_or("?"),
                done["not_after"]
            );
            Ok(())
        }
        _ => anyhow::bail!("usage: edgebox certguard status|renew NAME --now|rollback NAME|issue|bench"),
    }
}

/// Sends a command to the running certguard over the control socket.
fn ask(inv: &Invocation, command: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let socket = inv.load_config()?.core.control_socket();
    control::call(&socket, &Request::Role { role: "certguard".into(), command })
}

fn status(m: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    let admin = inv.load_config()?.core.admin;
    let (to, headers) =
        httpclient::local("admin", admin.listen, admin.auth, admin.token_file.as_deref(), admin.tls.as_ref())?;
    let reply = httpclient::request(&to, "GET", "/v1/roles", &headers, b"")?;
    anyhow::ensure!(reply.status == 200, "admin answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
    let roles: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let certs = &roles["roles"]["certguard"]["detail"]["certificates"];
    let Some(list) = certs.as_array() else {
        anyhow::bail!("the running appliance has no certguard role, or it has not finished its first pass")
    };
    if m.get_flag("json") {
        println!("{}", serde_json::to_string_pretty(certs)?);
        return Ok(());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let until = |v: &serde_json::Value| match v.as_i64() {
        Some(t) if t > 0 => human(t - now),
        _ => "-".into(),
    };
    println!("{:<20} {:<34} {:>12} {:>12} {:>8}  last error", "name", "serial", "expires in", "renews in", "failures");
    for c in list {
        println!(
            "{:<20} {:<34} {:>12} {:>12} {:>8}  {}",
            c["name"].as_str().unwrap_or("?"),
            c["serial"].as_str().unwrap_or("-"),
            until(&c["not_after"]),
            until(&c["renew_at"]),
            c["failures"].as_u64().unwrap_or(0),
            c["last_error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Seconds as the largest unit that keeps a number ≥ 1 ("3d", "5h", "-2m").
fn human(secs: i64) -> String {
    let a = secs.unsigned_abs();
    let sign = if secs < 0 { "-" } else { "" };
    match a {
        0..60 => format!("{sign}{a}s"),
        60..3600 => format!("{sign}{}m", a / 60),
        3600..86_400 => format!("{sign}{}h", a / 3600),
        _ => format!("{sign}{}d", a / 86_400),
    }
}
