//! The tsdb role through its real HTTP API and CLI: Influx writes (plain
//! and gzip), partial-write answers, limits, PromQL queries, export/import,
//! authentication, and acknowledged writes surviving kill -9.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgebox::core::httpclient::{self, Endpoint};
use edgebox::core::tls::ClientTls;

use crate::support::{Appliance, field, free_port, http, text, wait_until};

pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The tsdb's bound address, from its "tsdb listening" log line.
pub fn tsdb_addr(app: &Appliance) -> SocketAddr {
    field(&app.wait_log("tsdb listening"), "addr").unwrap().parse().unwrap()
}

fn query(addr: SocketAddr, q: &str) -> serde_json::Value {
    let body = format!("query={}", urlencode(q));
    let (status, body) =
        http(addr, "POST", "/api/v1/query", &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} {body}: {e}"));
    v
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn line_protocol_in_promql_out() {
    let app = Appliance::start(
        "[tsdb]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 4096\nmax_series_per_metric = 5\n",
        &["up"],
    );
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let t0 = now_s() - 600;
    let mut body = String::new();
    for i in 0..10 {
        for (inst, step) in [("a", 10), ("b", 20)] {
            body.push_str(&format!("http,job=api,instance={inst} requests={}i {}\n", i * step, t0 + i * 60));
        }
    }
    assert_eq!(http(addr, "POST", "/write?db=x&precision=s", &[], body.as_bytes()).0, 204);
    // The same data again through /api/v2/write, gzip-compressed: duplicates, no change.
    let (status, msg) = http(
        addr,
        "POST",
        "/api/v2/write?org=o&bucket=b&precision=s",
        &[("Content-Encoding", "gzip")],
        &gzip(body.as_bytes()),
    );
    assert_eq!(status, 204, "{msg}");

    let v = query(addr, "sum by (job) (rate(http_requests[5m]))");
    assert_eq!(v["status"], "success", "{v}");
    let r = &v["data"]["result"][0];
    assert_eq!(r["metric"], serde_json::json!({"job": "api"}));
    let rate: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
    assert!((rate - 0.5).abs() < 1e-9, "{rate}");
    let v = query(addr, "http_requests{instance=~\"a|b\"} > 150");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["data"]["result"][0]["metric"]["__name__"], "http_requests");

    // A range query, as Grafana sends it.
    let path = format!(
        "/api/v1/query_range?query=http_requests%7Binstance%3D%22a%22%7D&start={}&end={}&step=60",
        t0,
        t0 + 540
    );
    let (status, body) = http(addr, "GET", &path, &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"][0]["values"].as_array().unwrap().len(), 10);

    // Metadata endpoints.
    let (_, body) = http(addr, "GET", "/api/v1/label/instance/values", &[], b"");
    assert!(body.contains("[\"a\",\"b\"]"), "{body}");
    let (_, body) = http(addr, "GET", "/api/v1/series?match[]=http_requests", &[], b"");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"].as_array().unwrap().len(), 2);
    // A time range bounds /series: before the data, nothing; across it, both.
    let count = |path: String| {
        let (status, body) = http(addr, "GET", &path, &[], b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"].as_array().unwrap().len()
    };
    assert_eq!(count(format!("/api/v1/series?match[]=http_requests&start={}&end={}", t0 - 900, t0 - 60)), 0);
    assert_eq!(count(format!("/api/v1/series?match[]=http_requests&start={}&end={}", t0 + 60, t0 + 120)), 2);
    let (_, body) = http(addr, "GET", "/api/v1/status/buildinfo", &[], b"");
    assert!(body.contains("\"version\""), "{body}");
    // What Grafana asks besides queries: answered, empty.
    let (status, body) = http(addr, "GET", "/api/v1/query_exemplars?query=http_requests", &[], b"");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"success","data":[]}"#));
    let (status, body) = http(addr, "GET", "/api/v1/metadata", &[], b"");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"success","data":{}}"#));

    // Bad input: each gets a clear error, nothing stored is damaged.
    let now = now_s();
    let (status, body) = http(
        addr,
        "POST",
        "/write?precision=s",
        &[],
        format!("ok v=1 {now}\nbad v=oops {now}\nstr s=\"x\" {now}\n").as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("lines 2, 3") && body.contains("invalid field value `oops`") && body.contains("is a string"),
        "{body}"
    );
    assert_eq!(query(addr, "ok_v")["data"]["result"].as_array().unwrap().len(), 1, "good lines are stored");
    assert_eq!(http(addr, "POST", "/write?precision=fortnight", &[], b"m v=1").0, 400);
    assert_eq!(http(addr, "POST", "/write", &[], &vec![b'x'; 5000]).0, 413);
    assert_eq!(
        http(addr, "POST", "/write", &[("Content-Encoding", "gzip")], &gzip(&vec![b'#'; 100_000])).0,
        413,
        "a gzip bomb is cut at the limit"
    );
    assert_eq!(http(addr, "POST", "/write", &[("Content-Encoding", "gzip")], b"not gzip").0, 400);
    let many: String = (0..10).map(|i| format!("card,i={i} v=1 {t0}\n")).collect();
    let (status, body) = http(addr, "POST", "/write?precision=s", &[], many.as_bytes());
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("max_series_per_metric"), "{body}");
    let far = format!("m v=1 {}\n", now_s() + 86_400);
    assert_eq!(http(addr, "POST", "/write?precision=s", &[], far.as_bytes()).0, 400);
    for (q, code, needle) in [
        ("foo(", 400, "parse error"),
        ("histogram_count(http_requests)", 422, "histogram_count"),
        ("rate(http_requests[5m])[10m:1m]", 200, "\"resultType\":\"matrix\""),
        ("max_over_time(max_over_time(http_requests[3h:1s])[3h:1s])", 400, "more than 1000000 steps"),
        ("{job=~\".*\"}", 400, "non-empty matcher"),
        ("http_requests{a=~\"(\"}", 400, "regex"),
    ] {
        let (status, body) = http(addr, "GET", &format!("/api/v1/query?query={}", urlencode(q)), &[], b"");
        assert_eq!(status, code, "{q}: {body}");
        assert!(body.contains(needle), "{q}: {body}");
    }
    let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
    assert_eq!(http(addr, "GET", &format!("/api/v1/query?query={}", urlencode(&deep)), &[], b"").0, 400);
    let (status, _) =
        http(addr, "GET", &format!("/api/v1/query_range?query=1&start=0&end={}&step=1", now_s()), &[], b"");
    assert_eq!(status, 400, "too many steps");
    let (_, metrics) = app.get("/metrics");
    for m in ["edgebox_tsdb_samples_appended_total", "edgebox_tsdb_series", "edgebox_tsdb_cardinality_limit_hits_total"]
    {
        assert!(metrics.contains(m), "{m} missing");
    }
}

#[test]
fn a_query_loading_more_samples_than_the_limit_is_refused_with_422() {
    let app = Appliance::start("[tsdb]\nlisten = \"127.0.0.1:0\"\nmax_query_samples = 1000\n", &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let t0 = now_s() - 1800;
    let body: String =
        (0..400).flat_map(|k| (0..3).map(move |i| format!("big,i={i} v={k} {}\n", t0 + k * 2))).collect();
    assert_eq!(http(addr, "POST", "/write?precision=s", &[], body.as_bytes()).0, 204);
    let one = query(addr, "count_over_time(big_v{i=\"0\"}[1h])");
    assert_eq!(one["data"]["result"][0]["value"][1], "400", "{one}");
    let body = format!("query={}", urlencode("sum(count_over_time(big_v[1h]))"));
    let (status, answer) =
        http(addr, "POST", "/api/v1/query", &[("Content-Type", "application/x-www-form-urlencoded")], body.as_bytes());
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("more than 1000 samples (tsdb.max_query_samples)"), "{answer}");
}

#[test]
fn remote_write_is_received() {
    use edgebox::roles::tsdb::remote_write::{Label, Sample, TimeSeries, WriteRequest, encode};
    let app = Appliance::start("", &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let now = now_s() * 1000;
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label { name: "__name__".into(), value: "rw_metric".into() },
                Label { name: "env".into(), value: "edge".into() },
            ],
            samples: (0..10).map(|i| Sample { value: i as f64, timestamp: now - 9000 + i * 1000 }).collect(),
        }],
    };
    let headers = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let (status, body) = http(addr, "POST", "/api/v1/write", &headers, &encode(&req));
    assert_eq!(status, 204, "{body}");
    let v = query(addr, "sum_over_time(rw_metric[1m])");
    assert_eq!(v["data"]["result"][0]["value"][1], "45", "{v}");
    assert_eq!(v["data"]["result"][0]["metric"], serde_json::json!({"env": "edge"}));
    let (status, body) = http(addr, "POST", "/api/v1/write", &headers, b"garbage");
    assert_eq!(status, 400);
    assert!(body.contains("snappy"), "{body}");
}

#[test]
fn export_and_import_round_trip_between_two_appliances() {
    let a = Appliance::start("", &["up"]);
    let addr_a = tsdb_addr(&a);
    let b = Appliance::start("", &["up"]);
    let addr_b = tsdb_addr(&b);
    let t0 = now_s() - 300;
    let lines: String = (0..50).map(|i| format!("temp,room=r{} c={}.5 {}\n", i % 3, i, t0 + i)).collect();
    assert_eq!(http(addr_a, "POST", "/write?precision=s", &[], lines.as_bytes()).0, 204);
    let (status, exported) = http(addr_a, "GET", "/api/v1/export?match[]=temp_c", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(exported.lines().count(), 3);
    assert_eq!(http(addr_b, "POST", "/api/v1/import", &[], exported.as_bytes()).0, 204);
    let (_, again) = http(addr_b, "GET", "/api/v1/export?match[]=temp_c", &[], b"");
    let sorted = |s: &str| {
        let mut l: Vec<String> = s.lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    assert!(sorted(&exported) == sorted(&again), "the import does not reproduce the export");
    let (status, body) =
        http(addr_b, "POST", "/api/v1/import", &[], b"{\"metric\":{},\"values\":[1],\"timestamps\":[1]}\nnot json\n");
    assert_eq!(status, 400);
    assert!(body.contains("line 1") && body.contains("line 2"), "{body}");
}

#[test]
fn the_cli_writes_and_queries_and_bearer_auth_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tsdb-token-0123456789\n").unwrap();
    let cfg = format!("[tsdb]\nlisten = \"127.0.0.1:0\"\nauth = \"bearer\"\ntoken_file = \"{}\"\n", token.display());
    let app = Appliance::start(&cfg, &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    assert_eq!(http(addr, "POST", "/write", &[], b"m v=1").0, 401);
    assert_eq!(http(addr, "POST", "/write", &[("Authorization", "Bearer tsdb-token-0123456789")], b"m v=1").0, 204);
    // The CLI reads the same config (with the real port) and the token file.
    let cli_cfg = app.dir.path().join("cli.toml");
    std::fs::write(
        &cli_cfg,
        format!("[tsdb]\nlisten = \"{addr}\"\nauth = \"bearer\"\ntoken_file = \"{}\"\n", token.display()),
    )
    .unwrap();
    let c = cli_cfg.to_str().unwrap();
    let out = crate::support::run(&["--config", c, "tsdb", "write", "cli,src=shell v=7"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = crate::support::run(&["--config", c, "tsdb", "query", "cli_v * 6"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("{src=\"shell\"}  42"), "{}", text(&out.stdout));
    let out = crate::support::run(&["--config", c, "tsdb", "query", "nope("]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("parse error"), "{}", text(&out.stderr));
    let out = crate::support::run(&["--config", c, "tsdb", "write", "bad line"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("400"), "{}", text(&out.stderr));
}

/// kill -9 while a client streams writes, with checkpoints every second
/// in between; every write answered 204 is there after a restart on the
/// same data directory.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut app = Appliance::start("[tsdb]\nlisten = \"127.0.0.1:0\"\ncheckpoint_interval_s = 1\n", &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let t0 = now_s() - 1000;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 0..100_000i64 {
                let line = format!("crash,w=1 v={i} {}\n", t0 + i);
                let (status, _) = http_try(addr, line.as_bytes());
                if status != 204 {
                    break;
                }
                acked.lock().unwrap().push(i);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(2500));
    app.child.kill().unwrap();
    app.child.wait().unwrap();
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    assert!(app.logs_so_far().iter().any(|l| l.contains("tsdb checkpoint")), "no checkpoint ran before the kill");

    // Restart on the same data directory and count.
    let data = app.dir.path().join("data");
    let cfg = app.dir.path().join("edgebox.toml");
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let again = Appliance::start_in(dir, &cfg, &["up"]);
    let addr = tsdb_addr(&again);
    again.wait_ready();
    let (_, exported) = http(addr, "GET", "/api/v1/export?match[]=crash_v", &[], b"");
    let stored: serde_json::Value = serde_json::from_str(exported.lines().next().unwrap_or("{}")).unwrap();
    let values: Vec<i64> =
        stored["values"].as_array().map(|a| a.iter().map(|v| v.as_f64().unwrap() as i64).collect()).unwrap_or_default();
    let missing: Vec<&i64> = acked.iter().filter(|i| !values.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost (data dir {})",
        missing.len(),
        acked.len(),
        data.display()
    );
}

fn http_try(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "POST /write?precision=s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(req.as_bytes()).and_then(|_| s.write_all(body)).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    (resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), resp)
}

/// A real VictoriaMetrics, started on a free port with a private directory.
pub struct Victoria {
    child: std::process::Child,
    pub addr: SocketAddr,
    endpoint: Endpoint,
    auth: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

impl Victoria {
    pub fn start(port: u16) -> Victoria {
        Self::start_with(port, &[], None, vec![])
    }

    /// With extra flags (TLS, basic auth); `tls` and `auth` are what this
    /// test's own requests to it then need.
    pub fn start_with(
        port: u16,
        flags: &[String],
        tls: Option<ClientTls>,
        auth: Vec<(&'static str, String)>,
    ) -> Victoria {
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(["-loggerLevel=ERROR", "-search.latencyOffset=0s"])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("victoria-metrics is not installed (Debian package victoria-metrics; `make test` installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let vm = Victoria { child, addr, endpoint: Endpoint::plain(addr).with_tls(tls), auth, _dir: dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while vm.get("/health").0 != 200 {
            assert!(std::time::Instant::now() < deadline, "victoria-metrics did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        vm
    }

    /// A GET with this test's credentials; status 0 when it cannot connect.
    pub fn get(&self, path: &str) -> (u16, String) {
        match httpclient::request(&self.endpoint, "GET", path, &self.auth, b"") {
            Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
            Err(_) => (0, String::new()),
        }
    }

    /// Values of `metric` it holds, after flushing its buffers.
    pub fn values(&self, metric: &str) -> Vec<f64> {
        let _ = self.get("/internal/force_flush");
        let (_, body) = self.get(&format!("/api/v1/export?match[]={metric}"));
        body.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .flat_map(|v| v["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn samples_are_forwarded_to_a_real_victoriametrics() {
    let vm = Victoria::start(free_port());
    let cfg = format!(
        "[tsdb]\nlisten = \"127.0.0.1:0\"\nforward_url = \"http://{}/api/v1/write\"\nforward_batch_samples = 7\n",
        vm.addr
    );
    let app = Appliance::start(&cfg, &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let t0 = now_s() - 100;
    for batch in 0..3 {
        let lines: String =
            (0..10).map(|i| format!("fwd,host=h{} v={} {}\n", i % 2, batch * 10 + i, t0 + batch * 10 + i)).collect();
        assert_eq!(http(addr, "POST", "/write?precision=s", &[], lines.as_bytes()).0, 204);
    }
    wait_until("30 samples in VictoriaMetrics", || vm.values("fwd_v").len() == 30);
    let mut got = vm.values("fwd_v");
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, (0..30).map(f64::from).collect::<Vec<_>>());
    let (_, metrics) = app.get("/metrics");
    assert!(metrics.contains("edgebox_tsdb_forward_batches_sent_total"), "no forwarding metrics");
}

#[test]
fn the_forwarding_queue_survives_an_offline_upstream_and_a_restart() {
    let port = free_port();
    let cfg = format!(
        "[tsdb]\nlisten = \"127.0.0.1:0\"\nforward_url = \"http://127.0.0.1:{port}/api/v1/write\"\nforward_batch_samples = 5\n"
    );
    let mut app = Appliance::start(&cfg, &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let t0 = now_s() - 100;
    let lines: String = (0..20).map(|i| format!("offline v={i} {}\n", t0 + i)).collect();
    assert_eq!(http(addr, "POST", "/write?precision=s", &[], lines.as_bytes()).0, 204);
    // Nothing listens upstream: the backlog holds all four batches.
    wait_until("a backlog of 4 batches", || app.get("/metrics").1.contains("edgebox_tsdb_forward_backlog_batches 4"));
    app.wait_log("tsdb forward failed");
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));

    // The upstream comes back; the appliance restarts on the same data.
    let vm = Victoria::start(port);
    let cfg_path = app.dir.path().join("edgebox.toml");
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let again = Appliance::start_in(dir, &cfg_path, &["up"]);
    again.wait_ready();
    wait_until("20 samples in VictoriaMetrics", || vm.values("offline_v").len() == 20);
    wait_until("an empty backlog", || again.get("/metrics").1.contains("edgebox_tsdb_forward_backlog_batches 0"));
}
