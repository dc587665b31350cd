//! What the agent registers: its id (configured, else the host name made
//! into a valid node id), the architecture in Go/OCI spelling (arm64,
//! amd64, riscv64, …), the configured labels, the machine's capacity
//! (CPUs in millicores, memory in MiB) and /etc/machine-id when there is
//! one (so a second device claiming the same id is refused).

use serde_json::{Value, json};

use super::config::AgentConfig;
use crate::core::exit::ConfigProblem;

pub fn registration(cfg: &AgentConfig) -> anyhow::Result<Value> {
    let id = if cfg.id.is_empty() { node_id(&hostname()) } else { cfg.id.clone() };
    if id.is_empty() {
        return Err(ConfigProblem("agent.id is empty and the host name gives no usable id".into()).into());
    }
    let mut reg = json!({"id": id, "arch": arch(std::env::consts::ARCH), "labels": cfg.labels, "capacity": capacity()});
    if let Some(m) =
        std::fs::read_to_string("/etc/machine-id").ok().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty())
    {
        reg["machine_id"] = json!(m);
    }
    Ok(reg)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// A host name as a node id: lower case, anything else as '-', trimmed to
/// 63 characters that start and end with a letter or digit.
pub fn node_id(host: &str) -> String {
    let s: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '-' })
        .take(63)
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

pub fn arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn capacity() -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb / 1024)
    });
    let mut c = json!({"cpu_millis": cpus * 1000});
    if let Some(m) = mem_mib {
        c["memory_mib"] = json!(m);
    }
    c
}

#[cfg(test)]
#[test]
fn host_names_become_node_ids_and_arches_use_go_names() {
    assert_eq!(node_id("Sensor_01.Plant3"), "sensor_01.plant3");
    assert_eq!(node_id("-weird host!-"), "weird-host");
    assert_eq!(node_id(&"a".repeat(80)).len(), 63);
    assert_eq!((arch("x86_64"), arch("aarch64"), arch("riscv64")), ("amd64", "arm64", "riscv64"));
}
