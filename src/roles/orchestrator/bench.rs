//! `edgebox orchestrator bench`: simulated agents against one orchestrator
//! process on this machine. For each fleet size: registrations over 64
//! keep-alive HTTP/1.1 connections (rate), then one HTTP/2 heartbeat stream
//! per node (200 streams per connection), each heartbeating at the interval
//! it is assigned with a random phase and asking for an ack, so the
//! round trip is timed (p50/p99); the orchestrator's CPU and RSS over the
//! window; then a deployment selecting every node rolls out (1% canary,
//! `--max-unavailable` percent at a time; the simulated agents report each
//! desired state at their next heartbeat, as if applied at once), timed
//! from the put to the rollout's completion; then some agents go silent and
//! the event feed shows how long detection took, and whether any live node
//! was wrongly suspected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::core::telemetry::process::{cpu_seconds_of, rss_of};

/// Streams per HTTP/2 connection (the server allows 256).
const STREAMS_PER_CONN: usize = 200;
/// Registration connections.
const REGISTER_CONNS: usize = 64;

pub struct Options {
    pub nodes: Vec<usize>,
    pub budget: u32,
    pub seconds: u64,
    pub silence: usize,
    pub max_unavailable_percent: u8,
}

struct Figures {
    nodes: usize,
    register_per_s: f64,
    interval_ms: u64,
    heartbeats_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu: f64,
    rss_mib: f64,
    /// Seconds from the put to a complete rollout, and the heartbeat p99
    /// meanwhile.
    rollout: Option<(f64, f64)>,
    /// Seconds from silencing to dead (p50, max), and from each silenced
    /// node's last heartbeat to dead (p50, max).
    detect: Option<(f64, f64, f64, f64)>,
    false_alarms: usize,
}

/// What the bench keeps of one simulated agent: dropping `stop` silences
/// it; `last` is when it last sent a heartbeat.
struct Silencer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    last: Arc<Mutex<Instant>>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    println!(
        "orchestrator bench: one orchestrator process, simulated agents in this one; heartbeat budget {}/s, {} s window",
        opts.budget, opts.seconds
    );
    println!(
        "{:>8} {:>12} {:>9} {:>9} {:>8} {:>8} {:>6} {:>8} {:>14} {:>16} {:>16} {:>6}",
        "nodes",
        "register/s",
        "interval",
        "beats/s",
        "p50 ms",
        "p99 ms",
        "vCPU",
        "RSS MiB",
        "rollout s/p99",
        "detect p50/max s",
        "after beat p50/max",
        "false"
    );
    for &n in &opts.nodes {
        let f = one(n, opts)?;
        let (detect, after_beat) = f.detect.map_or(("-".to_owned(), "-".to_owned()), |(p50, max, b50, bmax)| {
            (format!("{p50:.1} / {max:.1}"), format!("{b50:.1} / {bmax:.1}"))
        });
        let rollout = f.rollout.map_or("-".to_owned(), |(s, p99)| format!("{s:.1} / {p99:.1}"));
        println!(
            "{:>8} {:>12.0} {:>7}ms {:>9.0} {:>8.2} {:>8.2} {:>6.2} {:>8.0} {:>14} {:>16} {:>16} {:>6}",
            f.nodes,
            f.register_per_s,
            f.interval_ms,
            f.heartbeats_per_s,
            f.p50_ms,
            f.p99_ms,
            f.cpu,
            f.rss_mib,
            rollout,
            detect,
            after_beat,
            f.false_alarms
        );
    }
    Ok(())
}

fn one(n: usize, opts: &Options) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = format!(
        "[edgebox]\nroles = [\"orchestrator\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[orchestrator]\n\
         listen = \"127.0.0.1:{port}\"\nheartbeat_budget_per_s = {}\n",
        opts.budget
    );
    std::fs::write(dir.path().join("o.toml"), cfg)?;
    let log = std::fs::File::create(dir.path().join("orchestrator.log"))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(dir.path().join("o.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-format", "json", "--log-level", "warn", "up"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = child.id().to_string();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the orchestrator did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = rt.block_on(drive(addr, n, opts, &pid));
    let _ = child.kill();
    let _ = child.wait();
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h1(addr: std::net::SocketAddr) -> anyhow::Result<H1> {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await?);
    let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn call(send: &mut H1, method: Method, path: &str, body: String) -> anyhow::Result<(u16, Value)> {
    let req = Request::builder().method(method).uri(path).header("host", "o").body(Full::new(Bytes::from(body)))?;
    send.ready().await?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

fn id(i: usize) -> String {
    format!("node-{i:06}")
}

async fn drive(addr: std::net::SocketAddr, n: usize, opts: &Options, pid: &str) -> anyhow::Result<Figures> {
    // Registrations.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..REGISTER_CONNS {
        tasks.push(tokio::spawn(async move {
            let mut send = h1(addr).await?;
            for i in (c..n).step_by(REGISTER_CONNS) {
                let arch = ["arm64", "amd64", "riscv64"][i % 3];
                let body = json!({"id": id(i), "arch": arch,
                    "labels": {"site": format!("site-{}", i % 50), "zone": format!("z{}", i % 4)},
                    "capacity": {"cpu_millis": 2000, "memory_mib": 1024}});
                let (status, v) = call(&mut send, Method::POST, "/v1/nodes", body.to_string()).await?;
                anyhow::ensure!(status == 201, "registering {}: {status} {v}", id(i));
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let register_per_s = n as f64 / started.elapsed().as_secs_f64();
    // Heartbeat streams.
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut silencers = Vec::with_capacity(n);
    let mut interval_ms = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(STREAMS_PER_CONN) {
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await?);
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        for &i in chunk {
            let (silencer, interval) =
                agent(send.clone(), id(i), latencies.clone(), measuring.clone()).await.with_context(|| id(i))?;
            interval_ms = interval;
            silencers.push(silencer);
        }
    }
    // One interval for every agent to have beaten once, then the window.
    tokio::time::sleep(Duration::from_millis(interval_ms + 500)).await;
    let cpu0 = cpu_seconds_of(pid).unwrap_or(0.0);
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    let secs = window.elapsed().as_secs_f64();
    let cpu = (cpu_seconds_of(pid).unwrap_or(0.0) - cpu0) / secs;
    let rss_mib = rss_of(pid).unwrap_or(0) as f64 / (1 << 20) as f64;
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    let (p50_ms, p99_ms, heartbeats_per_s) = (pct(0.5), pct(0.99), lat.len() as f64 / secs);
    let rollout = timed_rollout(addr, n, opts.max_unavailable_percent, &latencies, &measuring).await?;
    // Silence some agents: how long until each is dead, and did anyone else
    // get suspected meanwhile?
    let mut send = h1(addr).await?;
    let (_, v) = call(&mut send, Method::GET, "/v1/events?wait_s=0", String::new()).await?;
    let mut since = v["next"].as_u64().unwrap_or(0);
    let silenced: Vec<String> = (0..opts.silence.min(n)).map(|k| id(k * (n / opts.silence.max(1)).max(1))).collect();
    let quiet = Instant::now();
    let mut last_beats = std::collections::HashMap::new();
    for (i, s) in silencers.iter_mut().enumerate() {
        if silenced.contains(&id(i)) {
            s.stop.take();
            last_beats.insert(id(i), *s.last.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }
    let mut detected = Vec::new();
    let mut after_beat = Vec::new();
    let mut false_alarms = 0;
    while detected.len() < silenced.len() && quiet.elapsed() < Duration::from_secs(120) {
        let (_, v) = call(&mut send, Method::GET, &format!("/v1/events?since={since}&wait_s=5"), String::new()).await?;
        since = v["next"].as_u64().unwrap_or(since);
        for e in v["events"].as_array().into_iter().flatten() {
            let who = e["id"].as_str().unwrap_or_default();
            match e["health"].as_str() {
                Some("dead") if silenced.iter().any(|s| s == who) => {
                    detected.push(quiet.elapsed().as_secs_f64());
                    after_beat.extend(last_beats.get(who).map(|t| t.elapsed().as_secs_f64()));
                }
                Some("suspect" | "dead") if !silenced.iter().any(|s| s == who) => false_alarms += 1,
                _ => {}
            }
        }
    }
    detected.sort_by(f64::total_cmp);
    after_beat.sort_by(f64::total_cmp);
    let p50_max = |v: &[f64]| v.get(v.len() / 2).zip(v.last()).map_or((0.0, 0.0), |(a, b)| (*a, *b));
    let detect = (!detected.is_empty()).then(|| {
        let ((p50, max), (b50, bmax)) = (p50_max(&detected), p50_max(&after_beat));
        (p50, max, b50, bmax)
    });
    drop(silencers);
    Ok(Figures {
        nodes: n,
        register_per_s,
        interval_ms,
        heartbeats_per_s,
        p50_ms,
        p99_ms,
        cpu,
        rss_mib,
        rollout,
        detect,
        false_alarms,
    })
}

/// Puts a deployment selecting every node and waits for its rollout to
/// complete: the seconds it took and the heartbeat p99 meanwhile.
async fn timed_rollout(
    addr: std::net::SocketAddr,
    n: usize,
    max_unavailable_percent: u8,
    latencies: &Mutex<Vec<u32>>,
    measuring: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Option<(f64, f64)>> {
    let mut send = h1(addr).await?;
    let max_unavailable = (n * usize::from(max_unavailable_percent)).div_ceil(100).max(1);
    // Any valid role section: the simulated agents do not run it.
    let spec = json!({"config": "[orchestrator]\nlisten = \"127.0.0.1:0\"\n",
        "strategy": {"canary_percent": 1, "max_unavailable": max_unavailable}});
    latencies.lock().unwrap_or_else(|p| p.into_inner()).clear();
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let (status, v) = call(&mut send, Method::PUT, "/v1/deployments/bench", spec.to_string()).await?;
    anyhow::ensure!(status == 201, "putting the deployment: {status} {v}");
    let done = loop {
        let (_, v) = call(&mut send, Method::GET, "/v1/deployments/bench", String::new()).await?;
        if v["phase"] == "complete" {
            break Some(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(600) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let p99 = lat.get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1))).map_or(0.0, |&us| us as f64 / 1000.0);
    Ok(done.map(|s| (s, p99)))
}

type H2 = hyper::client::conn::http2::SendRequest<
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>>,
>;

/// One simulated agent: opens its stream, learns its interval, then
/// heartbeats with a random phase until its stop handle is dropped.
async fn agent(
    mut send: H2,
    node: String,
    latencies: Arc<Mutex<Vec<u32>>>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(Silencer, u64)> {
    let (lines, rx) = mpsc::channel::<Bytes>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (Ok::<_, std::convert::Infallible>(Frame::data(l)), rx))
    });
    let req = Request::post(format!("http://o/v1/nodes/{node}/heartbeats"))
        .body(StreamBody::new(Box::pin(body) as futures_util::stream::BoxStream<'static, _>))?;
    send.ready().await?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(resp.status() == 200, "stream refused: {}", resp.status());
    let mut body = resp.into_body();
    let first = read_line(&mut body, &mut Vec::new()).await.context("no first directive")?;
    let interval =
        first["interval_ms"].as_u64().filter(|&i| i > 0).context("no usable interval in the first directive")?;
    let sent_at: Arc<Mutex<std::collections::VecDeque<(u64, Instant)>>> = Arc::default();
    let acks = sent_at.clone();
    // The desired state named last: reported as applied at the next beat.
    let desired: Arc<Mutex<String>> = Arc::default();
    let named = desired.clone();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(line) = read_line(&mut body, &mut buf).await {
            if let Some(d) = line["desired"].as_str() {
                *named.lock().unwrap_or_else(|p| p.into_inner()) = d.to_owned();
            }
            let Some(seq) = line["ack"].as_u64() else { continue };
            let mut q = acks.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(&(s, t)) = q.front() {
                q.pop_front();
                if s == seq {
                    if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                        let us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        latencies.lock().unwrap_or_else(|p| p.into_inner()).push(us);
                    }
                    break;
                }
            }
        }
    });
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let last = Arc::new(Mutex::new(Instant::now()));
    let last_sent = last.clone();
    let phase = Duration::from_millis(rand_below(interval));
    tokio::spawn(async move {
        tokio::time::sleep(phase).await;
        let mut tick = tokio::time::interval(Duration::from_millis(interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for seq in 0u64.. {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            *last_sent.lock().unwrap_or_else(|p| p.into_inner()) = now;
            sent_at.lock().unwrap_or_else(|p| p.into_inner()).push_back((seq, now));
            let applied = desired.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let line = json!({"seq": seq, "desired": applied});
            if lines.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                return;
            }
        }
    });
    Ok((Silencer { stop: Some(stop), last }, interval))
}

async fn read_line(body: &mut hyper::body::Incoming, buf: &mut Vec<u8>) -> Option<Value> {
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            return serde_json::from_slice(&line).ok();
        }
        let frame = body.frame().await?.ok()?;
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
}

/// A cheap spread of phases (no rand dependency).
fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n.max(1)
}
