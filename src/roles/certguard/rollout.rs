//! The canary rollout: a new certificate goes to the canary targets first;
//! each is reloaded and probed (a real TLS handshake against its endpoint
//! that must present the NEW leaf, valid against the trust bundle for the
//! expected name, and optionally a 2xx from an HTTP path). Only then do the
//! other targets follow, a wave at a time, each probed the same way. Any
//! failure puts every target touched back to its previous files and
//! reloads it, so a renewal either lands everywhere or nowhere. This catches
//! what renew-and-hope tools miss: the files were renewed but the server
//! still serves the old certificate.

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::ca::Issued;
use super::config::{ManagedCert, Target};
use super::install::{self, Previous};
use crate::core::httpclient::{self, Endpoint};
use crate::core::tls::{ClientTls, ClientTlsConfig};

/// What probes trust: the embedded CA's published roots, or (for ACME
/// certificates) a configured bundle or the built-in roots.
pub enum Trust {
    Roots(Vec<Vec<u8>>),
    Config(ClientTlsConfig),
}

/// How long one probe connection may take.
const PROBE_IO: Duration = Duration::from_secs(5);

/// Rolls `issued` out to every target of `spec`; on failure every target
/// touched is back on its previous certificate and the error says where it
/// failed.
pub async fn roll_out(spec: &ManagedCert, issued: &Issued, trust: &Trust) -> anyhow::Result<()> {
    let (canaries, rest): (Vec<&Target>, Vec<&Target>) = spec.targets.iter().partition(|t| t.canary);
    let mut waves: Vec<Vec<&Target>> = Vec::new();
    if !canaries.is_empty() {
        waves.push(canaries);
    }
    waves.extend(rest.chunks(spec.wave_size).map(<[&Target]>::to_vec));
    let mut touched: Vec<(&Target, Previous)> = Vec::new();
    for (n, wave) in waves.iter().enumerate() {
        let stage = if n == 0 && wave.iter().any(|t| t.canary) { "canary".to_owned() } else { format!("wave {n}") };
        if let Err(e) = deliver(wave, issued, trust, spec, &mut touched).await {
            metrics::counter!("edgebox_certguard_rollbacks_total", "cert" => spec.name.clone()).increment(1);
            for (t, previous) in touched.into_iter().rev() {
                if let Err(undo) = install::restore(t, previous).await {
                    tracing::error!(cert = %spec.name, target = %t.cert_file.display(), error = %format!("{undo:#}"), "certguard could not put a target back");
                }
            }
            return Err(e.context(format!("{stage} failed; every target is back on its previous certificate")));
        }
        tracing::info!(cert = %spec.name, stage, targets = wave.len(), "certguard rollout stage passed");
    }
    Ok(())
}

/// Writes, reloads and probes one wave.
async fn deliver<'t>(
    wave: &[&'t Target],
    issued: &Issued,
    trust: &Trust,
    spec: &ManagedCert,
    touched: &mut Vec<(&'t Target, Previous)>,
) -> anyhow::Result<()> {
    for t in wave {
        let previous = install::put(t, issued.chain_pem.clone(), issued.key_pem.clone())
            .await
            .with_context(|| format!("writing {}", t.cert_file.display()))?;
        touched.push((t, previous));
    }
    for t in wave {
        install::reload(t).await.with_context(|| format!("reloading for {}", t.cert_file.display()))?;
    }
    for t in wave {
        if let Some(addr) = &t.probe {
            probe(t, addr, spec, issued, trust).await.with_context(|| format!("probe of {addr}"))?;
        }
    }
    Ok(())
}

/// Waits (up to the target's probe timeout) for its endpoint to present
/// the new leaf, then checks the HTTP path if one is set.
async fn probe(t: &Target, addr: &str, spec: &ManagedCert, issued: &Issued, trust: &Trust) -> anyhow::Result<()> {
    let name = match &t.probe_name {
        Some(n) => n.clone(),
        None => spec
            .dns_names
            .first()
            .cloned()
            .or_else(|| spec.ip_addresses.first().map(|ip| ip.to_string()))
            .unwrap_or_default(),
    };
    let client = match trust {
        Trust::Roots(roots) => ClientTls::with_roots(roots, &name, "probe")?,
        Trust::Config(cfg) => ClientTls::load(cfg, &name, "certguard.acme")?,
    };
    let sock = addr.to_socket_addrs()?.next().with_context(|| format!("{addr} resolves to no address"))?;
    let deadline = Instant::now() + Duration::from_secs(t.probe_timeout_s);
    // Both checks pass together or are tried again until the deadline: a
    // server reloading gracefully (nginx) answers some connections from its
    // old workers, with the old certificate, for a while.
    loop {
        let c = client.clone();
        let served = tokio::task::spawn_blocking(move || c.leaf_served_at(sock, PROBE_IO)).await?;
        let why = match served {
            Ok(leaf) if leaf == issued.leaf_der => match health(t, sock, &name, &client).await {
                Ok(()) => return Ok(()),
                Err(e) => format!("{e:#}"),
            },
            Ok(_) => format!("still serves another certificate, not the new one (serial {})", issued.serial),
            Err(e) => format!("does not serve the new certificate (serial {}): {e:#}", issued.serial),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{why} (after {} s)", t.probe_timeout_s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The target's HTTP health check, when it has one: 2xx over TLS.
async fn health(t: &Target, sock: std::net::SocketAddr, name: &str, client: &ClientTls) -> anyhow::Result<()> {
    let Some(path) = t.probe_http_path.clone() else { return Ok(()) };
    let to = Endpoint { addr: sock, host: name.to_owned(), tls: Some(client.clone()) };
    let reply = tokio::task::spawn_blocking(move || httpclient::request(&to, "GET", &path, &[], b"")).await??;
    anyhow::ensure!((200..300).contains(&reply.status), "health check answered {}", reply.status);
    Ok(())
}
