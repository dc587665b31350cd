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
    let node = json_call(port, "GET", "/v1/nodes/dev-3", "").1;
    assert_eq!(
        (node["desired"]["wanted"].as_str(), node["desired"]["applied"].as_str()),
        (Some("metrics@1"), Some("metrics@1")),
        "{node}"
    );

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

/// A CA, an orchestrator certificate for localhost signed by it, and the
/// operators' bearer token in a file: what a secure orchestrator (or a
/// cluster of them, orchestrator_raft.rs) is configured with.
pub(crate) struct OperatorPki {
    pub dir: tempfile::TempDir,
    pub ca_file: std::path::PathBuf,
    pub operator: String,
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    token_file: std::path::PathBuf,
}

impl OperatorPki {
    pub fn new() -> OperatorPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::testpki::TestCa::new(dir.path(), "orch");
        let leaf = ca.leaf(dir.path(), "orch", &["localhost", "127.0.0.1"]);
        let operator = "operator-token-0123456789".to_owned();
        let token_file = dir.path().join("operator.token");
        std::fs::write(&token_file, &operator).unwrap();
        let (ca_file, cert_file, key_file) = (ca.ca_file.clone(), leaf.cert_file.clone(), leaf.key_file.clone());
        OperatorPki { dir, ca_file, operator, cert_file, key_file, token_file }
    }

    /// `[orchestrator]` on `port` with bearer auth, trust domain
    /// plant.example, `extra` keys, and TLS.
    pub fn section(&self, port: u16, extra: &str) -> String {
        format!(
            "[orchestrator]\nlisten = \"127.0.0.1:{port}\"\nauth = \"bearer\"\ntoken_file = \"{}\"\n\
             trust_domain = \"plant.example\"\n{extra}[orchestrator.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.token_file.display(),
            self.cert_file.display(),
            self.key_file.display()
        )
    }
}

/// An https orchestrator for joins: its certificate from a test CA, bearer
/// auth for operators, node certificates in trust domain plant.example.
struct Secure {
    app: Appliance,
    port: u16,
    ca: std::path::PathBuf,
    operator: String,
    pki_dir: tempfile::TempDir,
}

impl Secure {
    fn start() -> Secure {
        Self::start_with("")
    }

    /// With `extra` keys in `[orchestrator]`.
    fn start_with(extra: &str) -> Secure {
        let pki = OperatorPki::new();
        let port = free_port();
        let cfg = format!("[edgebox]\nroles = [\"orchestrator\"]\n{}", pki.section(port, extra));
        let app = Appliance::start(&cfg, &["up"]);
        app.wait_ready();
        Secure { app, port, ca: pki.ca_file, operator: pki.operator, pki_dir: pki.dir }
    }

    /// A request as `who`: the operator (bearer) or a client certificate.
    fn call(
        &self,
        who: Option<(&std::path::Path, &std::path::Path)>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let bearer = format!("Authorization: Bearer {}", self.operator);
        let mut extra = vec![];
        if who.is_none() {
            extra.extend(["-H", bearer.as_str()]);
        }
        if let Some(b) = body {
            extra.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let url = format!("https://localhost:{}{path}", self.port);
        crate::support::curl_tls(&self.ca, who, method, &url, &extra)
            .map(|(s, b)| (s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    /// `edgebox orchestrator ARGS` with this orchestrator's config: stdout.
    fn cli(&self, args: &[&str]) -> String {
        let cfg = self.app.dir.path().join("edgebox.toml");
        let mut all = vec!["--config", cfg.to_str().unwrap(), "orchestrator"];
        all.extend(args);
        let out = crate::support::run(&all);
        assert!(out.status.success(), "{args:?}: {}", crate::support::text(&out.stderr));
        crate::support::text(&out.stdout)
    }

    fn join_token(&self, body: &str) -> String {
        let (status, v) = self.call(None, "POST", "/v1/join-tokens", Some(body)).unwrap();
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }
}

/// A certificate request for `id` from a fresh key.
fn csr(id: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, id);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

/// POST /v1/join with `token`: the status.
fn join_with(s: &Secure, token: &str, body: &Value) -> u16 {
    let auth = format!("Authorization: Bearer {token}");
    let extra = ["-H", auth.as_str(), "-H", "Content-Type: application/json", "--data-binary", &body.to_string()];
    let url = format!("https://localhost:{}/v1/join", s.port);
    crate::support::curl_tls(&s.ca, None, "POST", &url, &extra).unwrap().0
}

#[test]
fn a_device_joins_with_a_join_token_and_is_its_node_certificate_from_then_on() {
    let s = Secure::start();
    // The operator's CLI makes, lists and revokes tokens on the running
    // orchestrator (over its TLS, with its bearer token).
    let token = s.cli(&["token", "create", "--ttl", "600", "--uses", "1"]).trim().to_owned();
    assert!(token.starts_with("ebj1."), "{token}");
    let spare = s.cli(&["token", "create"]).trim().to_owned();
    let spare_id = spare.split('.').nth(1).unwrap();
    assert!(s.cli(&["token", "list"]).contains(spare_id));
    s.cli(&["token", "revoke", spare_id]);
    assert!(!s.cli(&["token", "list"]).contains(spare_id));
    // The device joins over https, trusting the orchestrator's CA.
    let device_cfg = format!(
        "[edgebox]\nroles = [\"agent\"]\n[agent]\nid = \"dev-5\"\nreconnect_max_s = 1\n[agent.tls]\nca_file = \"{}\"\n",
        s.ca.display()
    );
    let url = format!("https://localhost:{}", s.port);
    let mut device = Appliance::start(&device_cfg, &["agent", "--join", &url, "--token", &token]);
    let joined = device.wait_log("agent: joined");
    assert!(joined.contains("spiffe://plant.example/node/dev-5"), "{joined}");
    device.wait_log("agent: registered and heartbeating");
    wait_until("dev-5 ready", || {
        s.call(None, "GET", "/v1/nodes/dev-5", None).is_ok_and(|(st, v)| st == 200 && v["health"] == "ready")
    });
    // Its key stays on the device, readable by its owner only; its
    // certificate is an X.509-SVID of the node's SPIFFE ID.
    let agent_dir = device.dir.path().join("data/agent");
    let (cert, key) = (agent_dir.join("node.crt"), agent_dir.join("node.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read(&cert).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let id = edgebox::core::tls::spiffe::SpiffeId::of_svid(&pem.contents).unwrap();
    assert_eq!(id.to_string(), "spiffe://plant.example/node/dev-5");
    // The token was for one join.
    let (_, tokens) = s.call(None, "GET", "/v1/join-tokens", None).unwrap();
    assert_eq!(tokens["tokens"].as_array().map(Vec::len), Some(0), "{tokens}");
    assert_eq!(join_with(&s, &token, &serde_json::json!({"id": "dev-6", "csr": csr("dev-6")})), 401);

    // The certificate is the node, and only that node.
    let node = Some((cert.as_path(), key.as_path()));
    assert_eq!(s.call(node, "GET", "/v1/nodes/dev-5/desired", None).unwrap().0, 200);
    for (method, path) in [
        ("GET", "/v1/nodes/dev-6/desired"),
        ("GET", "/v1/topology"),
        ("PUT", "/v1/deployments/x"),
        ("GET", "/v1/join-tokens"),
    ] {
        let (status, v) = s.call(node, method, path, Some("{}")).unwrap();
        assert_eq!(status, 403, "{method} {path}: {v}");
    }
    let other = serde_json::json!({"id": "dev-6", "arch": "arm64"}).to_string();
    assert_eq!(s.call(node, "POST", "/v1/nodes", Some(&other)).unwrap().0, 403);
    // A certificate naming dev-5 from another CA does not get past the handshake.
    let evil = crate::tls::testpki::TestCa::new(s.pki_dir.path(), "evil");
    let forged = evil.svid(s.pki_dir.path(), "forged", "spiffe://plant.example/node/dev-5", |_| {});
    let refused = s.call(Some((&forged.cert_file, &forged.key_file)), "GET", "/v1/nodes/dev-5/desired", None);
    assert!(refused.is_err(), "a forged node certificate was accepted: {refused:?}");
    // No token, a forged one, one for another node, one for a node another machine holds.
    let body = |id: &str, machine: Option<&str>| serde_json::json!({"id": id, "machine_id": machine, "csr": csr(id)});
    assert_eq!(join_with(&s, "nonsense", &body("dev-7", None)), 401);
    let real = s.join_token(r#"{"uses": 5}"#);
    let forged_token = format!("{}{}", &real[..real.len() - 4], "0000");
    assert_eq!(join_with(&s, &forged_token, &body("dev-7", None)), 401);
    let short = s.join_token(r#"{"ttl_s": 1}"#);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(join_with(&s, &short, &body("dev-7", None)), 401, "an expired token");
    let bound = s.join_token(r#"{"node": "dev-8"}"#);
    assert_eq!(join_with(&s, &bound, &body("dev-7", None)), 401);
    let reg = serde_json::json!({"id": "dev-9", "arch": "arm64", "machine_id": "machine-a"}).to_string();
    assert_eq!(s.call(None, "POST", "/v1/nodes", Some(&reg)).unwrap().0, 201);
    assert_eq!(join_with(&s, &real, &body("dev-9", Some("machine-b"))), 409);
    assert_eq!(join_with(&s, &real, &body("dev-9", Some("machine-a"))), 201);
    assert_eq!(join_with(&s, &real, &serde_json::json!({"id": "dev-10", "csr": "not a csr"})), 400);

    let (_, metrics) = s.app.get("/metrics");
    for needle in [
        "edgebox_orchestrator_joins_total{outcome=\"joined\"} 2",
        "outcome=\"forged\"",
        "outcome=\"expired\"",
        "outcome=\"conflict\"",
        "edgebox_orchestrator_node_forbidden_total",
    ] {
        assert!(metrics.contains(needle), "{needle} not in the metrics");
    }

    // Restarted without a token, the device connects with its certificate.
    let cfg_file = device.dir.path().join("edgebox.toml");
    let dir = std::mem::replace(&mut device.dir, tempfile::tempdir().unwrap());
    drop(device);
    let again = Appliance::start_in(dir, &cfg_file, &["agent", "--join", &url]);
    again.wait_log("agent: registered and heartbeating");
    assert!(!again.logs_so_far().iter().any(|l| l.contains("agent: joined")), "it joined again");
}

#[test]
fn a_node_certificate_is_renewed_over_its_own_mutual_tls_before_it_ends() {
    let s = Secure::start_with("node_cert_ttl_s = 12\n");
    let token = s.join_token(r#"{"uses": 1}"#);
    let device_cfg = format!(
        "[edgebox]\nroles = [\"agent\"]\n[agent]\nid = \"dev-11\"\nreconnect_max_s = 1\n[agent.tls]\nca_file = \"{}\"\n",
        s.ca.display()
    );
    let url = format!("https://localhost:{}", s.port);
    let device = Appliance::start(&device_cfg, &["agent", "--join", &url, "--token", &token]);
    device.wait_log("agent: joined");
    let cert = device.dir.path().join("data/agent/node.crt");
    let first = std::fs::read(&cert).unwrap();
    // Two thirds of 12 s: renewed at about 8 s, then reconnected with it.
    device.wait_log("agent: node certificate renewed");
    assert_ne!(std::fs::read(&cert).unwrap(), first, "the certificate file is the renewed one");
    std::thread::sleep(Duration::from_secs(6));
    // Past the first certificate's end, the node is still ready.
    let (status, v) = s.call(None, "GET", "/v1/nodes/dev-11", None).unwrap();
    assert_eq!((status, v["health"].as_str()), (200, Some("ready")), "{v}");
    let connected = device.logs_so_far().iter().filter(|l| l.contains("agent: registered and heartbeating")).count();
    assert!(connected >= 2, "reconnected {connected} times");
}
