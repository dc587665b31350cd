//! certguard end to end, in one appliance: on the first start certguard
//! issues a short-lived certificate for the tsdb listener (which waits for
//! it), renews it, and the tsdb serves each renewal without a restart; curl
//! (OpenSSL) verifies it against the trust bundle; `edgebox certguard
//! status` lists it.

use std::time::Duration;

use edgebox::core::tls::{ClientTls, ClientTlsConfig};

use crate::support::{Appliance, field, text};
use crate::tsdb::wait_until;

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
    // 18 seconds of life, renewed at half of it (± 5%).
    let guard_cfg = format!(
        "[certguard]\ncheck_interval_s = 1\ntrust_bundle_file = \"{d}/ca.pem\"\nkey_file = \"{d}/kek\"\n\
         [[certguard.certs]]\nname = \"tsdb\"\ndns_names = [\"localhost\"]\nlifetime_hours = 0.005\nrenew_at = 0.5\n\
         cert_file = \"{d}/tsdb.pem\"\nkey_file = \"{d}/tsdb.key\"\n"
    );
    let tsdb_cfg = format!(
        "[tsdb]\nlisten = \"127.0.0.1:0\"\n[tsdb.tls]\ncert_file = \"{d}/tsdb.pem\"\nkey_file = \"{d}/tsdb.key\"\n"
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
    let (_, metrics) = app.get("/metrics");
    assert!(metrics.contains("edgebox_certguard_expiry_seconds{cert=\"tsdb\"}"), "{metrics}");
    assert!(metrics.contains("edgebox_certguard_rotations_total{cert=\"tsdb\"} 2"), "{metrics}");
}
