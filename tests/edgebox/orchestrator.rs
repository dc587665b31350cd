//! The orchestrator and the agent end to end: the real binary, an agent
//! dialling out to an orchestrator over loopback (HTTP/2 cleartext),
//! registering, heartbeating, and finding an orchestrator that starts late.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Appliance, free_port, http, http_get, wait_until};

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

fn json_call(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = http(([127, 0, 0, 1], port).into(), method, path, &[], body.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The tsdb's buildinfo with and without the bearer token: both statuses.
fn tsdb_answers(port: u16, token: &str) -> (u16, u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if std::net::TcpStream::connect(addr).is_err() {
        return (0, 0);
    }
    let bearer = format!("Bearer {token}");
    let with = http(addr, "GET", "/api/v1/status/buildinfo", &[("Authorization", &bearer)], b"").0;
    let without = http(addr, "GET", "/api/v1/status/buildinfo", &[], b"").0;
    (with, without)
}

#[test]
fn a_device_runs_its_desired_state_and_keeps_running_it_while_the_orchestrator_is_away() {
    let (port, tsdb_port) = (free_port(), free_port());
    let mut orch = Appliance::start(&orchestrator(port), &["up"]);
    orch.wait_ready();
    // A deployment: a tsdb whose bearer token is a file the orchestrator serves.
    let token = "s3cret-for-the-plant";
    let (status, blob) = json_call(port, "POST", "/v1/blobs", &format!("{token}\n"));
    assert_eq!(status, 201, "{blob}");
    let config = format!(
        "[tsdb]\nlisten = \"127.0.0.1:{tsdb_port}\"\nauth = \"bearer\"\ntoken_file = \"${{files}}/tsdb.token\"\n"
    );
    let spec = serde_json::json!({"selector": "site=plant-3", "config": config,
        "files": {"tsdb.token": blob["digest"]}, "strategy": {"canary_percent": 0}});
    let (status, v) = json_call(port, "PUT", "/v1/deployments/metrics", &spec.to_string());
    assert_eq!(status, 201, "{v}");

    // The device is configured with the agent only; the tsdb comes from
    // its desired state, token file included.
    let device_cfg = format!("[edgebox]\nroles = [\"agent\"]\n{}apply_timeout_s = 10\n", agent(port, "dev-3"));
    let mut device = Appliance::start(&device_cfg, &["up"]);
    wait_until("the tsdb deployed to the device", || tsdb_answers(tsdb_port, token) == (200, 401));
    let (_, roles) = device.get("/v1/roles");
    let roles: Value = serde_json::from_str(&roles).unwrap();
    assert_eq!(
        (roles["roles"]["tsdb"]["managed"].as_bool(), roles["roles"]["tsdb"]["ready"].as_bool()),
        (Some(true), Some(true)),
        "{roles}"
    );
    wait_until("the rollout to complete", || {
        let v = json_call(port, "GET", "/v1/deployments/metrics", "").1;
        v["phase"] == "complete" && v["progress"]["updated"] == 1
    });

    // Offline: the orchestrator stops, the device restarts, and runs the
    // same tsdb from its saved desired state.
    let orch_cfg = orch.dir.path().join("edgebox.toml");
    let orch_dir = std::mem::replace(&mut orch.dir, tempfile::tempdir().unwrap());
    drop(orch);
    let cfg = device.dir.path().join("edgebox.toml");
    let dir = std::mem::replace(&mut device.dir, tempfile::tempdir().unwrap());
    drop(device);
    let device = Appliance::start_in(dir, &cfg, &["up"]);
    device.wait_log("applying the desired state saved by the last run");
    wait_until("the tsdb back without an orchestrator", || tsdb_answers(tsdb_port, token) == (200, 401));
    device.wait_log("agent: not connected to the orchestrator");

    // The orchestrator returns; a version that cannot start (its port is
    // taken) fails on the device and pauses the rollout, naming why.
    let orch = Appliance::start_in(orch_dir, &orch_cfg, &["up"]);
    orch.wait_ready();
    wait_health(port, "dev-3", "ready", Duration::from_secs(15));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = config.replace(&tsdb_port.to_string(), &taken.local_addr().unwrap().port().to_string());
    let spec = serde_json::json!({"selector": "site=plant-3", "config": busy,
        "files": {"tsdb.token": blob["digest"]}, "strategy": {"canary_percent": 0}});
    let (status, v) = json_call(port, "PUT", "/v1/deployments/metrics", &spec.to_string());
    assert_eq!((status, v["version"].as_u64()), (200, Some(2)), "{v}");
    wait_until("the rollout to pause", || json_call(port, "GET", "/v1/deployments/metrics", "").1["phase"] == "paused");
    let v = json_call(port, "GET", "/v1/deployments/metrics", "").1;
    let reason = v["paused_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("dev-3") && reason.contains("bind"), "{v}");
    // A fixed version rolls out past the pause and the tsdb serves again.
    let spec = serde_json::json!({"selector": "site=plant-3", "config": format!("{config}retention_days = 7\n"),
        "files": {"tsdb.token": blob["digest"]}, "strategy": {"canary_percent": 0}});
    assert_eq!(json_call(port, "PUT", "/v1/deployments/metrics", &spec.to_string()).0, 200);
    wait_until("version 3 on the device", || tsdb_answers(tsdb_port, token) == (200, 401));
    wait_until("the rollout to complete", || {
        json_call(port, "GET", "/v1/deployments/metrics", "").1["phase"] == "complete"
    });
    drop((orch, taken));
}

/// A managed role's entry on the device's /v1/roles.
fn managed_role(device: &Appliance, role: &str) -> Value {
    let (_, roles) = device.get("/v1/roles");
    serde_json::from_str::<Value>(&roles).unwrap()["roles"][role].clone()
}

#[test]
fn desired_state_changes_reload_restart_and_stop_roles_and_the_device_keeps_its_own() {
    let (port, tsdb_port) = (free_port(), free_port());
    let orch = Appliance::start(&orchestrator(port), &["up"]);
    orch.wait_ready();
    // The device runs a tsdb of its own config; desired state cannot take it.
    let device_cfg = format!(
        "[edgebox]\nroles = [\"agent\", \"tsdb\"]\n[tsdb]\nlisten = \"127.0.0.1:0\"\n{}apply_timeout_s = 10\n",
        agent(port, "dev-4")
    );
    let device = Appliance::start(&device_cfg, &["up"]);
    let put = |name: &str, config: &str| {
        let spec = serde_json::json!({"config": config, "strategy": {"canary_percent": 0, "max_unavailable": 5}});
        json_call(port, "PUT", &format!("/v1/deployments/{name}"), &spec.to_string())
    };
    assert_eq!(put("local", &format!("[tsdb]\nlisten = \"127.0.0.1:{tsdb_port}\"\n")).0, 201);
    wait_until("the deployment refused on the device", || {
        let v = json_call(port, "GET", "/v1/deployments/local", "").1;
        v["progress"]["failures"][0]["error"].as_str().is_some_and(|e| e.contains("configured on this device"))
    });
    assert_eq!(json_call(port, "DELETE", "/v1/deployments/local", "").0, 200);

    // A role that reloads (certguard) takes a changed section in place.
    assert_eq!(put("ca", "[certguard]\ncheck_interval_s = 30\n").0, 201);
    wait_until("certguard managed and ready", || managed_role(&device, "certguard")["ready"] == true);
    assert_eq!(put("ca", "[certguard]\ncheck_interval_s = 31\n").0, 200);
    wait_until("certguard reloaded", || {
        managed_role(&device, "certguard")["last_reload"].as_str().is_some_and(|r| r.contains("generation 1"))
    });
    assert!(device.wait_log("managed role applied").contains("Started"));
    assert!(device.wait_log("managed role applied").contains("Reloaded"));
    // Removing a deployment stops its role; the device's own tsdb stays.
    assert_eq!(json_call(port, "DELETE", "/v1/deployments/ca", "").0, 200);
    wait_until("certguard stopped", || managed_role(&device, "certguard").is_null());
    assert_eq!(managed_role(&device, "tsdb")["ready"], true);
    assert!(managed_role(&device, "tsdb")["managed"].is_null(), "the device's own tsdb is not managed");
}
