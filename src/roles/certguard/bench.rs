//! `edgebox certguard bench`: how long the embedded CA takes to rotate N
//! certificates through the full canary rollout on this machine. Each
//! certificate has one target served by its own TLS listener (edgebox's,
//! which re-reads its files when they change); a pass issues, writes
//! atomically (fsync), and probes every one with a real handshake that must
//! present the new leaf.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::ca::Ca;
use super::config::{CertguardConfig, ManagedCert, Target};
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

fn spec(dir: &std::path::Path, i: usize, lifetime_hours: f64) -> ManagedCert {
    ManagedCert {
        name: format!("c{i}"),
        dns_names: vec![format!("c{i}.bench.example")],
        ip_addresses: vec![],
        spiffe_id: None,
        key_type: Default::default(),
        issuer: Default::default(),
        lifetime_hours,
        renew_at: 0.667,
        wave_size: 5,
        targets: vec![Target {
            cert_file: dir.join(format!("c{i}.pem")),
            key_file: dir.join(format!("c{i}.key")),
            cert_mode: "0644".into(),
            reload_pid_file: None,
            reload_signal: "HUP".into(),
            reload_command: vec![],
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
            ServerTlsConfig { cert_file: t.cert_file.clone(), key_file: t.key_file.clone(), client_ca_file: None };
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
