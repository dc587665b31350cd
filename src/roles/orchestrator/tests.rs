//! The orchestrator over real sockets: its API served by the core HTTP
//! server on loopback, a store on disk, HTTP/1.1 for the API and HTTP/2
//! streams for heartbeats, as agents use them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::api::{self, Api, IntervalPolicy};
use super::liveness::Detector;
use super::node::Limits;
use super::registry::Registry;
use crate::core::auth::{Auth, AuthMode};
use crate::core::store::{CORE_SCHEMA, Store, StoreOptions};

pub(super) struct Server {
    pub addr: std::net::SocketAddr,
    pub api: Arc<Api>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) async fn start(store: &Store, interval_ms: u64) -> Server {
    let limits = Limits { max_labels: 8, max_label_bytes: 64 };
    let registry = Arc::new(Registry::open(store.clone(), limits).await.unwrap());
    let (interval_tx, interval) = tokio::sync::watch::channel(interval_ms);
    let detector = Detector::new(5.0, 12.0);
    for n in registry.all() {
        detector.watch(&n.reg.id, interval_ms, Instant::now());
    }
    let rollouts = Arc::new(super::rollout::Rollouts::open(store.clone()).await.unwrap());
    let memory = super::command::Memory { registry: registry.clone(), rollouts: rollouts.clone() };
    let api = Arc::new(Api {
        registry,
        ca: std::sync::OnceLock::new(),
        rollouts,
        replica: super::replica::Replica::Single { store: store.clone(), memory },
        store: store.clone(),
        max_blob: 1 << 20,
        detector,
        auth: Auth::load(AuthMode::None, None, "t").unwrap(),
        max_body: 4096,
        policy: IntervalPolicy { budget_per_s: 1_000_000, min_ms: interval_ms, max_ms: interval_ms },
        interval,
        interval_tx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (a, s) = (api.clone(), stop.clone());
    tokio::spawn(async move {
        let handler = move |req| api::handle(a.clone(), req);
        crate::core::httpserve::serve(api::NAME, listener, None, handler, s, Duration::from_secs(1)).await;
    });
    let sweeper = api.clone();
    let s = stop.clone();
    tokio::spawn(async move {
        while !s.is_cancelled() {
            for t in sweeper.detector.sweep(Instant::now()) {
                sweeper.transition(&t);
            }
            let commit = |cmd| async { sweeper.replica.commit(cmd).await.map(|_| ()).map_err(anyhow::Error::from) };
            sweeper.rollouts.step(&sweeper.registry, &sweeper.detector, commit).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    Server { addr, api, stop }
}

pub(super) fn store(dir: &std::path::Path) -> Store {
    Store::open(&dir.join("s.redb"), &[CORE_SCHEMA], &StoreOptions::default()).unwrap()
}

/// One HTTP/1.1 request: status and JSON body.
pub(super) async fn call(addr: std::net::SocketAddr, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "orchestrator")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn node(id: &str, arch: &str, site: &str) -> String {
    json!({"id": id, "arch": arch, "labels": {"site": site, "zone": "a"}, "capacity": {"cpu_millis": 4000}, "machine_id": format!("m-{id}")})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_checked_idempotent_paged_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let s = start(&store, 1000).await;
    let (st, v) = call(s.addr, Method::POST, "/v1/nodes", &node("sensor-01", "arm64", "plant-3")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!((v["revision"].as_u64(), v["health"].as_str()), (Some(1), Some("unknown")));
    // The same registration again changes nothing; new labels update it.
    let (st, v) = call(s.addr, Method::POST, "/v1/nodes", &node("sensor-01", "arm64", "plant-3")).await;
    assert_eq!((st, v["revision"].as_u64()), (StatusCode::OK, Some(1)));
    let (st, v) = call(s.addr, Method::POST, "/v1/nodes", &node("sensor-01", "arm64", "plant-4")).await;
    assert_eq!((st, v["revision"].as_u64()), (StatusCode::OK, Some(2)));
    // The same id from another architecture or machine conflicts.
    let (st, v) = call(s.addr, Method::POST, "/v1/nodes", &node("sensor-01", "amd64", "plant-4")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let other = json!({"id": "sensor-01", "arch": "arm64", "machine_id": "someone-else"}).to_string();
    assert_eq!(call(s.addr, Method::POST, "/v1/nodes", &other).await.0, StatusCode::CONFLICT);
    // Bad input names what is wrong.
    for (body, needle) in [
        ("{not json", "registration"),
        (r#"{"id":"x","arch":"arm64","colour":"red"}"#, "colour"),
        (r#"{"id":"Bad Id","arch":"arm64"}"#, "id \"Bad Id\""),
        (
            r#"{"id":"n","arch":"arm64","labels":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6","g":"7","h":"8","i":"9"}}"#,
            "labels",
        ),
    ] {
        let (st, v) = call(s.addr, Method::POST, "/v1/nodes", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let (st, _) = call(s.addr, Method::POST, "/v1/nodes", &"x".repeat(5000)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    for i in 0..25 {
        let (arch, site) = if i % 5 == 0 { ("riscv64", "plant-9") } else { ("arm64", "plant-3") };
        assert_eq!(
            call(s.addr, Method::POST, "/v1/nodes", &node(&format!("n{i:02}"), arch, site)).await.0,
            StatusCode::CREATED
        );
    }
    // Pages in id order, filtered by label and arch.
    let (st, v) = call(s.addr, Method::GET, "/v1/nodes?label=site=plant-3&arch=arm64&limit=7", "").await;
    assert_eq!(st, StatusCode::OK);
    let ids = |v: &Value| {
        v["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&v), ["n01", "n02", "n03", "n04", "n06", "n07", "n08"]);
    let (_, v2) = call(
        s.addr,
        Method::GET,
        &format!("/v1/nodes?label=site=plant-3&arch=arm64&limit=7&after={}", v["next"].as_str().unwrap()),
        "",
    )
    .await;
    assert_eq!(ids(&v2)[0], "n09");
    for bad in ["label=nokey", "health=sleepy", "limit=0", "limit=5000", "after=BAD"] {
        assert_eq!(
            call(s.addr, Method::GET, &format!("/v1/nodes?{bad}"), "").await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let (_, topo) = call(s.addr, Method::GET, "/v1/topology", "").await;
    let groups = topo["groups"].as_array().unwrap();
    let riscv = groups.iter().find(|g| g["arch"] == "riscv64").unwrap();
    assert_eq!(
        (riscv["site"].as_str(), riscv["nodes"].as_u64(), riscv["converged"].as_u64()),
        (Some("plant-9"), Some(5), Some(0))
    );
    assert_eq!(call(s.addr, Method::DELETE, "/v1/nodes/n00", "").await.0, StatusCode::OK);
    assert_eq!(call(s.addr, Method::DELETE, "/v1/nodes/n00", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(s.addr, Method::GET, "/v1/nodes/n00", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(s.addr, Method::PUT, "/v1/nodes", "").await.0, StatusCode::METHOD_NOT_ALLOWED);
    let revision = s.api.registry.revision();
    drop(s);
    // A restart loses nothing.
    let again = start(&store, 1000).await;
    assert_eq!(again.api.registry.len(), 25);
    assert_eq!(again.api.registry.revision(), revision);
    let (_, v) = call(again.addr, Method::GET, "/v1/nodes/sensor-01", "").await;
    assert_eq!(v["labels"]["site"], "plant-4");
}

/// An agent's HTTP/2 heartbeat stream: lines go up through `beats`,
/// directives come back on the returned receiver.
async fn stream(addr: std::net::SocketAddr, id: &str) -> (mpsc::Sender<&'static str>, mpsc::Receiver<Value>) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let (beats, rx) = mpsc::channel::<&'static str>(16);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(l))), rx))
    })));
    let req = Request::post(format!("http://orchestrator/v1/nodes/{id}/heartbeats")).body(body).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (tx, directives) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(d) = f.into_data() {
                buf.extend_from_slice(&d);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let _ = tx.send(serde_json::from_slice(&line).unwrap()).await;
                }
            }
        }
    });
    (beats, directives)
}

async fn health(s: &Server, id: &str) -> String {
    call(s.addr, Method::GET, &format!("/v1/nodes/{id}"), "").await.1["health"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_turns_suspect_then_dead_and_comes_back_with_its_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 200).await;
    call(s.addr, Method::POST, "/v1/nodes", &node("n1", "arm64", "p")).await;
    let (_, first) = call(s.addr, Method::GET, "/v1/events?since=0&wait_s=0", "").await;
    let since = first["next"].as_u64().unwrap();
    let (beats, mut directives) = stream(s.addr, "n1").await;
    let d = directives.recv().await.unwrap();
    assert_eq!((d["interval_ms"].as_u64(), d["revision"].as_u64()), (Some(200), Some(1)));
    for _ in 0..10 {
        beats.send("{\"applied_revision\": 1}\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health(&s, "n1").await, "ready");
    let (_, topo) = call(s.addr, Method::GET, "/v1/topology", "").await;
    assert_eq!(topo["groups"][0]["converged"], 1);
    // Silence, with the stream still open: suspect, then dead, each once.
    let silent = Instant::now();
    while health(&s, "n1").await != "dead" {
        assert!(silent.elapsed() < Duration::from_secs(3), "still {} after 3 s", health(&s, "n1").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detected = silent.elapsed();
    assert!(detected > Duration::from_millis(300), "dead after only {detected:?}");
    beats.send("{}\n").await.unwrap();
    let back = Instant::now();
    while health(&s, "n1").await != "ready" {
        assert!(back.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, ev) = call(s.addr, Method::GET, &format!("/v1/events?since={since}&wait_s=0"), "").await;
    let states: Vec<&str> = ev["events"].as_array().unwrap().iter().filter_map(|e| e["health"].as_str()).collect();
    assert_eq!(states, ["ready", "suspect", "dead", "ready"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_bad_lines_and_unknown_nodes_end_the_stream_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 1000).await;
    assert_eq!(call(s.addr, Method::POST, "/v1/nodes/ghost/heartbeats", "").await.0, StatusCode::NOT_FOUND);
    call(s.addr, Method::POST, "/v1/nodes", &node("n1", "arm64", "p")).await;
    let (beats, mut directives) = stream(s.addr, "n1").await;
    directives.recv().await.unwrap();
    for _ in 0..100 {
        if beats.send("{}\n").await.is_err() {
            break;
        }
    }
    let last = tokio::time::timeout(Duration::from_secs(5), directives.recv()).await.unwrap().unwrap();
    assert!(last["error"].as_str().unwrap().contains("faster than the assigned interval"), "{last}");
    let (beats, mut directives) = stream(s.addr, "n1").await;
    directives.recv().await.unwrap();
    beats.send("{\"applied_revision\": \"seven\"}\n").await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(5), directives.recv()).await.unwrap().unwrap();
    assert!(last["error"].as_str().unwrap().contains("heartbeat line"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_wait_for_the_next_event_and_a_lost_cursor_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 1000).await;
    let addr = s.addr;
    let waiting = tokio::spawn(async move { call(addr, Method::GET, "/v1/events?wait_s=10", "").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the watcher waits");
    call(s.addr, Method::POST, "/v1/nodes", &node("n1", "arm64", "p")).await;
    let (st, v) = waiting.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert_eq!((v["events"][0]["type"].as_str(), v["events"][0]["id"].as_str()), (Some("registered"), Some("n1")));
    // A cursor from before a restart (or beyond the log) answers 410.
    let (st, v) = call(s.addr, Method::GET, "/v1/events?since=999&wait_s=0", "").await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    assert_eq!(v["newest"], 1);
}

/// A TCP proxy that delays what agents send (latency, jitter, and a lost
/// segment's retransmission timeout), keeping the byte order TCP keeps;
/// what the orchestrator sends back passes untouched. netem is not in this
/// machine's kernel, so the faults are injected here, as toxiproxy does.
async fn chaos_proxy(
    upstream: std::net::SocketAddr,
    latency_ms: u64,
    jitter_ms: u64,
    loss: f64,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let (mut cr, cw) = client.into_split();
            let (sr, mut sw) = server.into_split();
            let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            let mut rng = seed;
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut due = tokio::time::Instant::now();
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        (rng % 1_000_000) as f64 / 1_000_000.0
                    };
                    let spread = (next() * 2.0 - 1.0) * jitter_ms as f64;
                    let mut delay = (latency_ms as f64 + spread).max(0.0);
                    // A lost segment waits for the retransmission timeout
                    // (200 ms on Linux), twice as long when lost again.
                    if next() < loss {
                        delay += if next() < loss { 600.0 } else { 200.0 };
                    }
                    due = due.max(tokio::time::Instant::now() + Duration::from_micros((delay * 1000.0) as u64));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Some((due, chunk)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if sw.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let (mut sr, mut cw) = (sr, cw);
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_latency_jitter_and_loss_live_nodes_stay_ready_and_dead_ones_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&store(dir.path()), 1000).await;
    // 80 ms ± 60 ms one way, 5% of segments lost once, 0.25% twice.
    let proxy = chaos_proxy(s.addr, 80, 60, 0.05).await;
    let mut agents = Vec::new();
    for i in 0..20 {
        let id = format!("n{i:02}");
        call(s.addr, Method::POST, "/v1/nodes", &node(&id, "arm64", "p")).await;
        let (beats, mut directives) = stream(proxy, &id).await;
        directives.recv().await.unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            let mut tick = tokio::time::interval(Duration::from_millis(1000));
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
                if beats.send("{}\n").await.is_err() {
                    return;
                }
            }
        });
        agents.push(stop);
    }
    let (_, v) = call(s.addr, Method::GET, "/v1/events?wait_s=0", "").await;
    let since = v["next"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    // No live node was suspected through twelve seconds of a bad network.
    let (_, ev) = call(s.addr, Method::GET, &format!("/v1/events?since={since}&wait_s=0"), "").await;
    let alarms: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| matches!(e["health"].as_str(), Some("suspect" | "dead")))
        .collect();
    // Five devices go silent: each is found dead within a few intervals.
    let since = ev["next"].as_u64().unwrap();
    let silenced: Vec<String> = (0..5).map(|i| format!("n{:02}", i * 4)).collect();
    for (i, stop) in agents.iter_mut().enumerate() {
        if silenced.contains(&format!("n{i:02}")) {
            *stop = tokio::sync::oneshot::channel().0;
        }
    }
    let quiet = Instant::now();
    let mut found = Vec::new();
    let mut cursor = since;
    while found.len() < silenced.len() && quiet.elapsed() < Duration::from_secs(10) {
        let (_, ev) = call(s.addr, Method::GET, &format!("/v1/events?since={cursor}&wait_s=2"), "").await;
        cursor = ev["next"].as_u64().unwrap_or(cursor);
        for e in ev["events"].as_array().unwrap() {
            let who = e["id"].as_str().unwrap_or_default();
            if e["health"] == "dead" && silenced.iter().any(|s| s == who) {
                found.push(quiet.elapsed().as_secs_f64());
            } else if matches!(e["health"].as_str(), Some("suspect" | "dead")) && !silenced.iter().any(|s| s == who) {
                panic!("a live node was suspected: {e}");
            }
        }
    }
    eprintln!(
        "fault injection: 20 nodes, 1 s interval, 80±60 ms, 5% loss: false alarms {}, detection {found:?} s",
        alarms.len()
    );
    assert!(alarms.is_empty(), "{alarms:?}");
    assert_eq!(found.len(), 5, "found {found:?}");
    assert!(found.iter().all(|&t| (1.4..=4.5).contains(&t)), "{found:?}");
}
