//! Helpers: run the binary, start an appliance and wait for it, talk HTTP
//! over a plain socket, read what a process listens on from /proc.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgebox"))
}

/// Runs edgebox with `args` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env_remove("EDGEBOX_CONFIG").output().expect("run edgebox")
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A running appliance with its admin address and its log lines.
pub struct Appliance {
    pub child: Child,
    pub admin: SocketAddr,
    pub logs: mpsc::Receiver<String>,
    /// Every line received so far, so a wait finds lines logged before it.
    seen: std::cell::RefCell<Vec<String>>,
    pub dir: tempfile::TempDir,
}

impl Appliance {
    /// Starts `edgebox ARGS` with a fresh data dir, `config` as its config
    /// file, admin on a free port and JSON logs; waits for "admin listening".
    /// Every role the config does not configure gets its compliance
    /// section, so its listeners take free ports and tests run in parallel.
    pub fn start(config: &str, args: &[&str]) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("edgebox.toml");
        std::fs::write(&cfg, with_free_ports(config)).unwrap();
        Self::start_in(dir, &cfg, args)
    }

    pub fn start_in(dir: tempfile::TempDir, cfg: &Path, args: &[&str]) -> Appliance {
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgebox");
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let admin = wait_for_log(&logs, "admin listening", Duration::from_secs(20), &mut seen)
            .and_then(|l| field(&l, "addr"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("appliance never reported its admin listener; its log:\n{}", seen.join("\n"));
            });
        Appliance { child, admin, logs, seen: std::cell::RefCell::new(seen), dir }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path, &[])
    }

    /// Polls /readyz until 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.get("/readyz").0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("appliance not ready after 20 s");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for exit, returning the exit code (None: killed by a signal).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("appliance did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every log line so far.
    pub fn logs_so_far(&self) -> Vec<String> {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.logs.try_iter());
        seen.clone()
    }

    /// The first log line (seen before or arriving within 20 s) holding
    /// `needle`; each line is handed out once.
    pub fn wait_log(&self, needle: &str) -> String {
        let mut seen = self.seen.borrow_mut();
        if let Some(i) = seen.iter().position(|l| l.contains(needle)) {
            return seen.remove(i);
        }
        let mut later = Vec::new();
        let found = wait_for_log(&self.logs, needle, Duration::from_secs(20), &mut later);
        seen.extend(later);
        found.unwrap_or_else(|| {
            // What the appliance warned of says why, when a slow CI machine
            // makes a wait fail.
            let warnings: Vec<&str> =
                seen.iter().filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"")).map(String::as_str).collect();
            let tail = warnings.len().saturating_sub(20);
            panic!("no log line with {needle:?} within 20 s; its last warnings:\n{}", warnings[tail..].join("\n"))
        })
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `config` plus the compliance section of each role it leaves out.
pub fn with_free_ports(config: &str) -> String {
    let mut out = config.to_owned();
    for role in edgebox::roles::ROLES {
        if !config.contains(&format!("[{}]", role.name)) {
            out.push('\n');
            out.push_str(role.compliance_config);
        }
    }
    out
}

/// Receives lines until one holds `needle`; the others go to `passed`.
pub fn wait_for_log(
    logs: &mpsc::Receiver<String>,
    needle: &str,
    within: Duration,
    passed: &mut Vec<String>,
) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = logs.recv_timeout(left).ok()?;
        if line.contains(needle) {
            return Some(line);
        }
        passed.push(line);
    }
}

/// A field of a JSON log line (top level or under "fields").
pub fn field(line: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = v.get("fields").and_then(|f| f.get(name)).or_else(|| v.get(name))?;
    Some(f.as_str().map(str::to_owned).unwrap_or_else(|| f.to_string()))
}

/// A minimal HTTP/1.1 GET: status and body.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// One HTTP request; returns status and body.
#[cfg(feature = "tsdb")]
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A port free on loopback now, for an appliance to bind later (below the
/// ephemeral range, never twice in this process: core::ports).
#[cfg_attr(not(feature = "tsdb"), allow(dead_code, reason = "used by role tests, each behind its feature"))]
pub fn free_port() -> u16 {
    edgebox::core::ports::free_loopback().expect("a free loopback port")
}

/// Polls `ok` every 100 ms for up to 30 s.
#[cfg_attr(not(feature = "tsdb"), allow(dead_code, reason = "used by role tests, each behind its feature"))]
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One request with curl over TLS, trusting `ca` and presenting `client`
/// (certificate, key) when given: status and body, or curl's complaint
/// (a refused handshake) as the error.
#[cfg(all(feature = "tsdb", any(feature = "gateway", feature = "orchestrator")))]
pub fn curl_tls(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    method: &str,
    url: &str,
    extra: &[&str],
) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.args(extra).arg(url).output().expect("curl");
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// TCP ports a process listens on, from its socket fds and /proc/net/tcp{,6}.
pub fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is cols[1] (ADDR:PORT in hex), st is cols[3], inode cols[9].
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                ports.extend(cols[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()));
            }
        }
    }
    ports
}
