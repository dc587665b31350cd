//! `edgebox gateway bench`: requests/s and latency through the gateway,
//! against going direct to the upstream and against nginx (Debian's,
//! configured as an mTLS reverse proxy with `ssl_verify_client on` and
//! pooled upstream connections) in front of the same upstream, in one run.
//! HAProxy, where installed, runs as a second reference, configured the
//! same way.
//!
//! The load generator presents a client certificate (an X.509-SVID made
//! here), holds `concurrency` keep-alive HTTP/1.1 connections, and sends
//! GET /items/{id}?limit=N, which the gateway routes, authorizes and
//! validates (path and query parameters) against an OpenAPI 3.1 document.
//! The upstream is a small hyper server in this process. Every proxy logs
//! every request (the gateway's buffered access log, nginx's access_log,
//! HAProxy's log to stdout). CPU is the proxy processes' user+system time
//! over the run, shown per request split into user and system (kernel)
//! time, next to the bench process's own (load generator and upstream):
//! on loopback the kernel's TCP work is most of a proxy's cost and the
//! same for any proxy, so the split shows what the proxy's own code costs.
//! The gateway runs twice: as configured by default (a runtime worker per
//! core) and with `[edgebox] workers = 1`, the setting to try where the
//! proxy shares a small machine with busy neighbours.

use std::convert::Infallible;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::ServerName;

use crate::core::ports::free_loopback;
use crate::core::tls::{ClientTls, ClientTlsConfig};

/// The document the gateway validates every request against.
const API: &str = r#"
openapi: 3.1.0
info: { title: bench, version: "1" }
paths:
  /items/{id}:
    get:
      operationId: getItem
      x-edgebox-allow: ["spiffe://bench.example/load/*"]
      parameters:
        - { name: id, in: path, required: true, schema: { type: integer, minimum: 1 } }
        - { name: limit, in: query, schema: { type: integer, minimum: 1, maximum: 100 } }
"#;

/// One target's figures.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// CPU seconds the proxy used per second, per 1 000 requests/s.
    pub vcpu_per_krps: Option<f64>,
    /// The proxy's user and system CPU per request, µs.
    pub proxy_us: Option<Cpu>,
    /// This process's (load generator and upstream) CPU per request, µs.
    pub driver_us: Cpu,
}

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu { user: self.user - before.user, sys: self.sys - before.sys }
    }

    fn plus(self, other: Cpu) -> Cpu {
        Cpu { user: self.user + other.user, sys: self.sys + other.sys }
    }

    fn per(self, n: f64) -> Cpu {
        Cpu { user: self.user / n, sys: self.sys / n }
    }

    fn total(self) -> f64 {
        self.user + self.sys
    }

    /// Seconds used so far by `pid`'s threads: utime and stime, fields 14
    /// and 15 of /proc/<pid>/stat (11 and 12 after the name).
    fn of(pid: u32) -> Option<Cpu> {
        let f = stat_fields(pid)?;
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
        Some(Cpu { user: ticks(11), sys: ticks(12) })
    }
}

/// Runs the comparison and prints a table.
pub fn run(concurrency: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let pki = Pki::write(d)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let upstream = runtime.block_on(start_upstream())?;
    let client = ClientTls::load(&pki.client_cfg(), "localhost", "bench")?;

    // Every proxy runs from the start; each waits idle while another is
    // measured.
    let through = |mut proc: Proc, port: u16| -> anyhow::Result<(Target, Option<Proc>)> {
        proc.wait_listening(port)?;
        Ok((Target::Tls(port, client.clone()), Some(proc)))
    };
    let (gw_port, gw1_port, ng_port, ha_port) =
        (free_loopback()?, free_loopback()?, free_loopback()?, free_loopback()?);
    let mut targets = vec![
        (Target::Plain(upstream), None),
        through(Proc::gateway(d, &pki, gw_port, upstream, 0)?, gw_port)?,
        through(Proc::gateway(d, &pki, gw1_port, upstream, 1)?, gw1_port)?,
        through(Proc::nginx(d, &pki, ng_port, upstream)?, ng_port)?,
    ];
    // HAProxy, where installed: a second reference for what a proxy's
    // requests/s can be on this machine.
    if let Some(haproxy) = Proc::haproxy(d, &pki, ha_port, upstream)? {
        targets.push(through(haproxy, ha_port)?);
    }
    let figures = runtime.block_on(measure(&targets, concurrency, seconds))?;
    for (_, proc) in &mut targets {
        if let Some(p) = proc {
            p.stop();
        }
    }
    let (direct, gw, gw1, ng) = (figures[0], figures[1], figures[2], figures[3]);
    let ha = figures.get(4).copied();

    println!(
        "gateway bench: {concurrency} keep-alive connections, {seconds} s each in slices of at most {} s taken in turn, \
         GET /items/{{id}}?limit=N",
        SLICE.as_secs()
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>7} {:>16} {:>18} {:>18}",
        "target", "req/s", "p50 ms", "p99 ms", "errors", "vCPU per 1k rps", "proxy µs/req u+s", "driver µs/req u+s"
    );
    let us = |c: Cpu| format!("{:.1}+{:.1}", c.user, c.sys);
    let row = |name: &str, f: &Figures| {
        let cpu = f.vcpu_per_krps.map_or("-".to_owned(), |c| format!("{c:.3}"));
        let proxy = f.proxy_us.map_or("-".to_owned(), us);
        println!(
            "{name:<34} {:>10.0} {:>9.3} {:>9.3} {:>7} {cpu:>16} {proxy:>18} {:>18}",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            f.errors,
            us(f.driver_us)
        );
    };
    row("direct (plain HTTP, no proxy)", &direct);
    row("edgebox gateway (mTLS + OpenAPI)", &gw);
    row("edgebox gateway, workers = 1", &gw1);
    row("nginx 1.22 (mTLS proxy)", &ng);
    match &ha {
        Some(ha) => row("haproxy 2.6 (mTLS proxy)", ha),
        None => println!("haproxy: not installed (apt-get install haproxy), no row"),
    }
    println!(
        "gateway / nginx: requests/s {:.2}x, p99 {:.2}x; added p50/p99 over direct: gateway {:.3}/{:.3} ms, nginx {:.3}/{:.3} ms",
        gw.rps / ng.rps,
        gw.p99_ms / ng.p99_ms,
        gw.p50_ms - direct.p50_ms,
        gw.p99_ms - direct.p99_ms,
        ng.p50_ms - direct.p50_ms,
        ng.p99_ms - direct.p99_ms
    );
    println!(
        "gateway with one worker thread / nginx: requests/s {:.2}x, p99 {:.2}x (the default is a worker per core)",
        gw1.rps / ng.rps,
        gw1.p99_ms / ng.p99_ms
    );
    if let Some(ha) = &ha {
        println!(
            "gateway / haproxy: requests/s {:.2}x, p99 {:.2}x; haproxy / nginx: requests/s {:.2}x, p99 {:.2}x",
            gw.rps / ha.rps,
            gw.p99_ms / ha.p99_ms,
            ha.rps / ng.rps,
            ha.p99_ms / ng.p99_ms
        );
    }
    Ok(())
}

/// The bench's certificates: the proxies' server certificate, the trust
/// domain's CA and the load generator's SVID.
struct Pki {
    server_ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    bundle: std::path::PathBuf,
    svid_cert: std::path::PathBuf,
    svid_key: std::path::PathBuf,
}

impl Pki {
    fn write(d: &Path) -> anyhow::Result<Pki> {
        let ca = |name: &str| -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            Ok(CertifiedIssuer::self_signed(p, KeyPair::generate()?)?)
        };
        let (server_ca, trust) = (ca("bench server CA")?, ca("bench.example")?);
        let server = CertificateParams::new(vec!["localhost".to_owned()])?;
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &server_ca)?;
        let mut svid = CertificateParams::new(Vec::<String>::new())?;
        svid.subject_alt_names.push(SanType::URI("spiffe://bench.example/load/1".try_into()?));
        svid.is_ca = IsCa::ExplicitNoCa;
        svid.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        svid.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let svid_key = KeyPair::generate()?;
        let svid_cert = svid.signed_by(&svid_key, &trust)?;
        let pki = Pki {
            server_ca: d.join("server-ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            bundle: d.join("bundle.pem"),
            svid_cert: d.join("svid.pem"),
            svid_key: d.join("svid.key"),
        };
        std::fs::write(&pki.server_ca, server_ca.pem())?;
        std::fs::write(&pki.server_cert, server_cert.pem())?;
        std::fs::write(&pki.server_key, server_key.serialize_pem())?;
        std::fs::write(&pki.bundle, trust.pem())?;
        std::fs::write(&pki.svid_cert, svid_cert.pem())?;
        std::fs::write(&pki.svid_key, svid_key.serialize_pem())?;
        Ok(pki)
    }

    fn client_cfg(&self) -> ClientTlsConfig {
        ClientTlsConfig {
            ca_file: Some(self.server_ca.clone()),
            cert_file: Some(self.svid_cert.clone()),
            key_file: Some(self.svid_key.clone()),
            server_name: None,
        }
    }
}

/// A proxy process under test, and the processes whose CPU it uses.
struct Proc {
    child: Child,
    name: &'static str,
    /// Where it writes its errors.
    log: std::path::PathBuf,
}

impl Proc {
    /// The gateway with `workers` runtime threads (0: one per core, the
    /// default).
    fn gateway(d: &Path, pki: &Pki, port: u16, upstream: std::net::SocketAddr, workers: usize) -> anyhow::Result<Proc> {
        std::fs::write(d.join("api.yaml"), API)?;
        let g = d.join(format!("gateway-w{workers}"));
        std::fs::create_dir_all(&g)?;
        let cfg = format!(
            "[edgebox]\nroles = [\"gateway\"]\nworkers = {workers}\n[admin]\nlisten = \"127.0.0.1:0\"\n[gateway]\nlisten = \"127.0.0.1:{port}\"\n\
             access_log = \"{}\"\n\
             [gateway.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nspiffe_bundles = {{ \"bench.example\" = \"{}\" }}\n\
             [[gateway.services]]\nname = \"bench\"\nopenapi_file = \"{}\"\nupstream = \"http://{upstream}\"\n",
            g.join("access.log").display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.bundle.display(),
            d.join("api.yaml").display()
        );
        std::fs::write(g.join("gateway.toml"), cfg)?;
        let log = std::fs::File::create(g.join("gateway.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(g.join("gateway.toml"))
            .arg("--data-dir")
            .arg(g.join("data"))
            .args(["--log-format", "json", "up"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Proc { child, name: "edgebox", log: g.join("gateway.log") })
    }

    fn nginx(d: &Path, pki: &Pki, port: u16, upstream: std::net::SocketAddr) -> anyhow::Result<Proc> {
        let n = d.join("nginx");
        std::fs::create_dir_all(n.join("tmp"))?;
        let conf = format!(
            "daemon off;\nworker_processes auto;\npid {n}/nginx.pid;\nerror_log {n}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log {n}/access.log;\n client_body_temp_path {n}/tmp;\n\
             upstream app {{ server {upstream}; keepalive 256; }}\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n\
             ssl_client_certificate {};\n  ssl_verify_client on;\n  keepalive_requests 1000000;\n\
             location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n }}\n}}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.bundle.display(),
            n = n.display()
        );
        std::fs::write(n.join("nginx.conf"), conf)?;
        let bin = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let child = Command::new(bin)
            .arg("-c")
            .arg(n.join("nginx.conf"))
            .arg("-p")
            .arg(&n)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nginx is not installed (Debian package nginx-light)")?;
        Ok(Proc { child, name: "nginx", log: n.join("error.log") })
    }

    /// HAProxy (Debian's 2.6) as an mTLS reverse proxy to the same
    /// upstream, as nginx is configured: client certificates verified
    /// against the trust bundle, keep-alive upstream connections shared
    /// between callers, every request logged (to stdout, into a file), a
    /// thread per core. None when it is not installed.
    fn haproxy(d: &Path, pki: &Pki, port: u16, upstream: std::net::SocketAddr) -> anyhow::Result<Option<Proc>> {
        let Some(bin) = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].into_iter().find(|b| Path::new(b).exists())
        else {
            return Ok(None);
        };
        let h = d.join("haproxy");
        std::fs::create_dir_all(&h)?;
        // HAProxy takes the certificate and its key in one file.
        let crt = h.join("server-with-key.pem");
        std::fs::write(&crt, std::fs::read_to_string(&pki.server_cert)? + &std::fs::read_to_string(&pki.server_key)?)?;
        let bind = format!(
            "bind 127.0.0.1:{port} ssl crt {} ca-file {} verify required alpn http/1.1",
            crt.display(),
            pki.bundle.display()
        );
        let conf = [
            "global",
            "log stdout format raw local0",
            "defaults",
            "mode http",
            "log global",
            "option httplog",
            "timeout connect 5s",
            "timeout client 60s",
            "timeout server 60s",
            "timeout http-keep-alive 60s",
            "frontend bench",
            &bind,
            "default_backend app",
            "backend app",
            "http-reuse always",
            &format!("server app {upstream}"),
        ]
        .join("\n");
        std::fs::write(h.join("haproxy.cfg"), conf + "\n")?;
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(h.join("haproxy.cfg"))
            .stdout(std::fs::File::create(h.join("access.log"))?)
            .stderr(std::fs::File::create(h.join("error.log"))?)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        Ok(Some(Proc { child, name: "haproxy", log: h.join("error.log") }))
    }

    /// Waits until the process accepts TCP on the port; if it exits or
    /// takes over 20 s, the error quotes the end of its log.
    fn wait_listening(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = self.child.try_wait()?;
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>();
                let what = exited.map_or("is not listening after 20 s".to_owned(), |st| format!("exited ({st})"));
                anyhow::bail!(
                    "{} {what} on port {port}; the end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// CPU used so far by the process and its children.
    fn cpu(&self) -> Cpu {
        let root = self.child.id();
        let mut pids = vec![root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
                if stat_fields(pid).is_some_and(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(root)) {
                    pids.push(pid);
                }
            }
        }
        pids.into_iter().filter_map(Cpu::of).fold(Cpu::default(), Cpu::plus)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::warn!(process = self.name, "did not stop on SIGTERM; killed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// /proc/<pid>/stat after the command name: state, ppid, …
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The upstream: 200 with a small JSON body for every request.
async fn start_upstream() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{\"id\":1,\"name\":\"item\"}")));
                    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

enum Target {
    Plain(std::net::SocketAddr),
    Tls(u16, ClientTls),
}

/// The longest stretch one target is loaded before the next takes its
/// turn: this machine's speed drifts over tens of seconds, and taking the
/// targets in turn spreads the drift over all of them.
const SLICE: Duration = Duration::from_secs(2);

/// What the slices of one target add up to.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    elapsed: f64,
    proxy: Cpu,
    driver: Cpu,
}

/// `seconds` of load per target, `concurrency` connections sending requests
/// back to back, in slices taken in turn; the figures in `targets`' order.
async fn measure(targets: &[(Target, Option<Proc>)], concurrency: usize, seconds: u64) -> anyhow::Result<Vec<Figures>> {
    // Connections open once and stay open; a short warm-up each, so
    // connection set-up is not in the figures.
    let mut conns = Vec::with_capacity(targets.len());
    for (target, _) in targets {
        let mut c = open(target, concurrency).await?;
        let _ = run_load(&mut c, Duration::from_millis(500)).await?;
        conns.push(c);
    }
    let total = Duration::from_secs(seconds);
    let rounds = total.as_nanos().div_ceil(SLICE.as_nanos()).max(1) as u32;
    let slice = total / rounds;
    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    for _ in 0..rounds {
        for (((target, proc), tally), c) in targets.iter().zip(&mut tallies).zip(&mut conns) {
            reopen_closed(target, c).await?;
            let cpu_before = proc.as_ref().map(Proc::cpu).unwrap_or_default();
            let driver_before = Cpu::of(std::process::id()).unwrap_or_default();
            let started = Instant::now();
            let (latencies, errors) = run_load(c, slice).await?;
            tally.elapsed += started.elapsed().as_secs_f64();
            tally.driver = tally.driver.plus(Cpu::of(std::process::id()).unwrap_or_default().since(driver_before));
            tally.proxy = tally.proxy.plus(proc.as_ref().map(Proc::cpu).unwrap_or_default().since(cpu_before));
            tally.latencies.extend(latencies);
            tally.errors += errors;
        }
    }
    Ok(targets.iter().zip(tallies).map(|((_, proc), t)| t.figures(proc.is_some())).collect())
}

impl Tally {
    fn figures(mut self, proxied: bool) -> Figures {
        let latencies = &mut self.latencies;
        latencies.sort_unstable();
        let pct = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let rps = latencies.len() as f64 / self.elapsed;
        let per_request_us = |c: Cpu| c.per(latencies.len().max(1) as f64 / 1e6);
        let proxy = proxied.then_some(self.proxy);
        Figures {
            rps,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            errors: self.errors,
            vcpu_per_krps: proxy.map(|c| (c.total() / self.elapsed) / (rps / 1000.0)),
            proxy_us: proxy.map(per_request_us),
            driver_us: per_request_us(self.driver),
        }
    }
}

/// One keep-alive connection's sending half.
type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// `concurrency` keep-alive connections to the target.
async fn open(target: &Target, concurrency: usize) -> anyhow::Result<Vec<(usize, Sender)>> {
    let mut conns = Vec::with_capacity(concurrency);
    for c in 0..concurrency {
        let (addr, tls) = match target {
            Target::Plain(a) => (*a, None),
            Target::Tls(p, t) => (std::net::SocketAddr::from(([127, 0, 0, 1], *p)), Some(t)),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let sender = match tls {
            None => handshake(tcp).await?,
            Some(t) => {
                let connector = tokio_rustls::TlsConnector::from(t.config());
                handshake(connector.connect(ServerName::try_from("localhost")?, tcp).await?).await?
            }
        };
        conns.push((c, sender));
    }
    Ok(conns)
}

/// Opens again the connections the target closed while it waited idle
/// (a proxy may close idle keep-alive connections).
async fn reopen_closed(target: &Target, conns: &mut [(usize, Sender)]) -> anyhow::Result<()> {
    for (_, sender) in conns.iter_mut().filter(|(_, s)| s.is_closed()) {
        *sender = open(target, 1).await?.remove(0).1;
    }
    Ok(())
}

/// Every connection sends requests back to back for `duration`; the
/// latencies (µs) of the successful requests, and the failures.
async fn run_load(conns: &mut Vec<(usize, Sender)>, duration: Duration) -> anyhow::Result<(Vec<u64>, u64)> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = conns.drain(..).map(|(c, sender)| tokio::spawn(requests(c, sender, deadline))).collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (conn, lat, err) = t.await??;
        conns.push(conn);
        all.extend(lat);
        errors += err;
    }
    Ok((all, errors))
}

/// One connection's requests until the deadline; a connection that failed
/// fails its next request at once.
async fn requests(c: usize, mut sender: Sender, deadline: Instant) -> anyhow::Result<((usize, Sender), Vec<u64>, u64)> {
    let (mut latencies, mut errors) = (Vec::with_capacity(100_000), 0u64);
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let path = format!("/items/{}?limit={}", c as u64 * 1_000_000 + i, 1 + i % 100);
        let req = http::Request::get(path).header("host", "localhost").body(Empty::<Bytes>::new())?;
        let t0 = Instant::now();
        match sender.send_request(req).await {
            Ok(resp) if resp.status() == 200 => {
                let _ = resp.into_body().collect().await?;
                latencies.push(t0.elapsed().as_micros() as u64);
            }
            Ok(resp) => {
                let _ = resp.into_body().collect().await;
                errors += 1;
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    Ok(((c, sender), latencies, errors))
}

async fn handshake<S>(io: S) -> anyhow::Result<Sender>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
