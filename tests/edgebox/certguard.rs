//! certguard end to end, in one appliance: on the first start certguard
//! issues a short-lived certificate for the tsdb listener (which waits for
//! it), renews it, and the tsdb serves each renewal without a restart; curl
//! (OpenSSL) verifies it against the trust bundle; `edgebox certguard
//! status` lists it.

use std::time::Duration;

use edgebox::core::tls::{ClientTls, ClientTlsConfig};

use edgebox::roles::certguard::pebble::Pebble;

use crate::support::{Appliance, field, text};
use crate::support::{free_port, wait_until};

/// The leaf certificate served at `addr`, checked against `bundle` for
/// the name "localhost".
fn served_leaf(addr: std::net::SocketAddr, bundle: &std::path::Path) -> Result<Vec<u8>, String> {
    let cfg = ClientTlsConfig { ca_file: Some(bundle.to_owned()), ..Default::default() };
    let client = ClientTls::load(&cfg, "localhost", "test").map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = client.connect(tcp).map_err(|e| e.to_string())?;
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s.conn.peer_certificates().ok_or("no certificate")?[0].to_vec())
}

#[test]
fn a_certificate_is_issued_renewed_and_served_live_by_another_role() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // 18 seconds of life, renewed at half of it (± 5%); the tsdb listener is
    // the canary, probed by a handshake that must show each new leaf.
    let port = free_port();
    let guard_cfg = format!(
        "[certguard]\ncheck_interval_s = 1\ntrust_bundle_file = \"{d}/ca.pem\"\nkey_file = \"{d}/kek\"\n\
         [[certguard.certs]]\nname = \"tsdb\"\ndns_names = [\"localhost\"]\nlifetime_hours = 0.005\nrenew_at = 0.5\n\
         [[certguard.certs.targets]]\ncert_file = \"{d}/tsdb.pem\"\nkey_file = \"{d}/tsdb.key\"\n\
         probe = \"127.0.0.1:{port}\"\ncanary = true\n"
    );
    let tsdb_cfg = format!(
        "[tsdb]\nlisten = \"127.0.0.1:{port}\"\n[tsdb.tls]\ncert_file = \"{d}/tsdb.pem\"\nkey_file = \"{d}/tsdb.key\"\n"
    );
    let app = Appliance::start(&format!("{guard_cfg}{tsdb_cfg}"), &["up"]);
    let installed = app.wait_log("certguard installed a certificate");
    let first_serial = field(&installed, "serial").unwrap();
    let addr: std::net::SocketAddr = field(&app.wait_log("tsdb listening"), "addr").unwrap().parse().unwrap();
    app.wait_ready();
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("tsdb.key"), mode("kek"), mode("tsdb.pem")), (0o600, 0o600, 0o644));
    let bundle = dir.path().join("ca.pem");
    let first = served_leaf(addr, &bundle).unwrap();

    // An independent client: curl over OpenSSL, trusting only the bundle.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&bundle)
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .arg(format!("https://localhost:{}/api/v1/labels", addr.port()))
        .output()
        .expect("curl is not installed (Debian package curl)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("success"));

    // The renewal lands in the files; the tsdb serves it without a restart.
    let renewed = app.wait_log("certguard installed a certificate");
    assert_ne!(field(&renewed, "serial").unwrap(), first_serial);
    assert_eq!(field(&renewed, "reason").as_deref(), Some("renewal time"));
    wait_until("the renewed certificate being served", || served_leaf(addr, &bundle).is_ok_and(|l| l != first));

    // The status command, through the certguard appliance's admin listener.
    let cli_cfg = dir.path().join("cli.toml");
    std::fs::write(&cli_cfg, format!("{guard_cfg}[admin]\nlisten = \"{}\"\n", app.admin)).unwrap();
    let out = crate::support::run(&["--config", cli_cfg.to_str().unwrap(), "certguard", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("tsdb") && table.contains(&field(&renewed, "serial").unwrap()), "{table}");
    // Renew now, then roll back: each goes through the canary probe, and
    // the tsdb serves what the command says is in service.
    let data = app.dir.path().join("data");
    let cli = |args: &[&str]| {
        let mut all = vec!["--data-dir", data.to_str().unwrap(), "certguard"];
        all.extend_from_slice(args);
        let out = crate::support::run(&all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let serving = || served_leaf(addr, &bundle).unwrap();
    let before_renew = serving();
    assert!(cli(&["renew", "tsdb", "--now"]).contains("in service"));
    let renewed_leaf = serving();
    assert_ne!(renewed_leaf, before_renew);
    assert!(cli(&["rollback", "tsdb"]).contains("in service"));
    assert_eq!(serving(), before_renew, "the rollback put the previous certificate back");
    // A one-off certificate for a client, from the same CA.
    let client_pem = dir.path().join("client.pem");
    let out = cli(&[
        "issue",
        "--dns",
        "client-1.example",
        "--cert-out",
        client_pem.to_str().unwrap(),
        "--key-out",
        dir.path().join("client.key").to_str().unwrap(),
    ]);
    assert!(out.contains("serial"), "{out}");
    assert_eq!(std::fs::read_to_string(&client_pem).unwrap().matches("BEGIN CERTIFICATE").count(), 2);
    assert_eq!(mode("client.key"), 0o600);
    let (_, metrics) = app.get("/metrics");
    assert!(metrics.contains("edgebox_certguard_expiry_seconds{cert=\"tsdb\"}"), "{metrics}");
    assert!(metrics.contains("edgebox_certguard_rotations_total{cert=\"tsdb\"} 3"), "{metrics}");
    assert!(metrics.contains("edgebox_certguard_rollbacks_total{cert=\"tsdb\"} 1"), "{metrics}");
}

/// A real nginx in a private prefix, serving TLS on a port with the given
/// files; stopped when dropped.
struct Nginx {
    pid_file: std::path::PathBuf,
}

impl Nginx {
    fn start(dir: &std::path::Path, port: u16, cert: &std::path::Path, key: &std::path::Path) -> Nginx {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let conf = format!(
            "daemon on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/tmp;\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n\
             location / {{ return 200 \"ok\\n\"; }}\n }}\n}}\n",
            cert.display(),
            key.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let bin = if std::path::Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let out = std::process::Command::new(bin)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .output()
            .expect("nginx is not installed (Debian package nginx-light; `make test` installs it)");
        assert!(out.status.success(), "nginx did not start: {}", text(&out.stderr));
        let pid_file = dir.join("nginx.pid");
        wait_until("nginx's pid file", || pid_file.exists());
        Nginx { pid_file }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = std::process::Command::new("kill").args(["-QUIT", pid.trim()]).status();
        }
    }
}

/// nginx as the canary target: a reload that does nothing (nginx keeps the
/// old certificate in memory) is caught by the probe and rolled back before
/// the next target is touched; a real reload (SIGHUP through its pid file)
/// passes, and the certificate reaches the next wave.
#[test]
fn nginx_is_the_canary_and_a_silent_reload_failure_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let old = crate::tls::testpki::TestCa::new(dir.path(), "before").leaf(dir.path(), "web", &["web.example"]);
    let original = std::fs::read(&old.cert_file).unwrap();
    let port = free_port();
    let nginx = Nginx::start(&dir.path().join("nginx"), port, &old.cert_file, &old.key_file);
    let config = |reload: &str| {
        format!(
            "[certguard]\ncheck_interval_s = 1\ntrust_bundle_file = \"{d}/ca.pem\"\nkey_file = \"{d}/kek\"\n\
             [[certguard.certs]]\nname = \"web\"\ndns_names = [\"web.example\"]\nwave_size = 1\n\
             [[certguard.certs.targets]]\ncert_file = \"{d}/web.pem\"\nkey_file = \"{d}/web.key\"\ncanary = true\n\
             probe = \"127.0.0.1:{port}\"\nprobe_http_path = \"/\"\n{reload}\n\
             [[certguard.certs.targets]]\ncert_file = \"{d}/copy.pem\"\nkey_file = \"{d}/copy.key\"\n"
        )
    };

    // The reload "succeeds" but nginx never rereads its files.
    let app = Appliance::start(&config("reload_command = [\"true\"]\nprobe_timeout_s = 3"), &["certguard", "serve"]);
    let failed = app.wait_log("could not rotate a certificate");
    assert!(failed.contains("canary failed") && failed.contains("not serve the new certificate"), "{failed}");
    assert_eq!(std::fs::read(dir.path().join("web.pem")).unwrap(), original, "the canary is back on its old files");
    assert!(!dir.path().join("copy.pem").exists(), "the next wave was never touched");
    drop(app);

    // SIGHUP through nginx's pid file: nginx reloads, the probe sees the new
    // leaf and a 200, and the copy follows.
    let pid_file = dir.path().join("nginx/nginx.pid");
    // A loaded machine may take seconds to bring up nginx's new workers.
    let reload = format!("reload_pid_file = \"{}\"\nreload_signal = \"HUP\"\nprobe_timeout_s = 15", pid_file.display());
    let app = Appliance::start(&config(&reload), &["certguard", "serve"]);
    // The copy is written only once the canary passed; a first attempt that
    // failed under load is retried after its 20 s backoff.
    let copied = || dir.path().join("copy.pem").exists();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while !copied() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(copied(), "the certificate never reached the second wave: {:#?}", app.logs_so_far());
    let new_chain = std::fs::read(dir.path().join("web.pem")).unwrap();
    assert_ne!(new_chain, original);
    assert_eq!(std::fs::read(dir.path().join("copy.pem")).unwrap(), new_chain);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &format!("{d}/ca.pem"), "--resolve"])
        .arg(format!("web.example:{port}:127.0.0.1"))
        .arg(format!("https://web.example:{port}/"))
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    drop(nginx);
}

/// A certificate added to the config is issued after SIGHUP, without a
/// restart.
#[test]
fn a_reloaded_config_adds_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cert = |name: &str| {
        format!(
            "[[certguard.certs]]\nname = \"{name}\"\ndns_names = [\"{name}.example\"]\n\
             [[certguard.certs.targets]]\ncert_file = \"{d}/{name}.pem\"\nkey_file = \"{d}/{name}.key\"\n"
        )
    };
    let head = format!("[certguard]\ncheck_interval_s = 1\nkey_file = \"{d}/kek\"\n");
    let app = Appliance::start(&format!("{head}{}", cert("one")), &["certguard", "serve"]);
    assert!(app.wait_log("certguard installed a certificate").contains("\"one\""));
    let cfg_path = app.dir.path().join("edgebox.toml");
    std::fs::write(&cfg_path, format!("{head}{}{}", cert("one"), cert("two"))).unwrap();
    app.signal("HUP");
    let installed = app.wait_log("certguard installed a certificate");
    assert!(installed.contains("\"two\""), "{installed}");
    assert!(dir.path().join("two.pem").exists());
}

/// Waits for certificate `name` to be installed, then checks with OpenSSL
/// that `chain` verifies against Pebble's root.
fn issued_by_pebble(app: &Appliance, name: &str, chain: &std::path::Path, pebble: &Pebble) {
    let installed = app.wait_log("certguard installed a certificate");
    assert!(installed.contains(&format!("\"{name}\"")), "{installed}");
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&pebble.root)
        .arg("-untrusted")
        .arg(chain)
        .arg(chain)
        .output()
        .expect("openssl");
    assert!(verify.status.success(), "{}{}", text(&verify.stdout), text(&verify.stderr));
}

/// A certificate from a real ACME server, with an RSA key: certguard
/// answers the http-01 challenge on its own listener, installs the chain,
/// the chain verifies (OpenSSL) against Pebble's root, and at two thirds of
/// its 21 s life it is renewed from Pebble again (Pebble offers no ARI, so
/// the default schedule holds).
#[test]
fn acme_certificates_come_from_a_real_pebble() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let http01 = free_port();
    let pebble = Pebble::start(dir.path(), http01, free_port(), Some(21))
        .expect("pebble (Debian package pebble; `make test` installs it)");
    let cfg = format!(
        "[certguard]\ncheck_interval_s = 1\nkey_file = \"{d}/kek\"\n\
         [certguard.acme]\ndirectory_url = \"{}\"\ncontact = [\"ops@example.com\"]\nserver_ca_file = \"{}\"\n\
         http01_listen = \"127.0.0.1:{http01}\"\nprobe_ca_file = \"{}\"\n\
         [[certguard.certs]]\nname = \"web\"\nissuer = \"acme\"\nkey_type = \"rsa-2048\"\ndns_names = [\"web.example\", \"www.web.example\"]\n\
         [[certguard.certs.targets]]\ncert_file = \"{d}/web.pem\"\nkey_file = \"{d}/web.key\"\n",
        pebble.directory,
        pebble.https_ca.display(),
        pebble.root.display()
    );
    let app = Appliance::start(&cfg, &["certguard", "serve"]);
    issued_by_pebble(&app, "web", &dir.path().join("web.pem"), &pebble);
    let names = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.path().join("web.pem"))
        .output()
        .unwrap();
    assert!(text(&names.stdout).contains("www.web.example"), "{}", text(&names.stdout));
    let key = std::fs::read_to_string(dir.path().join("web.key")).unwrap();
    let rsa = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(dir.path().join("web.key"))
        .output()
        .unwrap();
    assert!(text(&rsa.stdout).contains("Private-Key: (2048 bit"), "{}{key:.40}", text(&rsa.stdout));
    let first = std::fs::read(dir.path().join("web.pem")).unwrap();
    issued_by_pebble(&app, "web", &dir.path().join("web.pem"), &pebble);
    assert_ne!(std::fs::read(dir.path().join("web.pem")).unwrap(), first, "renewed");
}

/// dns-01 through a hook command (here a script that sets the TXT record
/// in pebble-challtestsrv, Pebble's DNS), for a wildcard name.
#[test]
fn acme_dns01_through_a_hook_covers_a_wildcard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let pebble = Pebble::start(dir.path(), free_port(), free_port(), None)
        .expect("pebble (Debian package pebble; `make test` installs it)");
    let hook = dir.path().join("dns-hook.sh");
    let m = &pebble.dns_management;
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n\
             present) curl -sSf -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" {m}/set-txt ;;\n\
             cleanup) curl -sSf -d \"{{\\\"host\\\":\\\"$2\\\"}}\" {m}/clear-txt ;;\n\
             esac\necho \"$1 $2\" >> {d}/hook.log\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = format!(
        "[certguard]\ncheck_interval_s = 1\nkey_file = \"{d}/kek\"\n\
         [certguard.acme]\ndirectory_url = \"{}\"\nserver_ca_file = \"{}\"\nchallenge = \"dns-01\"\n\
         dns01_hook = [\"{}\"]\n\
         [[certguard.certs]]\nname = \"wild\"\nissuer = \"acme\"\ndns_names = [\"*.wild.example\", \"wild.example\"]\n\
         [[certguard.certs.targets]]\ncert_file = \"{d}/wild.pem\"\nkey_file = \"{d}/wild.key\"\n",
        pebble.directory,
        pebble.https_ca.display(),
        hook.display()
    );
    let app = Appliance::start(&cfg, &["certguard", "serve"]);
    let installed = app.wait_log("certguard installed a certificate");
    assert!(installed.contains("\"wild\""), "{installed}");
    let names = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.path().join("wild.pem"))
        .output()
        .unwrap();
    assert!(text(&names.stdout).contains("*.wild.example"), "{}", text(&names.stdout));
    let log = std::fs::read_to_string(dir.path().join("hook.log")).unwrap();
    assert!(log.contains("present _acme-challenge.wild.example.") && log.contains("cleanup"), "{log}");
}

/// tls-alpn-01 answered by certguard's own TLS listener (ALPN acme-tls/1,
/// the validation certificate carrying the key authorization's digest).
#[test]
fn acme_tls_alpn01_is_answered_by_certguard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let tls_port = free_port();
    let pebble = Pebble::start(dir.path(), free_port(), tls_port, None)
        .expect("pebble (Debian package pebble; `make test` installs it)");
    let cfg = format!(
        "[certguard]\ncheck_interval_s = 1\nkey_file = \"{d}/kek\"\n\
         [certguard.acme]\ndirectory_url = \"{}\"\nserver_ca_file = \"{}\"\nchallenge = \"tls-alpn-01\"\n\
         tls_alpn01_listen = \"127.0.0.1:{tls_port}\"\n\
         [[certguard.certs]]\nname = \"alpn\"\nissuer = \"acme\"\ndns_names = [\"alpn.example\"]\n\
         [[certguard.certs.targets]]\ncert_file = \"{d}/alpn.pem\"\nkey_file = \"{d}/alpn.key\"\n",
        pebble.directory,
        pebble.https_ca.display(),
    );
    let app = Appliance::start(&cfg, &["certguard", "serve"]);
    issued_by_pebble(&app, "alpn", &dir.path().join("alpn.pem"), &pebble);
}

/// An ACME server that does not answer: a clear failure naming it, retried
/// with backoff; nothing written.
#[test]
fn an_unreachable_acme_server_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = format!(
        "[certguard]\ncheck_interval_s = 1\nkey_file = \"{d}/kek\"\n\
         [certguard.acme]\ndirectory_url = \"https://127.0.0.1:1/dir\"\nhttp01_listen = \"127.0.0.1:0\"\n\
         [[certguard.certs]]\nname = \"web\"\nissuer = \"acme\"\ndns_names = [\"web.example\"]\n\
         [[certguard.certs.targets]]\ncert_file = \"{d}/web.pem\"\nkey_file = \"{d}/web.key\"\n"
    );
    let app = Appliance::start(&cfg, &["certguard", "serve"]);
    let failed = app.wait_log("could not rotate a certificate");
    assert!(failed.contains("https://127.0.0.1:1/dir") && failed.contains("retry_in_s"), "{failed}");
    assert!(!dir.path().join("web.pem").exists() && !dir.path().join("web.key").exists());
}
