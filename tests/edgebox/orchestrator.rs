//! The orchestrator and the agent end to end: the real binary, an agent
//! dialling out to an orchestrator over loopback (HTTP/2 cleartext),
//! registering, heartbeating, and finding an orchestrator that starts late.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Appliance, http_get};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn orchestrator(port: u16) -> String {
    format!("[edgebox]\nroles = [\"orchestrator\"]\n[orchestrator]\nlisten = \"127.0.0.1:{port}\"\n")
}

fn agent(port: u16, id: &str) -> String {
    format!(
        "[agent]\norchestrator = \"http://127.0.0.1:{port}\"\nid = \"{id}\"\nreconnect_max_s = 1\n\
         labels = {{ site = \"plant-3\", zone = \"a\" }}\n"
    )
}

/// Waits until the orchestrator shows `id` with `health`.
fn wait_health(port: u16, id: &str, health: &str, within: Duration) -> Value {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http_get(addr, &format!("/v1/nodes/{id}"), &[]);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && v["health"] == health {
            return v;
        }
        assert!(Instant::now() < deadline, "{id}: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_agent_registers_with_its_identity_and_keeps_its_node_ready() {
    let port = free_port();
    let cfg = format!(
        "[edgebox]\nroles = [\"orchestrator\", \"agent\"]\n[orchestrator]\nlisten = \"127.0.0.1:{port}\"\n{}",
        agent(port, "dev-1")
    );
    let app = Appliance::start(&cfg, &["up"]);
    app.wait_ready();
    let node = wait_health(port, "dev-1", "ready", Duration::from_secs(15));
    assert_eq!(node["labels"]["site"], "plant-3");
    assert!(["amd64", "arm64", "riscv64"].contains(&node["arch"].as_str().unwrap()), "{node}");
    assert!(node["capacity"]["cpu_millis"].as_u64().unwrap() >= 1000, "{node}");
    // The agent reports the revision it has seen: the node has converged.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, topo) = http_get(([127, 0, 0, 1], port).into(), "/v1/topology", &[]);
    let topo: Value = serde_json::from_str(&topo).unwrap();
    assert_eq!(topo["groups"][0]["converged"], 1, "{topo}");
    let (_, roles) = app.get("/v1/roles");
    assert!(roles.contains("\"connected\":true"), "{roles}");
    let roles: Value = serde_json::from_str(&roles).unwrap();
    assert_eq!(roles["roles"]["orchestrator"]["detail"]["nodes"]["ready"], 1, "{roles}");
}

#[test]
fn an_agent_waits_for_a_late_orchestrator_and_a_stopped_one_marks_it_dead() {
    let port = free_port();
    let device = Appliance::start(&format!("[edgebox]\nroles = [\"agent\"]\n{}", agent(port, "dev-2")), &["up"]);
    device.wait_log("agent: not connected to the orchestrator");
    let orch = Appliance::start(&orchestrator(port), &["up"]);
    orch.wait_ready();
    wait_health(port, "dev-2", "ready", Duration::from_secs(15));
    // The device goes away: suspect, then dead, within a few intervals.
    drop(device);
    let gone = Instant::now();
    wait_health(port, "dev-2", "dead", Duration::from_secs(15));
    assert!(gone.elapsed() > Duration::from_millis(1500), "dead after {:?}", gone.elapsed());
}

#[test]
fn edgebox_agent_join_joins_an_orchestrator_that_wants_a_token_and_a_wrong_one_is_refused() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("orchestrator.token");
    std::fs::write(&token, "a-join-token-of-32-characters-xx\n").unwrap();
    let orch = Appliance::start(
        &format!("{}auth = \"bearer\"\ntoken_file = \"{}\"\n", orchestrator(port), token.display()),
        &["up"],
    );
    orch.wait_ready();
    let url = format!("http://127.0.0.1:{port}");
    let wrong =
        Appliance::start("[agent]\nid = \"intruder\"\n", &["agent", "--join", &url, "--token", "not-the-token-at-all"]);
    let refused = wrong.wait_log("agent: not connected to the orchestrator");
    assert!(refused.contains("401"), "{refused}");
    let device = Appliance::start(
        "[agent]\nid = \"dev-3\"\n",
        &["agent", "--join", &url, "--token-file", token.to_str().unwrap()],
    );
    // The orchestrator answers only with the token.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) =
            http_get(addr, "/v1/nodes/dev-3", &[("Authorization", "Bearer a-join-token-of-32-characters-xx")]);
        if status == 200 && body.contains("\"health\":\"ready\"") {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(addr, "/v1/nodes/dev-3", &[]).0, 401);
    assert_eq!(
        http_get(addr, "/v1/nodes/intruder", &[("Authorization", "Bearer a-join-token-of-32-characters-xx")]).0,
        404
    );
    drop(device);
}
