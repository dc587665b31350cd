//! `edgebox tsdb bench`: the tsdb side by side with VictoriaMetrics and
//! InfluxDB on this machine, fed the same node_exporter-like line protocol
//! over HTTP in the same run. Reports ingest samples/s, bytes per sample on
//! disk, query latency (PromQL peers only), in-process ingest through the
//! storage API, and RSS with many active series, with ratios to each peer.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::core::httpclient::{self, Endpoint};
use crate::core::ports::free_loopback;

/// Options of one run.
pub struct Options {
    pub hosts: usize,
    pub points: usize,
    pub batch: usize,
    pub clients: usize,
    pub peers: Vec<String>,
    pub rss_series: usize,
    pub rss_points: usize,
}

const SERIES_PER_HOST: usize = 100;
const INTERVAL_MS: i64 = 15_000;

/// A small deterministic generator (xorshift64*), so every target gets the
/// same data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One series of the dataset: line-protocol key and how its value moves.
/// Values keep the resolution node_exporter reports: whole bytes and
/// packets, CPU seconds and load averages in hundredths.
struct SeriesGen {
    key: String,
    counter: bool,
    value: f64,
    step: f64,
    /// Changes are whole multiples of this (a page, a sector, 0.01 s).
    unit: f64,
}

fn dataset_series(hosts: usize) -> Vec<SeriesGen> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(hosts * SERIES_PER_HOST);
    for h in 0..hosts {
        let inst = format!("instance=host-{h}:9100,job=node");
        let mut push = |key: String, counter: bool, value: f64, step: f64, unit: f64| {
            out.push(SeriesGen { key, counter, value, step, unit })
        };
        for cpu in 0..8 {
            for mode in ["idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"] {
                push(format!("node_cpu_seconds_total,cpu={cpu},{inst},mode={mode}"), true, 1000.0, 0.15, 0.01);
            }
        }
        for m in [
            "MemTotal",
            "MemFree",
            "MemAvailable",
            "Buffers",
            "Cached",
            "SwapTotal",
            "SwapFree",
            "Active",
            "Inactive",
            "Dirty",
        ] {
            push(format!("node_memory_{m}_bytes,{inst}"), false, 8.0e9, 4096.0 * 64.0, 4096.0);
        }
        for dev in ["eth0", "eth1", "lo"] {
            push(format!("node_network_receive_bytes_total,device={dev},{inst}"), true, 1.0e9, 150_000.0, 1.0);
            push(format!("node_network_transmit_bytes_total,device={dev},{inst}"), true, 1.0e9, 90_000.0, 1.0);
        }
        for dev in ["sda", "sdb"] {
            push(format!("node_disk_read_bytes_total,device={dev},{inst}"), true, 5.0e9, 40_960.0, 512.0);
            push(format!("node_disk_written_bytes_total,device={dev},{inst}"), true, 5.0e9, 81_920.0, 512.0);
        }
        for mp in ["/", "/var", "/home", "/boot"] {
            push(format!("node_filesystem_avail_bytes,{inst},mountpoint={mp}"), false, 5.0e10, 409_600.0, 4096.0);
        }
        for l in ["1", "5", "15"] {
            push(format!("node_load{l},{inst}"), false, 1.0, 0.05, 0.01);
        }
        for n in 0..9 {
            push(format!("node_netstat_Tcp_stat{n},{inst}"), true, 10_000.0, 12.0, 1.0);
        }
    }
    for s in out.iter_mut() {
        s.value += rng.below(1000) as f64;
    }
    out
}

/// The dataset as line-protocol bodies (precision ms), `batch` lines each,
/// timestamps ending now.
fn dataset_bodies(opts: &Options) -> (Vec<Vec<u8>>, usize, i64, i64) {
    let mut series = dataset_series(opts.hosts);
    let mut rng = Rng(42);
    let end = now_ms() / INTERVAL_MS * INTERVAL_MS;
    let start = end - (opts.points as i64 - 1) * INTERVAL_MS;
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    let mut lines = 0;
    let mut samples = 0;
    for p in 0..opts.points {
        let t = start + p as i64 * INTERVAL_MS;
        for s in series.iter_mut() {
            let share = if s.counter { rng.below(100) as f64 } else { rng.below(201) as f64 - 100.0 } / 100.0;
            let change = (share * s.step / s.unit).round() * s.unit;
            // Hundredths stay exact decimals: round at that resolution.
            let scale = if s.unit < 1.0 { 100.0 } else { 1.0 };
            s.value = ((s.value + change).max(0.0) * scale).round() / scale;
            body.extend_from_slice(format!("{} value={} {t}\n", s.key, s.value).as_bytes());
            lines += 1;
            samples += 1;
            if lines == opts.batch {
                bodies.push(std::mem::take(&mut body));
                lines = 0;
            }
        }
    }
    if !body.is_empty() {
        bodies.push(body);
    }
    (bodies, samples, start, end)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn rss_of(pid: u32) -> u64 {
    crate::core::telemetry::process::rss_of(&pid.to_string()).unwrap_or(0)
}

/// A database under test, started on a private directory and port.
struct Target {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    write_path: String,
    promql: bool,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_http(addr: SocketAddr, path: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if httpclient::request(&Endpoint::plain(addr), "GET", path, &[], b"").is_ok_and(|r| r.status < 500) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{addr}{path} did not answer within {within:?}")
}

fn start_edgebox(series_limit: usize) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let port = free_loopback()?;
    let admin_port = free_loopback()?;
    let cfg = dir.path().join("edgebox.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tsdb]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 67108864\nmax_series = {series_limit}\nmax_series_per_metric = {series_limit}\n"
        ),
    )?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}"), "--log-level", "warn", "tsdb", "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_http(addr, "/health", Duration::from_secs(20))?;
    Ok(Target { name: "edgebox", child, addr, dir, write_path: "/write?precision=ms".into(), promql: true })
}

fn start_victoria() -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let port = free_loopback()?;
    let child = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", dir.path().join("data").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .args(["-loggerLevel=ERROR", "-retentionPeriod=1y", "-search.latencyOffset=0s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start victoria-metrics (Debian package victoria-metrics)")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_http(addr, "/health", Duration::from_secs(20))?;
    Ok(Target {
        name: "victoria-metrics 1.79",
        child,
        addr,
        dir,
        write_path: "/write?precision=ms".into(),
        promql: true,
    })
}

fn start_influx() -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let (port, rpc) = (free_loopback()?, free_loopback()?);
    let d = dir.path();
    let cfg = d.join("influxdb.conf");
    std::fs::write(
        &cfg,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{m}\"\n[data]\n  dir = \"{data}\"\n  wal-dir = \"{wal}\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  max-body-size = 0\n[logging]\n  level = \"error\"\n",
            m = d.join("meta").display(),
            data = d.join("data").display(),
            wal = d.join("wal").display(),
        ),
    )?;
    let child = Command::new("influxd")
        .arg("run")
        .arg("-config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start influxd (Debian package influxdb)")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_http(addr, "/ping", Duration::from_secs(30))?;
    let r = httpclient::request(&Endpoint::plain(addr), "POST", "/query?q=CREATE%20DATABASE%20bench", &[], b"")?;
    anyhow::ensure!(r.status == 200, "influxd: CREATE DATABASE answered {}", r.status);
    Ok(Target {
        name: "influxdb 1.6",
        child,
        addr,
        dir,
        write_path: "/write?db=bench&precision=ms".into(),
        promql: false,
    })
}

/// Sends every body from `clients` threads; returns seconds taken.
fn ingest(t: &Target, bodies: &Arc<Vec<Vec<u8>>>, clients: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (bodies, next, addr, path) = (bodies.clone(), next.clone(), t.addr, t.write_path.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return Ok(()) };
                    let r = httpclient::request(&Endpoint::plain(addr), "POST", &path, &[], body)?;
                    anyhow::ensure!(
                        r.status == 204,
                        "write answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
            })
        })
        .collect();
    for th in threads {
        th.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Median latency of a PromQL query, in milliseconds.
fn query_ms(addr: SocketAddr, path: &str, runs: usize) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let r = httpclient::request(&Endpoint::plain(addr), "GET", path, &[], b"")?;
        anyhow::ensure!(r.status == 200, "query answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Ok(times[times.len() / 2])
}

/// Bytes on disk per sample, after the target settled its data.
fn disk_per_sample(t: &mut Target, samples: usize) -> anyhow::Result<f64> {
    match t.name {
        "edgebox" => {
            // Stop (the last checkpoint moves the heads into chunks and
            // empties the log), then compact the file so free pages are
            // not counted.
            let _ = Command::new("kill").args(["-TERM", &t.child.id().to_string()]).status();
            let _ = t.child.wait();
            let data = t.dir.path().join("data");
            let status = Command::new(std::env::current_exe()?)
                .arg("--data-dir")
                .arg(&data)
                .args(["store", "compact"])
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "store compact failed");
            let info = crate::core::store::info(&data.join("edgebox.redb"))?;
            let parts: Vec<String> = info
                .tables
                .iter()
                .filter(|t| t.name.starts_with("tsdb.") && t.stored_bytes > 0)
                .map(|t| {
                    let per = |b: u64| b as f64 / samples as f64;
                    format!("{} {:.3} ({:.3} in pages)", t.name, per(t.stored_bytes), per(t.page_bytes))
                })
                .collect();
            eprintln!("bench: edgebox bytes/sample by table, keys and values: {}", parts.join(", "));
            Ok(info.file_bytes as f64 / samples as f64)
        }
        name if name.starts_with("victoria") => {
            let _ = httpclient::request(&Endpoint::plain(t.addr), "GET", "/internal/force_flush", &[], b"");
            std::thread::sleep(Duration::from_secs(5));
            Ok(dir_bytes(&t.dir.path().join("data")) as f64 / samples as f64)
        }
        _ => {
            std::thread::sleep(Duration::from_secs(5));
            Ok((dir_bytes(&t.dir.path().join("data")) + dir_bytes(&t.dir.path().join("wal"))) as f64 / samples as f64)
        }
    }
}

fn enc(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// One target's figures.
struct Row {
    name: &'static str,
    ingest: f64,
    bytes: f64,
    q_avg: Option<f64>,
    q_range: Option<f64>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let (bodies, samples, start, end) = dataset_bodies(opts);
    let bodies = Arc::new(bodies);
    let series = opts.hosts * SERIES_PER_HOST;
    println!(
        "dataset: {series} node_exporter-like series x {} points (15 s apart) = {samples} samples, {} requests of {} lines, {} clients",
        opts.points,
        bodies.len(),
        opts.batch,
        opts.clients
    );
    let mut results: Vec<Row> = Vec::new();
    let mut targets: Vec<fn() -> anyhow::Result<Target>> = vec![|| start_edgebox(2_000_000)];
    for p in &opts.peers {
        match p.as_str() {
            "victoria-metrics" => targets.push(start_victoria),
            "influxdb" => targets.push(start_influx),
            other => anyhow::bail!("unknown peer `{other}` (victoria-metrics, influxdb)"),
        }
    }
    let q_avg = format!(
        "/api/v1/query?query={}&time={}",
        enc("avg(avg_over_time(node_cpu_seconds_total_value[1h]))"),
        end / 1000
    );
    let q_rate = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60",
        enc("sum by (mode) (rate(node_cpu_seconds_total_value[5m]))"),
        start / 1000 + 300,
        end / 1000
    );
    for start_target in targets {
        let mut t = start_target()?;
        eprintln!("bench: ingesting into {} …", t.name);
        let secs = ingest(&t, &bodies, opts.clients)?;
        let rate = samples as f64 / secs;
        let (qa, qr) = if t.promql {
            if t.name.starts_with("victoria") {
                let _ = httpclient::request(&Endpoint::plain(t.addr), "GET", "/internal/force_flush", &[], b"");
                std::thread::sleep(Duration::from_secs(2));
            }
            (Some(query_ms(t.addr, &q_avg, 5)?), Some(query_ms(t.addr, &q_rate, 5)?))
        } else {
            (None, None)
        };
        let bps = disk_per_sample(&mut t, samples)?;
        results.push(Row { name: t.name, ingest: rate, bytes: bps, q_avg: qa, q_range: qr });
    }
    let inproc = in_process(opts)?;
    let rss = rss_with_series(opts.rss_series, opts.rss_points)?;

    println!();
    println!(
        "{:<24} {:>14} {:>14} {:>18} {:>22}",
        "target", "ingest/s HTTP", "bytes/sample", "avg 1h cpu (ms)", "sum rate range (ms)"
    );
    let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    for r in &results {
        println!(
            "{:<24} {:>14.0} {:>14.2} {:>18} {:>22}",
            r.name,
            r.ingest,
            r.bytes,
            fmt(r.q_avg, 1),
            fmt(r.q_range, 1)
        );
    }
    let ours = &results[0];
    for peer in &results[1..] {
        println!(
            "ratio edgebox / {}: ingest {:.2}x, bytes/sample {:.2}x{}",
            peer.name,
            ours.ingest / peer.ingest,
            ours.bytes / peer.bytes,
            match (ours.q_avg, peer.q_avg, ours.q_range, peer.q_range) {
                (Some(a), Some(b), Some(c), Some(d)) =>
                    format!(", avg query latency {:.2}x, range query latency {:.2}x", a / b, c / d),
                _ => String::new(),
            }
        );
    }
    println!("in-process ingest through the storage API: {inproc:.0} samples/s");
    println!(
        "RSS with {} active series ({} sample{} each) 10 s after ingest: {:.1} MiB",
        opts.rss_series,
        opts.rss_points,
        if opts.rss_points == 1 { "" } else { "s" },
        rss as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Samples/s appended through `Storage::append` in this process.
fn in_process(opts: &Options) -> anyhow::Result<f64> {
    use super::storage::{Incoming, Labels, Limits, Storage};
    let dir = tempfile::tempdir()?;
    let owners = crate::core::lifecycle::schema_owners();
    let store = crate::core::store::Store::open(&dir.path().join("s.redb"), &owners, &Default::default())?;
    let limits = Limits {
        out_of_order_ms: i64::MAX / 4,
        max_future_ms: i64::MAX / 4,
        max_series: usize::MAX,
        max_series_per_metric: usize::MAX,
    };
    let storage = Arc::new(Storage::open(store, limits)?);
    let series: Vec<Labels> = dataset_series(opts.hosts)
        .iter()
        .map(|s| {
            let mut parts = s.key.split(',');
            let name = parts.next().unwrap_or("m").to_owned();
            let mut pairs: Vec<(String, String)> =
                parts.filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            pairs.push(("__name__".into(), name));
            Labels::new(pairs)
        })
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let total = series.len() * opts.points;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for p in 0..opts.points {
            let batch: Vec<Incoming> = series
                .iter()
                .map(|l| Incoming { labels: l.clone(), t: p as i64 * INTERVAL_MS, v: p as f64, line: 0 })
                .collect();
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move { storage.append(batch, i64::MAX / 4).await }));
            if tasks.len() >= opts.clients * 2 {
                for t in tasks.drain(..) {
                    t.await??;
                }
            }
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// RSS of a tsdb process holding `n` active series, settled: 10 s after
/// the ingest, when the allocator has returned what the burst freed (it
/// purges freed pages a second after the fact, at its next activity).
fn rss_with_series(n: usize, points: usize) -> anyhow::Result<u64> {
    let t = start_edgebox(n * 2)?;
    let end = now_ms() / INTERVAL_MS * INTERVAL_MS;
    let start = end - (points as i64 - 1) * INTERVAL_MS;
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for p in 0..points as i64 {
        let t = start + p * INTERVAL_MS;
        for ids in (0..n).collect::<Vec<_>>().chunks(10_000) {
            // Values that change like a slow gauge's.
            bodies.push(
                ids.iter()
                    .flat_map(|i| {
                        format!("rss_series,id=s{i} value={} {t}\n", (i * 7 + p as usize) % 1000).into_bytes()
                    })
                    .collect(),
            );
        }
    }
    // Two clients, as the ingest figures; one when rounds must land in order.
    ingest(&t, &Arc::new(bodies), if points == 1 { 2 } else { 1 })?;
    std::thread::sleep(Duration::from_secs(10));
    Ok(rss_of(t.child.id()))
}
