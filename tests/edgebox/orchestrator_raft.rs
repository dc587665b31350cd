//! Three orchestrators as one Raft cluster, each the real binary on
//! loopback (`edgebox orchestrator serve --raft-dir … --raft-id …
//! --raft-members …`): a registration storm across all three, the leader
//! killed with SIGKILL in the middle of it, and then every acknowledged
//! registration looked for on the survivors and on the killed member once
//! it is back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Appliance, free_port, http_get, wait_until};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// One POST that reports a dead member as status 0 instead of panicking.
fn post(to: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A GET's JSON answer; Null from a member that is down.
fn get(port: u16, path: &str) -> Value {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)) else { return Value::Null };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    resp.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null)
}

fn raft(port: u16) -> Value {
    get(port, "/v1/raft")
}

/// Member `i` configured by `[orchestrator.raft]` (the secure test below
/// uses the command line), snapshotting every 100 entries so a member
/// that was away catches up from a snapshot.
fn start(ports: &[u16; 3], i: usize, dir: Option<tempfile::TempDir>) -> Appliance {
    let members: Vec<String> =
        ports.iter().enumerate().map(|(j, p)| format!("\"{}\" = \"http://127.0.0.1:{p}\"", j + 1)).collect();
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let cfg = format!(
        "[edgebox]\nroles = [\"orchestrator\"]\n[orchestrator]\nlisten = \"127.0.0.1:{}\"\n[orchestrator.raft]\nid = {}\n\
         dir = \"{}\"\nsnapshot_every = 100\nmembers = {{ {} }}\n",
        ports[i],
        i + 1,
        dir.path().join("raft").display(),
        members.join(", ")
    );
    let cfg_path = dir.path().join("edgebox.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    Appliance::start_in(dir, &cfg_path, &["orchestrator", "serve"])
}

fn leader(ports: &[u16; 3], alive: &[usize]) -> Option<usize> {
    alive.iter().copied().find(|&i| raft(ports[i])["state"] == "leader")
}

#[test]
fn killing_the_leader_during_a_registration_storm_loses_no_acknowledged_registration() {
    let ports = [free_port(), free_port(), free_port()];
    let mut members: Vec<Appliance> = (0..3).map(|i| start(&ports, i, None)).collect();
    let mut first = None;
    wait_until("a raft leader every member knows", || {
        first = leader(&ports, &[0, 1, 2]);
        first.is_some() && ports.iter().all(|p| raft(*p)["leader"].as_u64() == first.map(|l| l as u64 + 1))
    });
    let old = first.unwrap();
    let follower = (old + 1) % 3;
    // A follower sends reads that need the leader's view there, and hands
    // its writes to the leader.
    let (status, body) = http_get(addr(ports[follower]), "/v1/nodes", &[]);
    assert_eq!(status, 307, "{body}");
    assert!(body.contains(&format!("127.0.0.1:{}", ports[old])), "{body}");
    let (status, body) = post(addr(ports[follower]), "/v1/nodes", r#"{"id":"via-follower","arch":"arm64"}"#);
    assert_eq!(status, 201, "{body}");

    // The storm: registrations round-robin over the members; on a refusal
    // or a dead member the same id goes to the next one.
    let acked = Arc::new(Mutex::new(vec!["via-follower".to_owned()]));
    let stop = Arc::new(AtomicBool::new(false));
    // When each acknowledged registration was sent and answered.
    let acked_at = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
    let storm: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, acked_at) = (acked.clone(), stop.clone(), acked_at.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("storm-{w}-{n}");
                    let body = format!(r#"{{"id":"{id}","arch":"amd64","labels":{{"site":"s{}"}}}}"#, n % 7);
                    for k in 0..3 {
                        let sent = Instant::now();
                        let (status, _) = post(addr(ports[(n + k) % 3]), "/v1/nodes", &body);
                        if status == 201 || status == 200 {
                            acked.lock().unwrap().push(id.clone());
                            acked_at.lock().unwrap().push((sent, Instant::now()));
                            break;
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    members[old].child.kill().unwrap();
    members[old].child.wait().unwrap();
    let alive: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut new = None;
    wait_until("a new leader", || {
        new = leader(&ports, &alive);
        new.is_some()
    });
    let new = new.unwrap();
    let elected_after = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let first_sent_after_kill = acked_at
        .lock()
        .unwrap()
        .iter()
        .filter(|(sent, _)| *sent > killed_at)
        .map(|(_, done)| *done)
        .min()
        .map(|t| t.duration_since(killed_at));
    eprintln!(
        "raft storm: {} acknowledged ({} before the kill), new leader member {} seen after {:?}, the first write sent after the kill acknowledged {:?} after it",
        acked.len(),
        before,
        new + 1,
        elected_after,
        first_sent_after_kill
    );
    let served = first_sent_after_kill.expect("no registration sent after the leader was killed was acknowledged");
    // About 5 s here (election timeout 1.5–3 s after the leader lease);
    // the bound leaves room for a machine busy with other tests.
    assert!(served < Duration::from_secs(15), "the cluster served again only after {served:?}");
    assert!(acked.len() > before, "nothing registered after the kill");

    // Every acknowledged registration is on the new leader ...
    let mut registered = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let (status, body) = http_get(addr(ports[new]), &format!("/v1/nodes?limit=1000{after}"), &[]);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        for n in v["nodes"].as_array().unwrap() {
            registered.insert(n["id"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !registered.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged registrations lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    // ... and on every member, the killed one too once it is back.
    let dir = std::mem::replace(&mut members[old].dir, tempfile::tempdir().unwrap());
    members[old] = start(&ports, old, Some(dir));
    let total = registered.len();
    for (i, port) in ports.iter().enumerate() {
        wait_until(&format!("member {} holding all {total} nodes", i + 1), || get(*port, "/health")["nodes"] == total);
    }
    let back = raft(ports[old]);
    assert_eq!(back["state"], "follower", "{back}");
    assert_eq!(back["leader"], new as u64 + 1, "{back}");
    // It was too far behind for the log: it installed a snapshot.
    members[old].wait_log("orchestrator: raft snapshot installed");
}

/// A cluster on TLS with bearer auth, all members presenting one
/// certificate (the members pin it when dialling each other).
struct SecureCluster {
    members: Vec<Appliance>,
    ports: [u16; 3],
    ca: std::path::PathBuf,
    operator: String,
    cfgs: Vec<std::path::PathBuf>,
    args: Vec<Vec<String>>,
    _pki: crate::orchestrator::OperatorPki,
}

impl SecureCluster {
    fn start() -> SecureCluster {
        let pki = crate::orchestrator::OperatorPki::new();
        let ports = [free_port(), free_port(), free_port()];
        let members: Vec<String> =
            ports.iter().enumerate().map(|(j, p)| format!("{}=https://localhost:{p}", j + 1)).collect();
        let (mut apps, mut cfgs, mut all_args) = (Vec::new(), Vec::new(), Vec::new());
        for (i, port) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let cfg = format!("[edgebox]\nroles = [\"orchestrator\"]\n{}", pki.section(*port, ""));
            let cfg_path = dir.path().join("edgebox.toml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let raft_dir = dir.path().join("raft").to_str().unwrap().to_owned();
            let args: Vec<String> = [
                "orchestrator",
                "serve",
                "--raft-dir",
                &raft_dir,
                "--raft-id",
                &(i + 1).to_string(),
                "--raft-members",
                &members.join(","),
            ]
            .map(str::to_owned)
            .to_vec();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            apps.push(Appliance::start_in(dir, &cfg_path, &refs));
            cfgs.push(cfg_path);
            all_args.push(args);
        }
        let (ca, operator) = (pki.ca_file.clone(), pki.operator.clone());
        SecureCluster { members: apps, ports, ca, operator, cfgs, args: all_args, _pki: pki }
    }

    /// A request to member `i` as the operator: status and JSON, or curl's
    /// complaint (a member that is down).
    fn call(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), String> {
        let bearer = format!("Authorization: Bearer {}", self.operator);
        let mut extra = vec!["-H", bearer.as_str()];
        if let Some(b) = body {
            extra.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let url = format!("https://localhost:{}{path}", self.ports[i]);
        crate::support::curl_tls(&self.ca, None, method, &url, &extra)
            .map(|(s, b)| (s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    /// The member every live member agrees leads.
    fn agreed_leader(&self, alive: &[usize]) -> Option<usize> {
        let seen: Vec<Option<u64>> = alive
            .iter()
            .map(|&i| self.call(i, "GET", "/v1/raft", None).ok().and_then(|(_, v)| v["leader"].as_u64()))
            .collect();
        let first = seen.first().copied().flatten()?;
        seen.iter().all(|s| *s == Some(first)).then_some(first as usize - 1)
    }

    /// Whether member `i` shows `node` ready.
    fn ready(&self, i: usize, node: &str) -> bool {
        self.call(i, "GET", &format!("/v1/nodes/{node}"), None).is_ok_and(|(s, v)| s == 200 && v["health"] == "ready")
    }

    fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("https://localhost:{p}")).collect::<Vec<_>>().join(",")
    }
}

#[test]
fn a_device_joins_a_secure_cluster_through_a_follower_and_follows_a_new_leader() {
    let mut c = SecureCluster::start();
    let mut leader = None;
    wait_until("a raft leader every member knows", || {
        leader = c.agreed_leader(&[0, 1, 2]);
        leader.is_some()
    });
    let old = leader.unwrap();
    let follower = (old + 1) % 3;
    // The node CA is one CA: every member's bundle is the same certificate.
    let bundle = |i: usize| std::fs::read(c.members[i].dir.path().join("data/orchestrator/node-ca.pem")).unwrap();
    wait_until("one node CA on every member", || bundle(0) == bundle(1) && bundle(1) == bundle(2));
    // A join token made on a follower (the write goes to the leader).
    let (status, v) = c.call(follower, "POST", "/v1/join-tokens", Some(r#"{"uses": 1}"#)).unwrap();
    assert_eq!(status, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    // The device is given every member, the follower first: it joins there,
    // is sent on to the leader, and heartbeats with its node certificate.
    let mut urls: Vec<String> = c.urls().split(',').map(str::to_owned).collect();
    urls.rotate_left(follower);
    let device_cfg = format!(
        "[edgebox]\nroles = [\"agent\"]\n[agent]\nid = \"dev-r\"\nreconnect_max_s = 1\n[agent.tls]\nca_file = \"{}\"\n",
        c.ca.display()
    );
    let device = Appliance::start(&device_cfg, &["agent", "--join", &urls.join(","), "--token", &token]);
    let joined = device.wait_log("agent: joined");
    assert!(joined.contains("spiffe://plant.example/node/dev-r"), "{joined}");
    device.wait_log("moving to its leader");
    wait_until("dev-r ready on the leader", || c.ready(old, "dev-r"));
    // The token was spent once, for the whole cluster.
    let (_, tokens) = c.call(old, "GET", "/v1/join-tokens", None).unwrap();
    assert_eq!(tokens["tokens"].as_array().map(Vec::len), Some(0), "{tokens}");

    // The leader goes; the device finds the new one and stays ready there.
    c.members[old].child.kill().unwrap();
    c.members[old].child.wait().unwrap();
    let alive: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut new = None;
    wait_until("a new leader", || {
        new = c.agreed_leader(&alive).filter(|l| *l != old);
        new.is_some()
    });
    let new = new.unwrap();
    wait_until("dev-r ready on the new leader", || c.ready(new, "dev-r"));
    // The old leader comes back as a follower and redirects node reads.
    let dir = std::mem::replace(&mut c.members[old].dir, tempfile::tempdir().unwrap());
    let refs: Vec<&str> = c.args[old].iter().map(String::as_str).collect();
    c.members[old] = Appliance::start_in(dir, &c.cfgs[old], &refs);
    wait_until("the old leader following", || c.agreed_leader(&[0, 1, 2]) == Some(new));
    let (status, v) = c.call(old, "GET", "/v1/nodes/dev-r", None).unwrap();
    assert_eq!(status, 307, "{v}");
    assert_eq!(v["leader"], format!("https://localhost:{}", c.ports[new]), "{v}");
}
