//! certguard against real X.509 and real handshakes: the CA survives a
//! restart only with its key file, issued certificates verify in a TLS
//! handshake against the trust bundle, and renewal follows an injected
//! clock (issue, keep, renew at its time, reissue a deleted file, keep the
//! old files when the reload fails).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::ca::Ca;
use super::config::{CertguardConfig, KeyType, ManagedCert, Target};
use super::seal::Sealer;
use super::service::{Clock, Guard};
use crate::core::store::{CORE_SCHEMA, SchemaOwner, Store, StoreOptions};
use crate::core::tls::{ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig};

fn store(dir: &Path) -> Store {
    let schemas = [CORE_SCHEMA, SchemaOwner { name: "certguard", migrations: super::MIGRATIONS }];
    Store::open(&dir.join("s.redb"), &schemas, &StoreOptions::default()).unwrap()
}

fn spec(dir: &Path, name: &str) -> ManagedCert {
    let text = format!(
        "name = \"{name}\"\ndns_names = [\"{name}.example\"]\nip_addresses = [\"127.0.0.1\"]\n\
         spiffe_id = \"spiffe://edge.example/{name}\"\nlifetime_hours = 1.0\nrenew_at = 0.5\n\
         [[targets]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join(format!("{name}.pem")).display(),
        dir.join(format!("{name}.key")).display()
    );
    toml::from_str(&text).unwrap()
}

fn key(dir: &Path) -> Sealer {
    Sealer::open_or_create(&dir.join("k")).unwrap()
}

/// The CA of `s`, off the async runtime (the store blocks).
async fn make_ca(s: &Store, key_file: &Path, cfg: &CertguardConfig) -> Ca {
    let (s, key_file, cfg) = (s.clone(), key_file.to_owned(), cfg.clone());
    tokio::task::spawn_blocking(move || {
        Ca::load_or_create(&s, &Sealer::open_or_create(&key_file).unwrap(), &cfg, SystemTime::now())
    })
    .await
    .unwrap()
    .unwrap()
}

/// A store, a config managing one certificate ("api") and its guard.
async fn one_cert(dir: &Path, clock: Clock) -> (Store, CertguardConfig, Guard) {
    let s = store(dir);
    let mut cfg = CertguardConfig::default();
    cfg.certs.push(spec(dir, "api"));
    let ca = make_ca(&s, &dir.join("k"), &cfg).await;
    let guard = Guard::new(cfg.clone(), ca, key(dir), s.clone(), clock);
    (s, cfg, guard)
}

/// A TLS server on the target's files (re-read within a second of a
/// change, as edgebox's listeners do), serving handshakes until the test
/// ends; its address.
async fn tls_server(target: &Target) -> std::net::SocketAddr {
    let cfg = ServerTlsConfig {
        cert_file: target.cert_file.clone(),
        key_file: target.key_file.clone(),
        ..Default::default()
    };
    let tls = ServerTls::load(&cfg, "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = tls.accept(tcp).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// The leaf served at `addr`, checked against `bundle` for `host`.
async fn handshake(addr: std::net::SocketAddr, bundle: &Path, host: &str) -> Result<Vec<u8>, String> {
    let client =
        ClientTls::load(&ClientTlsConfig { ca_file: Some(bundle.to_owned()), ..Default::default() }, host, "t")
            .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        client.leaf_served_at(addr, Duration::from_secs(5)).map_err(|e| format!("{e:#}"))
    })
    .await
    .unwrap()
}

#[test]
fn the_ca_is_made_once_and_opens_only_with_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let cfg = CertguardConfig::default();
    let sealer = Sealer::open_or_create(&dir.path().join("k")).unwrap();
    let first = Ca::load_or_create(&s, &sealer, &cfg, SystemTime::now()).unwrap();
    let again = Ca::load_or_create(&s, &sealer, &cfg, SystemTime::now()).unwrap();
    assert_eq!(first.roots(), again.roots());
    let stranger = Sealer::open_or_create(&dir.path().join("other")).unwrap();
    let e = Ca::load_or_create(&s, &stranger, &cfg, SystemTime::now()).err().unwrap();
    assert!(format!("{e:#}").contains("does not open with this key file"), "{e:#}");
}

#[tokio::test]
async fn issued_certificates_verify_against_the_trust_bundle_by_every_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let ca = make_ca(&s, &dir.path().join("k"), &CertguardConfig::default()).await;
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, ca.bundle_pem()).unwrap();
    for key_type in [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa2048] {
        let cert = ManagedCert { key_type, ..spec(dir.path(), "web") };
        let issued = ca.issue(&cert, SystemTime::now()).unwrap();
        std::fs::write(&cert.targets[0].cert_file, &issued.chain_pem).unwrap();
        std::fs::write(&cert.targets[0].key_file, &issued.key_pem).unwrap();
        assert!(issued.chain_pem.matches("BEGIN CERTIFICATE").count() == 2, "leaf and intermediate");
        let addr = tls_server(&cert.targets[0]).await;
        for host in ["web.example", "127.0.0.1"] {
            let served = handshake(addr, &bundle, host).await.unwrap_or_else(|e| panic!("{key_type:?} {host}: {e}"));
            assert_eq!(served, issued.leaf_der);
        }
        let e = handshake(addr, &bundle, "other.example").await.unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        // The SPIFFE ID is a URI SAN; the leaf is not a CA.
        let text = String::from_utf8_lossy(&issued.leaf_der).into_owned();
        assert!(text.contains("spiffe://edge.example/web"));
    }
}

fn fake_clock(start: SystemTime) -> (Clock, Arc<Mutex<SystemTime>>) {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    (Arc::new(move || *read.lock().unwrap()), now)
}

fn serial(detail: &serde_json::Value) -> String {
    detail["certificates"][0]["serial"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn renewal_follows_the_clock_and_a_failed_reload_keeps_the_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let (clock, now) = fake_clock(t0);
    let (s, cfg, guard) = one_cert(dir.path(), clock).await;

    let first = serial(&guard.tick().await.unwrap());
    assert!(!first.is_empty());
    let installed = std::fs::read(&cfg.certs[0].targets[0].cert_file).unwrap();
    // Within its first half-life (renew_at 0.5 ± 5% of an hour): kept.
    *now.lock().unwrap() = t0 + Duration::from_secs(1500);
    assert_eq!(serial(&guard.tick().await.unwrap()), first);
    assert_eq!(std::fs::read(&cfg.certs[0].targets[0].cert_file).unwrap(), installed);
    // Past it: renewed.
    *now.lock().unwrap() = t0 + Duration::from_secs(2000);
    let second = serial(&guard.tick().await.unwrap());
    assert_ne!(second, first);
    // A deleted file is reissued at once.
    std::fs::remove_file(&cfg.certs[0].targets[0].cert_file).unwrap();
    let third = serial(&guard.tick().await.unwrap());
    assert_ne!(third, second);
    assert!(cfg.certs[0].targets[0].cert_file.exists());

    // A reload that fails: the files are put back, the failure recorded,
    // and the next try waits for its backoff.
    let before = std::fs::read(&cfg.certs[0].targets[0].cert_file).unwrap();
    let mut failing = cfg.clone();
    failing.certs[0].targets[0].reload_command =
        vec!["sh".into(), "-c".into(), "echo cannot reload >&2; exit 1".into()];
    failing.certs[0].dns_names.push("new-name.example".into());
    let (clock, _) = fake_clock(t0 + Duration::from_secs(2100));
    let ca = make_ca(&s, &dir.path().join("k"), &failing).await;
    let guard = Guard::new(failing, ca, key(dir.path()), s.clone(), clock);
    let detail = guard.tick().await.unwrap();
    let c = &detail["certificates"][0];
    assert_eq!(c["serial"].as_str(), Some(third.as_str()), "the record still names the certificate in service");
    assert_eq!(c["failures"], 1);
    assert!(c["last_error"].as_str().unwrap().contains("cannot reload"), "{c}");
    assert_eq!(std::fs::read(&cfg.certs[0].targets[0].cert_file).unwrap(), before, "the old files are back");
    // Within the backoff nothing is tried again.
    assert_eq!(guard.tick().await.unwrap()["certificates"][0]["failures"], 1);
}

/// Two targets behind real TLS servers: a canary whose server picks up new
/// files, and one whose server never does (its reload "succeeds" but does
/// nothing). The rollout must notice, and put both back.
#[tokio::test]
async fn a_server_that_keeps_the_old_certificate_is_caught_and_every_target_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut cfg = CertguardConfig::default();
    let mut web = spec(dir.path(), "web");
    let stuck = Target {
        cert_file: dir.path().join("stuck.pem"),
        key_file: dir.path().join("stuck.key"),
        ..web.targets[0].clone()
    };
    web.targets.push(stuck);
    web.wave_size = 1;
    cfg.certs.push(web);
    let ca = make_ca(&s, &dir.path().join("k"), &cfg).await;
    let guard = Guard::new(cfg.clone(), ca, key(dir.path()), s.clone(), Arc::new(SystemTime::now));
    let first = serial(&guard.tick().await.unwrap());
    let live = tls_server(&cfg.certs[0].targets[0]).await;
    // The stuck server serves a copy of the first certificate's files, which
    // nothing ever updates.
    let frozen = Target {
        cert_file: dir.path().join("frozen.pem"),
        key_file: dir.path().join("frozen.key"),
        ..cfg.certs[0].targets[1].clone()
    };
    std::fs::copy(&cfg.certs[0].targets[1].cert_file, &frozen.cert_file).unwrap();
    std::fs::copy(&cfg.certs[0].targets[1].key_file, &frozen.key_file).unwrap();
    let stuck_addr = tls_server(&frozen).await;

    let mut probed = cfg.clone();
    let targets = &mut probed.certs[0].targets;
    targets[0].canary = true;
    targets[0].probe = Some(live.to_string());
    targets[0].probe_timeout_s = 5;
    targets[1].probe = Some(stuck_addr.to_string());
    targets[1].probe_timeout_s = 2;
    let before: Vec<Vec<u8>> = targets.iter().map(|t| std::fs::read(&t.cert_file).unwrap()).collect();
    // A new name makes it due now (the probes check validity on the real
    // clock, so the test's clock stays real here).
    probed.certs[0].dns_names.push("web2.example".into());
    let ca = make_ca(&s, &dir.path().join("k"), &probed).await;
    let guard = Guard::new(probed.clone(), ca, key(dir.path()), s.clone(), Arc::new(SystemTime::now));
    let detail = guard.tick().await.unwrap();
    let c = &detail["certificates"][0];
    let error = c["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("wave 1 failed") && error.contains("still serves another certificate, not the new one"),
        "{c}"
    );
    assert_eq!(c["serial"].as_str(), Some(first.as_str()));
    let after: Vec<Vec<u8>> = probed.certs[0].targets.iter().map(|t| std::fs::read(&t.cert_file).unwrap()).collect();
    assert_eq!(after, before, "both targets are back on the first certificate, the canary included");
}

#[tokio::test]
async fn renew_and_rollback_commands_put_the_asked_certificate_in_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, cfg, guard) = one_cert(dir.path(), Arc::new(SystemTime::now)).await;
    let ask = |op: &str| serde_json::json!({ "op": op, "name": "api" });
    let file = || std::fs::read(&cfg.certs[0].targets[0].cert_file).unwrap();

    let e = guard.command(ask("rollback")).await.unwrap_err();
    assert!(e.contains("no previous certificate"), "{e}");
    let first = guard.command(ask("renew")).await.unwrap()["serial"].as_str().unwrap().to_owned();
    let first_file = file();
    let second = guard.command(ask("renew")).await.unwrap()["serial"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // Back to the first, bit for bit; and forward again.
    let back = guard.command(ask("rollback")).await.unwrap();
    assert_eq!(back["serial"].as_str(), Some(first.as_str()));
    assert_eq!(file(), first_file);
    let detail = guard.tick().await.unwrap();
    assert_eq!(serial(&detail), first, "a rolled-back certificate is not reissued at once");
    let again = guard.command(ask("rollback")).await.unwrap();
    assert_eq!(again["serial"].as_str(), Some(second.as_str()));
    assert!(guard.command(serde_json::json!({ "op": "renew", "name": "nope" })).await.unwrap_err().contains("nope"));

    // A one-off certificate: written to its files, verifies, not managed.
    let mut one_off = spec(dir.path(), "client");
    one_off.dns_names = vec!["client.example".into()];
    let answer = guard.command(serde_json::json!({ "op": "issue", "cert": one_off })).await.unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, guard.ca.read().unwrap().bundle_pem()).unwrap();
    let addr = tls_server(&one_off.targets[0]).await;
    assert!(handshake(addr, &bundle, "client.example").await.is_ok(), "{answer}");
    let bad = serde_json::json!({ "op": "issue", "cert": { "name": "x", "targets": [] } });
    assert!(guard.command(bad).await.unwrap_err().contains("needs dns_names"));
    assert!(
        guard.command(serde_json::json!({ "op": "explode", "name": "api" })).await.unwrap_err().contains("unknown")
    );
}

#[test]
fn the_benchmark_rotates_through_real_probes() {
    assert!(super::bench::run(3).unwrap() > 0.0);
}

/// SPIRE-style CA rotation on an injected clock: the next root is published
/// at half the CA's life without signing, signs from three quarters on
/// (managed certificates reissued by it), and the old root leaves the
/// bundle once its last leaf expired; the state survives a restart.
#[tokio::test]
async fn the_ca_rotates_with_the_next_root_published_first_and_the_old_kept_until_its_leaves_expire() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut cfg = CertguardConfig { intermediate_days: 4, ..Default::default() };
    cfg.trust_bundle_file = Some(dir.path().join("bundle.pem"));
    let mut api = spec(dir.path(), "api");
    api.lifetime_hours = 24.0;
    cfg.certs.push(api);
    cfg.validate().unwrap();
    let t0 = SystemTime::now();
    let ca = make_ca(&s, &dir.path().join("k"), &cfg).await;
    let (clock, now) = fake_clock(t0);
    let guard = Guard::new(cfg.clone(), ca, key(dir.path()), s.clone(), clock);
    let roots = || std::fs::read_to_string(dir.path().join("bundle.pem")).unwrap().matches("BEGIN CERTIFICATE").count();
    let generation = |d: &serde_json::Value| {
        let rec = guard.ca.read().unwrap();
        (rec.current.number, d["certificates"][0]["serial"].as_str().unwrap().to_owned())
    };
    guard.write_trust_bundle().unwrap();
    let d = guard.tick().await.unwrap();
    assert_eq!((generation(&d).0, roots()), (1, 1));

    let day = Duration::from_secs(86_400);
    *now.lock().unwrap() = t0 + day * 2;
    let d = guard.tick().await.unwrap();
    assert_eq!((generation(&d).0, roots()), (1, 2), "the next root is published before it signs");

    *now.lock().unwrap() = t0 + day * 3;
    let before = std::fs::read_to_string(&cfg.certs[0].targets[0].cert_file).unwrap();
    let d = guard.tick().await.unwrap();
    assert_eq!((generation(&d).0, roots()), (2, 2), "the new generation signs; the old root stays published");
    let after = std::fs::read_to_string(&cfg.certs[0].targets[0].cert_file).unwrap();
    assert_ne!(before, after, "managed certificates are reissued by the new CA");
    let rec = guard.records().await.unwrap().remove(0).1.unwrap();
    assert_eq!(rec.generation, 2);

    *now.lock().unwrap() = t0 + day * 4 + Duration::from_secs(60);
    let d = guard.tick().await.unwrap();
    // Generation 1's root is gone; generation 3 is published as the next.
    assert_eq!((generation(&d).0, roots()), (2, 2), "the old root leaves once its last leaf expired");
    assert!(guard.ca.read().unwrap().retired.is_empty());

    let again = make_ca(&s, &dir.path().join("k"), &cfg).await;
    let next = again.next.as_ref().map(|g| g.number);
    assert_eq!((again.current.number, next, again.retired.len()), (2, Some(3), 0));

    // A device off for longer than the CA lives: a fresh generation at once.
    *now.lock().unwrap() = t0 + day * 30;
    let d = guard.tick().await.unwrap();
    assert_eq!(generation(&d).0, 4, "generation 3 expired on the shelf too; 4 took over");
}

/// A target that cannot be written fails the rollout with its path named;
/// the target written before it in the same wave gets its old files back.
#[tokio::test]
async fn an_unwritable_target_is_named_and_nothing_is_left_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, cfg, guard) = one_cert(dir.path(), Arc::new(SystemTime::now)).await;
    guard.tick().await.unwrap();
    let before = std::fs::read(&cfg.certs[0].targets[0].cert_file).unwrap();

    let mut more = cfg.clone();
    let broken = Target {
        cert_file: dir.path().join("missing-dir/api.pem"),
        key_file: dir.path().join("missing-dir/api.key"),
        ..more.certs[0].targets[0].clone()
    };
    more.certs[0].targets.push(broken);
    let guard = guard.reconfigured(more.clone());
    let detail = guard.tick().await.unwrap();
    let error = detail["certificates"][0]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("missing-dir/api"), "{error}");
    assert_eq!(std::fs::read(&more.certs[0].targets[0].cert_file).unwrap(), before, "the first target is back");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".certguard-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A certificate that never got issued waits out its backoff like any other.
#[tokio::test]
async fn a_first_issuance_that_fails_waits_for_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut cfg = CertguardConfig::default();
    let mut api = spec(dir.path(), "api");
    api.targets[0].cert_file = dir.path().join("missing-dir/api.pem");
    api.targets[0].key_file = dir.path().join("missing-dir/api.key");
    cfg.certs.push(api);
    let ca = make_ca(&s, &dir.path().join("k"), &cfg).await;
    let (clock, now) = fake_clock(SystemTime::now());
    let guard = Guard::new(cfg, ca, key(dir.path()), s.clone(), clock);
    let failures = |d: serde_json::Value| d["certificates"][0]["failures"].as_u64().unwrap();
    assert_eq!(failures(guard.tick().await.unwrap()), 1);
    assert_eq!(failures(guard.tick().await.unwrap()), 1, "retried before its backoff");
    let later = *now.lock().unwrap() + Duration::from_secs(30);
    *now.lock().unwrap() = later;
    assert_eq!(failures(guard.tick().await.unwrap()), 2);
}

#[test]
fn an_acme_renewal_window_sets_the_renewal_time() {
    use super::acme::{RenewalHint, hinted_renewal};
    let hint = |start, end| RenewalHint { start, end, ask_again_in: Duration::from_secs(21_600) };
    let (not_before, not_after) = (0, 90 * 86_400);
    // A window ahead: a point inside it, by the jitter.
    let ahead = hint(60 * 86_400, 62 * 86_400);
    assert_eq!(hinted_renewal(&ahead, 1000, 0.0, not_before, not_after), 60 * 86_400);
    assert_eq!(hinted_renewal(&ahead, 1000, 0.5, not_before, not_after), 61 * 86_400);
    // A window already open (the CA revokes early, say): at once.
    assert_eq!(hinted_renewal(&hint(500, 900), 1000, 0.7, not_before, not_after), 1000);
    // A window past expiry is pulled in before it.
    let late = hinted_renewal(&hint(not_after, not_after + 86_400), 1000, 0.3, not_before, not_after);
    assert!(late < not_after && late >= not_after - 2 * 86_400, "{late}");
}

#[tokio::test]
async fn the_ari_id_names_the_issuer_key_and_serial() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let ca = make_ca(&s, &dir.path().join("k"), &CertguardConfig::default()).await;
    let issued = ca.issue(&spec(dir.path(), "web"), SystemTime::now()).unwrap();
    let id = super::acme::ari_id(&issued.leaf_der).expect("our leaves carry an authority key identifier");
    let (aki, serial) = id.split_once('.').unwrap();
    use base64::Engine;
    let serial = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(serial).unwrap();
    let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(hex, issued.serial);
    assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(aki).unwrap().len(), 20);
}
