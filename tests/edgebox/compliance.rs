//! The compliance harness every role passes, starting with the core's own
//! admin service: it starts on a temp store, becomes ready, exports metrics
//! under its prefix, binds only what it declared, and shuts down in time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{Appliance, listening_ports};

/// Drain deadline given to the process; it must exit well within it.
const DEADLINE_MS: u64 = 3000;

fn check(name: &str, config: &str, args: &[&str]) {
    let config = format!("[edgebox]\nshutdown_timeout_ms = {DEADLINE_MS}\n{config}");
    let mut app = Appliance::start(&config, args);
    app.wait_ready();

    let (_, metrics) = app.get("/metrics");
    let prefix = format!("edgebox_{}_", name.replace('-', "_"));
    assert!(metrics.lines().any(|l| l.starts_with(&prefix)), "{name}: no metric starts with {prefix}");
    for metric in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next()) {
        assert!(metrics.contains(&format!("# HELP {metric} ")), "{name}: {metric} has no # HELP line");
    }

    let (_, roles) = app.get("/v1/roles");
    let roles: serde_json::Value = serde_json::from_str(&roles).unwrap();
    assert_eq!(roles["roles"][name]["ready"], true, "{name}: {roles}");
    let declared: BTreeSet<u16> = roles["roles"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|r| r["listeners"].as_object().unwrap().values().cloned().collect::<Vec<_>>())
        .map(|a| a.as_str().unwrap().parse::<std::net::SocketAddr>().unwrap().port())
        .collect();
    let bound = listening_ports(app.child.id());
    assert_eq!(bound, declared, "{name}: binds {bound:?} but declared {declared:?}");

    let asked = Instant::now();
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_millis(DEADLINE_MS + 2000)), Some(0), "{name}");
    assert!(asked.elapsed() < Duration::from_millis(DEADLINE_MS), "{name}: shutdown took {:?}", asked.elapsed());
}

#[test]
fn admin_service_is_compliant() {
    check("admin", "roles = []\n", &["up"]);
}

#[test]
fn every_role_in_the_table_is_compliant() {
    for role in edgebox::roles::ROLES {
        check(role.name, role.compliance_config, &[role.name, "serve"]);
    }
}
