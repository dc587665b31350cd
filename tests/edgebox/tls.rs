//! TLS on real listeners and real peers: curl (OpenSSL) against the tsdb
//! and admin listeners with and without client certificates, the CLI through
//! its pinned certificate, and forwarding over https to a real
//! VictoriaMetrics that checks basic auth.

use std::path::Path;
use std::process::Command;

use edgebox::core::httpclient::{self, Endpoint};
use edgebox::core::tls::{ClientTls, ClientTlsConfig};

use crate::support::{Appliance, field, text};
use crate::support::{free_port, wait_until};
use crate::tsdb::{Victoria, now_s, tsdb_addr};

#[path = "../../src/core/tls/testpki.rs"]
pub mod testpki;
use testpki::{Leaf, TestCa};

/// curl over https to `url` (its host resolved to 127.0.0.1), trusting `ca`
/// and presenting `cert` when given. Ok(status, body), or Err(curl's
/// complaint) when no HTTP answer came.
fn curl(url: &str, ca: &Path, cert: Option<&Leaf>, data: Option<&str>) -> Result<(u16, String), String> {
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--resolve"])
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca);
    if let Some(leaf) = cert {
        cmd.arg("--cert").arg(&leaf.cert_file).arg("--key").arg(&leaf.key_file);
    }
    if let Some(d) = data {
        cmd.args(["--data-binary", d]);
    }
    let out = cmd.arg(url).output().expect("curl is not installed (Debian package curl)");
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap(), body.to_owned()))
}

#[test]
fn the_tsdb_listener_takes_only_clients_with_a_certificate_from_its_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new(dir.path(), "servers");
    let clients = TestCa::new(dir.path(), "clients");
    let leaf = servers.leaf(dir.path(), "tsdb", &["localhost"]);
    let device = clients.leaf(dir.path(), "device", &["device-1"]);
    let rogue = TestCa::new(dir.path(), "rogue").leaf(dir.path(), "rogue", &["device-1"]);
    let cfg = format!(
        "[tsdb]\nlisten = \"127.0.0.1:0\"\n[tsdb.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        leaf.cert_file.display(),
        leaf.key_file.display(),
        clients.ca_file.display()
    );
    let app = Appliance::start(&cfg, &["up"]);
    let line = app.wait_log("tsdb listening");
    assert_eq!(field(&line, "tls").as_deref(), Some("true"));
    let addr: std::net::SocketAddr = field(&line, "addr").unwrap().parse().unwrap();
    app.wait_ready();
    let base = format!("https://localhost:{}", addr.port());
    let t = now_s();

    let written =
        curl(&format!("{base}/write?precision=s"), &servers.ca_file, Some(&device), Some(&format!("tls v=5 {t}")));
    assert_eq!(written.unwrap().0, 204);
    let (status, body) =
        curl(&format!("{base}/api/v1/query?query=tls_v*2"), &servers.ca_file, Some(&device), None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"10\""), "{body}");

    // No certificate, or one from another CA: the handshake fails, no HTTP.
    for who in [None, Some(&rogue)] {
        let refused = curl(&format!("{base}/api/v1/labels"), &servers.ca_file, who, None);
        assert!(refused.is_err(), "a client without a good certificate got an answer: {refused:?}");
    }
    // Plain HTTP on the TLS port gets no answer either.
    let plain =
        Command::new("curl").args(["-sS", "--max-time", "5"]).arg(format!("http://{addr}/api/v1/labels")).output();
    assert!(!plain.unwrap().status.success());
    wait_until("handshake failures counted", || {
        app.get("/metrics").1.lines().any(|l| l.starts_with("edgebox_tls_handshake_failures_total{role=\"tsdb\"} "))
    });

    // The CLI has no client certificate and says so.
    let cli_cfg = dir.path().join("cli.toml");
    std::fs::write(&cli_cfg, cfg.replace("127.0.0.1:0", &addr.to_string())).unwrap();
    let out = crate::support::run(&["--config", cli_cfg.to_str().unwrap(), "tsdb", "query", "tls_v"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("tsdb.tls.client_ca_file"), "{}", text(&out.stderr));
}

#[test]
fn the_cli_reaches_a_tls_listener_through_its_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "servers");
    // A name that is not the loopback address the CLI connects to.
    let leaf = ca.leaf(dir.path(), "tsdb", &["device-17.example"]);
    let token = dir.path().join("token");
    std::fs::write(&token, "tsdb-token-0123456789\n").unwrap();
    let section = |listen: &str| {
        format!(
            "[tsdb]\nlisten = \"{listen}\"\nauth = \"bearer\"\ntoken_file = \"{}\"\n[tsdb.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            token.display(),
            leaf.cert_file.display(),
            leaf.key_file.display()
        )
    };
    let app = Appliance::start(&section("127.0.0.1:0"), &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let cli_cfg = dir.path().join("cli.toml");
    std::fs::write(&cli_cfg, section(&addr.to_string())).unwrap();
    let c = cli_cfg.to_str().unwrap();
    let out = crate::support::run(&["--config", c, "tsdb", "write", "pinned,src=cli v=21"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = crate::support::run(&["--config", c, "tsdb", "query", "pinned_v * 2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("{src=\"cli\"}  42"), "{}", text(&out.stdout));

    // Another certificate in the CLI's config: the CLI refuses the listener.
    let other = ca.leaf(dir.path(), "other", &["device-17.example"]);
    let swapped = section(&addr.to_string())
        .replace(&leaf.cert_file.display().to_string(), &other.cert_file.display().to_string())
        .replace(&leaf.key_file.display().to_string(), &other.key_file.display().to_string());
    std::fs::write(&cli_cfg, swapped).unwrap();
    let out = crate::support::run(&["--config", c, "tsdb", "query", "pinned_v"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("other than its configured cert_file"), "{}", text(&out.stderr));
}

#[test]
fn the_admin_listener_serves_metrics_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "servers");
    let leaf = ca.leaf(dir.path(), "admin", &["localhost"]);
    let port = free_port();
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        leaf.cert_file.display(),
        leaf.key_file.display()
    );
    let cfg_path = dir.path().join("edgebox.toml");
    std::fs::write(&cfg_path, crate::support::with_free_ports(&cfg)).unwrap();
    let mut child = Command::new(crate::support::bin())
        .arg("--config")
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["up"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://localhost:{port}/healthz");
    wait_until("admin over https", || curl(&url, &ca.ca_file, None, None).is_ok_and(|(s, _)| s == 200));
    let (status, metrics) = curl(&format!("https://localhost:{port}/metrics"), &ca.ca_file, None, None).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("edgebox_"), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
}

/// VictoriaMetrics serving https with basic auth; edgebox forwards to it
/// with the CA and credentials from its config. A wrong password keeps the
/// backlog (retried, never dropped) until the right one is configured.
#[test]
fn samples_are_forwarded_over_https_with_basic_auth_to_a_real_victoriametrics() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "central");
    let leaf = ca.leaf(dir.path(), "vm", &["central.example"]);
    let port = free_port();
    let flags = [
        "-tls".to_owned(),
        format!("-tlsCertFile={}", leaf.cert_file.display()),
        format!("-tlsKeyFile={}", leaf.key_file.display()),
        "-httpAuth.username=edge".to_owned(),
        "-httpAuth.password=s3cret-pass".to_owned(),
    ];
    let ours = ClientTlsConfig {
        ca_file: Some(ca.ca_file.clone()),
        server_name: Some("central.example".into()),
        ..Default::default()
    };
    let client = ClientTls::load(&ours, "127.0.0.1", "test").unwrap();
    let auth = vec![("Authorization", "Basic ZWRnZTpzM2NyZXQtcGFzcw==".to_owned())];
    let vm = Victoria::start_with(port, &flags, Some(client), auth);
    assert_eq!(vm.values("secure_v").len(), 0);

    let password = dir.path().join("password");
    std::fs::write(&password, "wrong-pass\n").unwrap();
    let cfg = format!(
        "[tsdb]\nlisten = \"127.0.0.1:0\"\nforward_url = \"https://127.0.0.1:{port}/api/v1/write\"\nforward_batch_samples = 4\n\
         forward_username = \"edge\"\nforward_password_file = \"{}\"\n\
         [tsdb.forward_tls]\nca_file = \"{}\"\nserver_name = \"central.example\"\n",
        password.display(),
        ca.ca_file.display()
    );
    let mut app = Appliance::start(&cfg, &["up"]);
    let addr = tsdb_addr(&app);
    app.wait_ready();
    let t0 = now_s() - 50;
    let lines: String = (0..12).map(|i| format!("secure v={i} {}\n", t0 + i)).collect();
    assert_eq!(write(addr, &lines), 204);
    let failure = app.wait_log("tsdb forward failed");
    assert!(failure.contains("401"), "{failure}");
    wait_until("a backlog of 3 batches", || app.get("/metrics").1.contains("edgebox_tsdb_forward_backlog_batches 3"));
    assert!(!app.logs_so_far().iter().any(|l| l.contains("wrong-pass")), "a secret was logged");
    app.signal("TERM");
    assert_eq!(app.wait_exit(std::time::Duration::from_secs(15)), Some(0));

    // The right password and a restart: the backlog and new samples arrive.
    std::fs::write(&password, "s3cret-pass\n").unwrap();
    let cfg_path = app.dir.path().join("edgebox.toml");
    let data = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let again = Appliance::start_in(data, &cfg_path, &["up"]);
    let addr = tsdb_addr(&again);
    again.wait_ready();
    let lines: String = (12..24).map(|i| format!("secure v={i} {}\n", t0 + i)).collect();
    assert_eq!(write(addr, &lines), 204);
    wait_until("24 samples over https", || vm.values("secure_v").len() >= 24);
    let mut got = vm.values("secure_v");
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, (0..24).map(f64::from).collect::<Vec<_>>());
}

/// Line protocol to a plain tsdb listener; the status.
fn write(addr: std::net::SocketAddr, lines: &str) -> u16 {
    let to = Endpoint::plain(addr);
    httpclient::request(&to, "POST", "/write?precision=s", &[], lines.as_bytes()).unwrap().status
}
