//! `edgebox certguard status`: the managed certificates of the running
//! appliance, read from the admin listener's role status.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::commands::Invocation;
use crate::core::httpclient;

pub fn command() -> Command {
    Command::new("certguard").subcommand(
        Command::new("status")
            .about("Show managed certificates: serial, expiry, next renewal, failures")
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON")),
    )
}

pub fn run(matches: &ArgMatches, inv: &Invocation) -> anyhow::Result<()> {
    let Some(("status", m)) = matches.subcommand() else { anyhow::bail!("usage: edgebox certguard status") };
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
