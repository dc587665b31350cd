//! Real handshakes over loopback: trust, client certificates, pinning,
//! reloading, and errors that name the file at fault.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::testpki::{Leaf, TestCa};
use super::*;

/// Serves one echo of up to 5 bytes per connection, for `connections`
/// connections, and returns the address.
async fn echo_server(tls: ServerTls, connections: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = tls.accept(tcp).await {
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}

/// Connects, sends "hello", and returns the echo and the leaf the server showed.
async fn hello(client: ClientTls, addr: std::net::SocketAddr) -> Result<(Vec<u8>, Vec<u8>), String> {
    tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = client.connect(tcp).map_err(|e| e.to_string())?;
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        let leaf = s.conn.peer_certificates().unwrap()[0].to_vec();
        Ok((buf.to_vec(), leaf))
    })
    .await
    .unwrap()
}

fn server_cfg(leaf: &Leaf, client_ca: Option<&Path>) -> ServerTlsConfig {
    ServerTlsConfig {
        cert_file: leaf.cert_file.clone(),
        key_file: leaf.key_file.clone(),
        client_ca_file: client_ca.map(Path::to_owned),
        ..Default::default()
    }
}

fn trusting(ca: &TestCa) -> ClientTlsConfig {
    ClientTlsConfig { ca_file: Some(ca.ca_file.clone()), ..Default::default() }
}

#[tokio::test]
async fn a_client_trusting_the_ca_talks_to_the_server_by_name_and_by_ip() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "servers");
    let leaf = ca.leaf(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let addr = echo_server(ServerTls::load(&server_cfg(&leaf, None), "x.tls").unwrap(), 4).await;
    for host in ["localhost", "127.0.0.1"] {
        let client = ClientTls::load(&trusting(&ca), host, "x.forward_tls").unwrap();
        assert_eq!(hello(client, addr).await.unwrap().0, b"hello");
    }
    // The wrong name, and the built-in roots (which do not hold this CA), fail.
    let wrong = ClientTls::load(&trusting(&ca), "central.example", "x").unwrap();
    let e = hello(wrong, addr).await.unwrap_err();
    assert!(e.contains("not valid for name \"central.example\""), "{e}");
    let public = ClientTls::load(&ClientTlsConfig::default(), "localhost", "x").unwrap();
    let e = hello(public, addr).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new(dir.path(), "servers");
    let clients = TestCa::new(dir.path(), "clients");
    let rogue = TestCa::new(dir.path(), "rogue");
    let leaf = servers.leaf(dir.path(), "server", &["localhost"]);
    let tls = ServerTls::load(&server_cfg(&leaf, Some(&clients.ca_file)), "x.tls").unwrap();
    assert!(tls.requires_client_certs());
    let addr = echo_server(tls, 3).await;
    let with = |who: Option<&Leaf>| ClientTlsConfig {
        cert_file: who.map(|l| l.cert_file.clone()),
        key_file: who.map(|l| l.key_file.clone()),
        ..trusting(&servers)
    };
    let device = clients.leaf(dir.path(), "device", &["device-1"]);
    let impostor = rogue.leaf(dir.path(), "impostor", &["device-1"]);
    let ok = ClientTls::load(&with(Some(&device)), "localhost", "x").unwrap();
    assert_eq!(hello(ok, addr).await.unwrap().0, b"hello");
    for who in [None, Some(&impostor)] {
        let client = ClientTls::load(&with(who), "localhost", "x").unwrap();
        assert!(hello(client, addr).await.is_err(), "a client without a certificate from the client CA got in");
    }
}

#[tokio::test]
async fn the_pinned_client_trusts_exactly_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "servers");
    let leaf = ca.leaf(dir.path(), "server", &["device.example"]);
    let other = ca.leaf(dir.path(), "other", &["device.example"]);
    let addr = echo_server(ServerTls::load(&server_cfg(&leaf, None), "x.tls").unwrap(), 2).await;
    let pinned = pinned_client(&server_cfg(&leaf, None), "x.tls").unwrap();
    assert_eq!(hello(pinned, addr).await.unwrap().0, b"hello");
    let pinned_other = pinned_client(&server_cfg(&other, None), "x.tls").unwrap();
    assert!(hello(pinned_other, addr).await.unwrap_err().contains("other than its configured cert_file"));
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "servers");
    let leaf = ca.leaf(dir.path(), "server", &["localhost"]);
    let addr = echo_server(ServerTls::load(&server_cfg(&leaf, None), "x.tls").unwrap(), 3).await;
    let client = || ClientTls::load(&trusting(&ca), "localhost", "x").unwrap();
    let first = hello(client(), addr).await.unwrap().1;

    // A half-done rotation: a new certificate with the old key does not load.
    let next = ca.leaf(dir.path(), "next", &["localhost"]);
    std::fs::copy(&next.cert_file, &leaf.cert_file).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(hello(client(), addr).await.unwrap().1, first, "a mismatched pair must not replace the certificate");

    // The key follows: the new pair is served.
    std::fs::rename(&next.key_file, &leaf.key_file).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = hello(client(), addr).await.unwrap().1;
    assert_ne!(rotated, first);
    assert_eq!(rotated, load_certs(&next.cert_file, "x").unwrap()[0].to_vec());
}

#[test]
fn errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "servers");
    let leaf = ca.leaf(dir.path(), "server", &["localhost"]);
    let other = ca.leaf(dir.path(), "other", &["localhost"]);
    let err = |cfg: &ServerTlsConfig| ServerTls::load(cfg, "tsdb.tls").err().unwrap().to_string();

    let missing = ServerTlsConfig { cert_file: dir.path().join("nope.pem"), ..server_cfg(&leaf, None) };
    assert!(err(&missing).starts_with(&format!("tsdb.tls.cert_file {}", dir.path().join("nope.pem").display())));

    let not_pem = dir.path().join("garbage.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let e = err(&ServerTlsConfig { cert_file: not_pem.clone(), ..server_cfg(&leaf, None) });
    assert!(e.contains("garbage.pem") && e.contains("no CERTIFICATE"), "{e}");
    let e = err(&ServerTlsConfig { key_file: not_pem.clone(), ..server_cfg(&leaf, None) });
    assert!(e.contains("tsdb.tls.key_file") && e.contains("no PRIVATE KEY"), "{e}");

    let mismatched = ServerTlsConfig { key_file: other.key_file.clone(), ..server_cfg(&leaf, None) };
    let e = err(&mismatched);
    assert!(e.contains("other.key") && e.contains("does not fit"), "{e}");

    let e = err(&server_cfg(&leaf, Some(&not_pem)));
    assert!(e.contains("tsdb.tls.client_ca_file") && e.contains("garbage.pem"), "{e}");

    let half = ClientTlsConfig { cert_file: Some(leaf.cert_file.clone()), ..Default::default() };
    let e = ClientTls::load(&half, "localhost", "tsdb.forward_tls").unwrap_err().to_string();
    assert!(e.contains("tsdb.forward_tls") && e.contains("go together"), "{e}");
}

#[tokio::test]
async fn a_changed_client_ca_bundle_is_taken_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new(dir.path(), "servers");
    let old = TestCa::new(dir.path(), "old");
    let new = TestCa::new(dir.path(), "new");
    let leaf = servers.leaf(dir.path(), "server", &["localhost"]);
    let bundle = dir.path().join("bundle.pem");
    std::fs::copy(&old.ca_file, &bundle).unwrap();
    let addr = echo_server(ServerTls::load(&server_cfg(&leaf, Some(&bundle)), "x.tls").unwrap(), 3).await;
    let device = new.leaf(dir.path(), "device", &["device-1"]);
    let client = || {
        let cfg = ClientTlsConfig {
            cert_file: Some(device.cert_file.clone()),
            key_file: Some(device.key_file.clone()),
            ..trusting(&servers)
        };
        ClientTls::load(&cfg, "localhost", "x").unwrap()
    };
    assert!(hello(client(), addr).await.is_err(), "a certificate from a CA not yet in the bundle got in");
    // The bundle gains the new CA (as a CA rotation publishes its next root).
    let both =
        format!("{}{}", std::fs::read_to_string(&old.ca_file).unwrap(), std::fs::read_to_string(&new.ca_file).unwrap());
    std::fs::write(dir.path().join("bundle.tmp"), both).unwrap();
    std::fs::rename(dir.path().join("bundle.tmp"), &bundle).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hello(client(), addr).await.unwrap().0, b"hello");
}

#[test]
fn spiffe_ids_parse_by_the_specification() {
    use super::spiffe::SpiffeId;
    let id = SpiffeId::parse("spiffe://edge.example/node/sensor-01").unwrap();
    assert_eq!((id.trust_domain(), id.path()), ("edge.example", "/node/sensor-01"));
    assert_eq!(id.to_string(), "spiffe://edge.example/node/sensor-01");
    assert!(SpiffeId::parse("spiffe://edge.example").is_ok());
    for bad in [
        "https://edge.example/x",
        "SPIFFE://edge.example/x",
        "spiffe:///x",
        "spiffe://Edge.example/x",
        "spiffe://edge.example:8443/x",
        "spiffe://user@edge.example/x",
        "spiffe://edge.example/x/",
        "spiffe://edge.example//x",
        "spiffe://edge.example/./x",
        "spiffe://edge.example/../x",
        "spiffe://edge.example/x?y=1",
        "spiffe://edge.example/x#y",
        "spiffe://edge.example/x%20y",
    ] {
        assert!(SpiffeId::parse(bad).is_err(), "{bad} parsed");
    }
    let id = SpiffeId::parse("spiffe://td/ns/a/b").unwrap();
    assert!(id.matches("spiffe://td/ns/a/b") && id.matches("spiffe://td/ns/*") && id.matches("spiffe://td/ns/a/*"));
    assert!(!id.matches("spiffe://td/ns") && !id.matches("spiffe://td/n/*") && !id.matches("spiffe://td/ns/a/b/*"));
    assert!(!SpiffeId::parse("spiffe://td/nsx").unwrap().matches("spiffe://td/ns/*"));
    // The trust domain is matched whole, never as a prefix of another.
    assert!(id.matches("spiffe://td/*") && !id.matches("spiffe://t/*") && !id.matches("spiffe://tdx/*"));
    assert!(!SpiffeId::parse("spiffe://tdx/ns/a/b").unwrap().matches("spiffe://td/*"));
    assert!(!id.matches("td/ns/a/b") && !id.matches("spiffe://td/ns/a/b/") && !id.matches("*"));
    let bare = SpiffeId::parse("spiffe://td").unwrap();
    assert!(bare.matches("spiffe://td") && !bare.matches("spiffe://td/*"));
}

/// Every kind of bad SVID the X.509-SVID specification rules out is refused
/// with its own reason; the good one passes with its ID.
#[test]
fn only_a_well_formed_svid_chaining_to_its_own_trust_domain_passes() {
    use super::spiffe::SvidVerifier;
    use rcgen::{IsCa, KeyUsagePurpose, SanType, date_time_ymd};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let edge = TestCa::new(d, "edge");
    let other = TestCa::new(d, "other");
    let bundles =
        [("edge.example".to_owned(), edge.ca_file.clone()), ("other.example".to_owned(), other.ca_file.clone())];
    let verifier = SvidVerifier::load(&bundles.into_iter().collect(), "test.tls", true, provider()).unwrap();
    let check = |leaf: &Leaf| {
        let chain = load_certs(&leaf.cert_file, "t").unwrap();
        verifier.verify(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now()).map(|id| id.to_string())
    };
    let id = "spiffe://edge.example/node/1";
    assert_eq!(check(&edge.svid(d, "good", id, |_| {})).unwrap(), id);
    let good_via_intermediate = edge.intermediate(d, "edge-int", true).svid(d, "via", id, |_| {});
    assert_eq!(check(&good_via_intermediate).unwrap(), id);

    let uri = |s: &str| SanType::URI(s.try_into().unwrap());
    let cases: Vec<(&str, Leaf)> = vec![
        ("ca_leaf", edge.svid(d, "ca", id, |p| p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained))),
        ("no_basic_constraints", edge.svid(d, "nobc", id, |p| p.is_ca = IsCa::NoCa)),
        ("no_digital_signature", edge.svid(d, "nods", id, |p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment])),
        ("no_key_usage", edge.svid(d, "noku", id, |p| p.key_usages.clear())),
        ("signing_usage", edge.svid(d, "certsign", id, |p| p.key_usages.push(KeyUsagePurpose::KeyCertSign))),
        ("uri_san_count", edge.svid(d, "two", id, |p| p.subject_alt_names.push(uri("spiffe://edge.example/x")))),
        (
            "uri_san_count",
            edge.svid(d, "none", id, |p| p.subject_alt_names = vec![SanType::DnsName("a.example".try_into().unwrap())]),
        ),
        ("not_spiffe", edge.svid(d, "https", "https://edge.example/node/1", |_| {})),
        ("unknown_trust_domain", edge.svid(d, "stranger", "spiffe://stranger.example/node/1", |_| {})),
        (
            "expired",
            edge.svid(d, "old", id, |p| {
                (p.not_before, p.not_after) = (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1))
            }),
        ),
        (
            "not_yet_valid",
            edge.svid(d, "future", id, |p| {
                (p.not_before, p.not_after) = (date_time_ymd(2090, 1, 1), date_time_ymd(2091, 1, 1))
            }),
        ),
        // other.example's CA vouching for an edge.example ID.
        ("untrusted_chain", other.svid(d, "foreign", id, |_| {})),
        ("invalid_chain", edge.intermediate(d, "notca", false).svid(d, "badint", id, |_| {})),
    ];
    for (reason, leaf) in &cases {
        let e = check(leaf).expect_err(reason);
        assert_eq!(e.reason, *reason, "{}: {e}", leaf.cert_file.display());
    }
}

/// A listener with SPIFFE bundles: a good SVID talks, a foreign one and no
/// certificate at all are refused at the handshake; a rotated bundle (old
/// and new CA together, then the new alone) is taken without a restart.
#[tokio::test]
async fn a_spiffe_listener_takes_svids_of_its_trust_domains_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server_ca = TestCa::new(d, "server");
    let leaf = server_ca.leaf(d, "server", &["localhost"]);
    let (old, new) = (TestCa::new(d, "old"), TestCa::new(d, "new"));
    let bundle = d.join("bundle.pem");
    std::fs::copy(&old.ca_file, &bundle).unwrap();
    let cfg = ServerTlsConfig {
        spiffe_bundles: [("edge.example".to_owned(), bundle.clone())].into_iter().collect(),
        ..server_cfg(&leaf, None)
    };
    let addr = echo_server(ServerTls::load(&cfg, "test.tls").unwrap(), 100).await;
    let id = "spiffe://edge.example/gw";
    let client = |svid: Option<&Leaf>| {
        let cfg = ClientTlsConfig {
            cert_file: svid.map(|l| l.cert_file.clone()),
            key_file: svid.map(|l| l.key_file.clone()),
            ..trusting(&server_ca)
        };
        ClientTls::load(&cfg, "localhost", "client").unwrap()
    };
    let (old_svid, new_svid) = (old.svid(d, "o", id, |_| {}), new.svid(d, "n", id, |_| {}));
    assert_eq!(hello(client(Some(&old_svid)), addr).await.unwrap().0, b"hello");
    assert!(hello(client(None), addr).await.is_err(), "no certificate");
    assert!(hello(client(Some(&new_svid)), addr).await.is_err(), "not in the bundle yet");
    // Rotation: both CAs, then the new one alone.
    let both =
        format!("{}{}", std::fs::read_to_string(&old.ca_file).unwrap(), std::fs::read_to_string(&new.ca_file).unwrap());
    std::fs::write(&bundle, both).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(hello(client(Some(&old_svid)), addr).await.is_ok() && hello(client(Some(&new_svid)), addr).await.is_ok());
    std::fs::copy(&new.ca_file, &bundle).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(hello(client(Some(&new_svid)), addr).await.is_ok());
    assert!(hello(client(Some(&old_svid)), addr).await.is_err(), "the old CA left the bundle");
}
