//! `edgebox certguard bench`: how long the embedded CA takes to rotate N
//! certificates through the full canary rollout on this machine (each
//! certificate has one target served by its own TLS listener, edgebox's,
//! which re-reads its files when they change; a pass issues, writes
//! atomically with fsync, and probes every one with a real handshake that
//! must present the new leaf); and, with `--acme`, the time to issue and
//! install one certificate from a real Pebble, side by side with certbot.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::ca::Ca;
use anyhow::Context;

use super::config::{AcmeConfig, CertguardConfig, IssuerKind, ManagedCert, Target};
use super::seal::Sealer;
use super::service::Guard;
use crate::core::store::{CORE_SCHEMA, SchemaOwner, Store, StoreOptions};
use crate::core::tls::{ServerTls, ServerTlsConfig};

/// Runs the benchmark for `n` certificates; prints and returns the seconds
/// the rotation pass took.
pub fn run(n: usize) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(rotate(n))
}

/// Issues one certificate from a real Pebble with certguard, then the same
/// with certbot (standalone http-01), in one run; prints both wall times.
pub fn acme_vs_certbot() -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let http01 = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let pebble = super::pebble::Pebble::start(dir.path(), http01, tls_port, None)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let ours = runtime.block_on(acme_once(dir.path(), &pebble, http01))?;
    let d = dir.path();
    let started = Instant::now();
    let out = std::process::Command::new("certbot")
        .args(["certonly", "--standalone", "--non-interactive", "--agree-tos", "-m", "ops@example.com"])
        .args(["--server", &pebble.directory, "-d", "certbot.bench.example"])
        .args(["--http-01-port", &http01.to_string(), "--http-01-address", "127.0.0.1"])
        .arg("--config-dir")
        .arg(d.join("certbot/config"))
        .arg("--work-dir")
        .arg(d.join("certbot/work"))
        .arg("--logs-dir")
        .arg(d.join("certbot/logs"))
        .env("REQUESTS_CA_BUNDLE", &pebble.https_ca)
        .output()
        .context("certbot is not installed (Debian package certbot)")?;
    anyhow::ensure!(out.status.success(), "certbot failed: {}", String::from_utf8_lossy(&out.stderr));
    let certbot = started.elapsed().as_secs_f64();
    println!("issue and install one certificate from Pebble (http-01, same machine, same run):");
    println!(
        "  certguard {:.0} ms, certbot 2.1 {:.0} ms: certguard / certbot {:.2}x",
        ours * 1e3,
        certbot * 1e3,
        ours / certbot
    );
    Ok((ours, certbot))
}

/// One ACME issuance through certguard's own path (account, order, http-01
/// on its listener, CSR, install).
async fn acme_once(dir: &std::path::Path, pebble: &super::pebble::Pebble, http01: u16) -> anyhow::Result<f64> {
    let schemas = [CORE_SCHEMA, SchemaOwner { name: "certguard", migrations: super::MIGRATIONS }];
    let store = Store::open(&dir.join("acme.redb"), &schemas, &StoreOptions::default())?;
    let acme = AcmeConfig {
        directory_url: pebble.directory.clone(),
        contact: vec!["ops@example.com".into()],
        server_ca_file: Some(pebble.https_ca.clone()),
        http01_listen: std::net::SocketAddr::from(([127, 0, 0, 1], http01)),
        probe_ca_file: Some(pebble.root.clone()),
        challenge: Default::default(),
        tls_alpn01_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        dns01_hook: vec![],
        dns01_hook_timeout_s: 60,
    };
    let mut cert = spec(dir, 0, 24.0);
    cert.issuer = IssuerKind::Acme;
    cert.targets[0].canary = false;
    let cfg = CertguardConfig { acme: Some(acme), certs: vec![cert], ..Default::default() };
    let (s, c, kek) = (store.clone(), cfg.clone(), dir.join("kek"));
    let ca = tokio::task::spawn_blocking(move || {
        Ca::load_or_create(&s, &Sealer::open_or_create(&kek)?, &c, SystemTime::now())
    })
    .await??;
    let guard = Guard::new(cfg, ca, Sealer::open_or_create(&dir.join("kek"))?, store, Arc::new(SystemTime::now));
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", http01)).await?;
    let tokens = guard.acme.as_ref().map(|a| a.tokens.clone()).unwrap_or_default();
    let server = tokio::spawn(super::acme::serve_http01(listener, tokens, stop.clone()));
    let started = Instant::now();
    check(&guard.tick().await?)?;
    let took = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    Ok(took)
}

fn spec(dir: &std::path::Path, i: usize, lifetime_hours: f64) -> ManagedCert {
    ManagedCert {
        name: format!("c{i}"),
        dns_names: vec![format!("c{i}.bench.example")],
        ip_addresses: vec![],
        spiffe_id: None,
        key_type: Default::default(),
        issuer: Default::default(),
        lifetime_hours,
        renew_at: None,
        wave_size: 5,
        targets: vec![Target {
            cert_file: dir.join(format!("c{i}.pem")),
            key_file: dir.join(format!("c{i}.key")),
            cert_mode: "0644".into(),
            owner: None,
            reload_pid_file: None,
            reload_signal: "HUP".into(),
            reload_command: vec![],
            reload_url: None,
            reload_timeout_s: 30,
            probe: None,
            probe_name: None,
            probe_http_path: None,
            probe_timeout_s: 10,
            canary: true,
        }],
    }
}

async fn rotate(n: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let schemas = [CORE_SCHEMA, SchemaOwner { name: "certguard", migrations: super::MIGRATIONS }];
    let store = Store::open(&dir.path().join("bench.redb"), &schemas, &StoreOptions::default())?;
    let mut cfg = CertguardConfig { certs: (0..n).map(|i| spec(dir.path(), i, 24.0)).collect(), ..Default::default() };
    let kek = dir.path().join("kek");
    let (s, c, key) = (store.clone(), cfg.clone(), kek.clone());
    let ca = tokio::task::spawn_blocking(move || {
        Ca::load_or_create(&s, &Sealer::open_or_create(&key)?, &c, SystemTime::now())
    })
    .await??;
    let clock = Arc::new(SystemTime::now);

    eprintln!("certguard bench: issuing {n} certificates (no probes yet) …");
    let started = Instant::now();
    let guard = Guard::new(cfg.clone(), ca, Sealer::open_or_create(&kek)?, store, clock);
    check(&guard.tick().await?)?;
    let first = started.elapsed().as_secs_f64();

    eprintln!("certguard bench: starting {n} TLS listeners on their files …");
    for c in cfg.certs.iter_mut() {
        let t = &mut c.targets[0];
        let tls =
            ServerTlsConfig { cert_file: t.cert_file.clone(), key_file: t.key_file.clone(), ..Default::default() };
        let addr = serve(ServerTls::load(&tls, "bench")?).await?;
        t.probe = Some(addr.to_string());
        // A new lifetime makes every certificate due on the next pass.
        c.lifetime_hours = 25.0;
    }
    let guard = guard.reconfigured(cfg);

    eprintln!("certguard bench: rotating {n} certificates, each probed …");
    let started = Instant::now();
    check(&guard.tick().await?)?;
    let rotation = started.elapsed().as_secs_f64();
    println!("first issuance of {n} certificates (issue, atomic write with fsync): {first:.2} s");
    println!(
        "rotation of {n} certificates through the canary rollout (issue, write, probe by handshake): {rotation:.2} s \
         ({:.1} ms each; goal for 1000: < 10 s)",
        rotation * 1000.0 / n.max(1) as f64
    );
    Ok(rotation)
}

/// Fails when any certificate's pass failed.
fn check(detail: &serde_json::Value) -> anyhow::Result<()> {
    for c in detail["certificates"].as_array().into_iter().flatten() {
        if let Some(e) = c["last_error"].as_str() {
            anyhow::bail!("{}: {e}", c["name"]);
        }
    }
    Ok(())
}

/// Serves TLS handshakes on a free loopback port until the process ends.
async fn serve(tls: ServerTls) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = tls.accept(tcp).await {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
                }
            });
        }
    });
    Ok(addr)
}
