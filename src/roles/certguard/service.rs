//! Keeping managed certificates current: one pass (`tick`) finds what is
//! due (never issued, its files missing or replaced, its names changed, or
//! past its renewal time), issues, installs, reloads and records it; a
//! failure is retried with capped exponential backoff and never passes
//! silently (metrics, log warnings as expiry nears). The clock is passed in,
//! so renewal timing is tested without waiting.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::TableDefinition;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::acme::{Acme, Tokens};
use super::ca::{Ca, Issued, save_state};
use super::config::{CertguardConfig, IssuerKind, ManagedCert, Target};
use super::history::{self, Kept};
use super::rollout::Trust;
use super::seal::Sealer;
use super::{install, rollout};
use crate::core::store::{Durability, Store};
use crate::core::tls::ClientTlsConfig;

/// `certguard.certs`: name → Record as JSON.
pub const CERTS_TABLE: TableDefinition<&str, &str> = TableDefinition::new("certguard.certs");

/// A clock; the role uses the system's, tests their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Rollouts one pass runs at once.
const PARALLEL: usize = 64;

/// Longest wait between retries of a failing certificate.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What certguard knows of one managed certificate, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Serial of the certificate in service (hex), if any.
    pub serial: Option<String>,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    /// When to renew, Unix seconds.
    pub renew_at: u64,
    /// SHA-256 of the leaf, hex: the installed file must still hold it.
    pub leaf_sha256: String,
    /// The names and key the certificate was issued for.
    pub issued_for: String,
    /// Last failure, if the last attempt failed, and when to try again.
    pub last_error: Option<String>,
    pub failures: u32,
    pub retry_at: u64,
    /// Unix seconds of the last successful issuance.
    pub rotated_at: u64,
    /// The CA generation that signed it.
    #[serde(default)]
    pub generation: u32,
    /// ACME certificates at a server offering renewal information: the
    /// certificate's ARI id, and when to ask for its window again (Unix s).
    #[serde(default)]
    pub ari_id: Option<String>,
    #[serde(default)]
    pub ari_next: u64,
}

/// Why a certificate is (re)issued now, or None.
fn due(spec: &ManagedCert, rec: Option<&Record>, now: u64, generation: u32) -> Option<&'static str> {
    if rec.is_some_and(|r| r.failures > 0 && now < r.retry_at) {
        return None;
    }
    let Some(rec) = rec.filter(|r| r.serial.is_some()) else { return Some("never issued") };
    if rec.issued_for != issued_for(spec) {
        return Some("its names or key changed");
    }
    if rec.generation != generation {
        return Some("the CA rotated");
    }
    if spec.targets.iter().any(|t| installed_sha256(t).as_deref() != Some(rec.leaf_sha256.as_str())) {
        return Some("a target's file is missing or holds another certificate");
    }
    (now >= rec.renew_at).then_some("renewal time")
}

/// The part of the config a certificate is issued for.
fn issued_for(spec: &ManagedCert) -> String {
    serde_json::json!([spec.dns_names, spec.ip_addresses, spec.spiffe_id, spec.key_type, spec.lifetime_hours])
        .to_string()
}

/// SHA-256 of the first certificate in a target's cert file.
fn installed_sha256(target: &Target) -> Option<String> {
    let pem = std::fs::read(&target.cert_file).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    Some(sha256_hex(&leaf))
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// When to renew: `renewal_fraction` of the lifetime (from issuance, not from the
/// backdated start of validity), moved up to 5% of the lifetime either way
/// so a fleet issued together does not renew together.
fn renewal_time(spec: &ManagedCert, issued: &Issued, jitter: f64) -> u64 {
    let (from, to) = (unix(issued.issued_at), unix(issued.not_after));
    let life = to.saturating_sub(from) as f64;
    let at = spec.renewal_fraction() + 0.05 * (jitter * 2.0 - 1.0);
    from + (life * at.clamp(0.05, 0.98)) as u64
}

/// A number in [0, 1) from a certificate's bytes (its random serial and
/// key make it differ per issuance): the renewal jitter.
fn unit_from(der: &[u8]) -> f64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let n = u32::from_be_bytes(digest.as_ref()[..4].try_into().unwrap_or([0; 4]));
    f64::from(n) / (f64::from(u32::MAX) + 1.0)
}

/// The role's state between passes.
pub struct Guard {
    pub cfg: CertguardConfig,
    pub ca: RwLock<Ca>,
    /// The ACME source, when the config has one.
    pub acme: Option<Acme>,
    pub store: Store,
    pub clock: Clock,
    sealer: Sealer,
}

impl Guard {
    pub fn new(cfg: CertguardConfig, ca: Ca, sealer: Sealer, store: Store, clock: Clock) -> Guard {
        let acme = cfg.acme.clone().map(|a| Acme::new(a, Tokens::default()));
        Guard { cfg, ca: RwLock::new(ca), acme, store, clock, sealer }
    }

    /// The same CA and store with another config.
    pub fn reconfigured(self, cfg: CertguardConfig) -> Guard {
        // The http-01 listener is bound at start: ACME added or removed by a
        // reload waits for the next start; a changed section is taken.
        let acme = match (self.acme, &cfg.acme) {
            (Some(old), Some(new)) if old.cfg == *new => Some(old),
            (Some(old), Some(new)) => Some(Acme::new(new.clone(), old.tokens)),
            _ => None,
        };
        Guard { cfg, acme, ..self }
    }

    /// Issues from the source `spec` names.
    async fn issue(&self, spec: &ManagedCert, replaces: Option<&str>) -> anyhow::Result<(Issued, Trust)> {
        match spec.issuer {
            IssuerKind::Ca => {
                let issued = self.ca.read().unwrap_or_else(|p| p.into_inner()).issue(spec, (self.clock)())?;
                Ok((issued, Trust::Roots(self.roots())))
            }
            IssuerKind::Acme => {
                let acme = self.acme.as_ref().ok_or_else(|| anyhow::anyhow!("no [certguard.acme] section"))?;
                let issued = acme.issue(spec, replaces, &self.store, &self.sealer).await?;
                let trust = ClientTlsConfig { ca_file: acme.cfg.probe_ca_file.clone(), ..Default::default() };
                Ok((issued, Trust::Config(trust)))
            }
        }
    }

    /// Records of every managed certificate, by name.
    pub async fn records(&self) -> anyhow::Result<Vec<(String, Option<Record>)>> {
        let names: Vec<String> = self.cfg.certs.iter().map(|c| c.name.clone()).collect();
        self.store
            .read(move |txn| {
                let Ok(t) = txn.open_table(CERTS_TABLE) else {
                    return Ok(names.into_iter().map(|n| (n, None)).collect());
                };
                names
                    .into_iter()
                    .map(|n| {
                        let rec = t.get(n.as_str())?.map(|v| serde_json::from_str::<Record>(v.value())).transpose()?;
                        Ok((n, rec))
                    })
                    .collect()
            })
            .await
    }

    async fn save(&self, name: &str, rec: &Record) -> anyhow::Result<()> {
        let (name, json) = (name.to_owned(), serde_json::to_string(rec)?);
        self.store
            .write(Durability::Immediate, move |txn| {
                txn.open_table(CERTS_TABLE)?.insert(name.as_str(), json.as_str())?;
                Ok(())
            })
            .await
    }

    /// One pass over every managed certificate, `PARALLEL` rollouts at a
    /// time; returns the status detail.
    pub async fn tick(&self) -> anyhow::Result<serde_json::Value> {
        self.maintain_ca().await?;
        let records = self.records().await?;
        metrics::gauge!("edgebox_certguard_managed_certificates").set(self.cfg.certs.len() as f64);
        let now = unix((self.clock)());
        let mut done: Vec<(usize, Record)> = Vec::with_capacity(records.len());
        let work: Vec<(usize, Option<Record>)> = records.into_iter().map(|(_, r)| r).enumerate().collect();
        for batch in work.chunks(PARALLEL) {
            let passes = batch.iter().map(|(i, rec)| self.pass(*i, rec.clone(), now));
            for result in futures_util::future::join_all(passes).await {
                done.push(result?);
            }
        }
        let detail: Vec<serde_json::Value> = done
            .iter()
            .map(|(i, rec)| {
                let spec = &self.cfg.certs[*i];
                report(spec, rec, now);
                serde_json::json!({
                    "name": spec.name, "serial": rec.serial, "not_after": rec.not_after, "renew_at": rec.renew_at,
                    "rotated_at": rec.rotated_at, "failures": rec.failures, "last_error": rec.last_error,
                })
            })
            .collect();
        Ok(serde_json::json!({ "certificates": detail }))
    }

    /// Moves the CA along its rotation schedule; stores it and rewrites the
    /// trust bundle when anything changed.
    async fn maintain_ca(&self) -> anyhow::Result<()> {
        let max_leaf = self.cfg.certs.iter().map(|c| (c.lifetime_hours * 3600.0) as u64).max().unwrap_or(0);
        let (changed, state) = {
            let mut ca = self.ca.write().unwrap_or_else(|p| p.into_inner());
            let changed = ca.maintain(&self.sealer, &self.cfg, (self.clock)(), max_leaf)?;
            (changed, ca.state()?)
        };
        if let Some(what) = changed {
            self.store.write(Durability::Immediate, move |txn| save_state(txn, &state)).await?;
            self.write_trust_bundle()?;
            let generation = self.generation();
            tracing::info!(generation, "certguard CA rotation: {what}");
            metrics::counter!("edgebox_certguard_ca_changes_total").increment(1);
        }
        metrics::gauge!("edgebox_certguard_ca_generation").set(f64::from(self.generation()));
        Ok(())
    }

    /// The number of the CA generation that signs now.
    fn generation(&self) -> u32 {
        self.ca.read().unwrap_or_else(|p| p.into_inner()).current.number
    }

    /// Every root a probe trusts: the bundle's.
    fn roots(&self) -> Vec<Vec<u8>> {
        self.ca.read().unwrap_or_else(|p| p.into_inner()).roots()
    }

    /// Rotates certificate `i` if it is due.
    async fn pass(&self, i: usize, rec: Option<Record>, now: u64) -> anyhow::Result<(usize, Record)> {
        let spec = &self.cfg.certs[i];
        // ACME certificates do not follow the embedded CA's generations.
        let generation = if spec.issuer == IssuerKind::Ca { self.generation() } else { 0 };
        let rec = match rec {
            Some(r) if r.ari_id.is_some() && now >= r.ari_next => Some(self.take_hint(spec, r, now).await?),
            r => r,
        };
        let rec = match due(spec, rec.as_ref(), now, generation) {
            Some(why) => self.rotate(spec, rec.unwrap_or_default(), now, why).await?,
            None => rec.unwrap_or_default(),
        };
        Ok((i, rec))
    }

    /// Asks the ACME server when to renew (RFC 9773) and moves the renewal
    /// time to its window; a server without ARI is not asked again.
    async fn take_hint(&self, spec: &ManagedCert, mut rec: Record, now: u64) -> anyhow::Result<Record> {
        let (Some(acme), Some(id)) = (&self.acme, rec.ari_id.clone()) else { return Ok(rec) };
        match acme.renewal_hint(&id, &self.store, &self.sealer).await {
            Ok(Some(hint)) => {
                let jitter = unit_from(rec.leaf_sha256.as_bytes());
                rec.renew_at = super::acme::hinted_renewal(&hint, now, jitter, rec.not_before, rec.not_after);
                rec.ari_next = now + hint.ask_again_in.as_secs().clamp(60, 86_400);
                tracing::debug!(cert = %spec.name, renew_at = rec.renew_at, "certguard: ACME renewal window taken");
            }
            Ok(None) => rec.ari_id = None,
            Err(e) => {
                rec.ari_next = now + 3600;
                tracing::warn!(cert = %spec.name, error = %format!("{e:#}"), "certguard: no ACME renewal information; keeping the renewal time");
            }
        }
        self.save(&spec.name, &rec).await?;
        Ok(rec)
    }

    /// Issues one certificate and rolls it out; a failure is recorded with
    /// its retry time (the old certificate stays in service).
    async fn rotate(&self, spec: &ManagedCert, mut rec: Record, now: u64, why: &str) -> anyhow::Result<Record> {
        let span = tracing::info_span!("certguard.rotate", cert = %spec.name, reason = why);
        let started = std::time::Instant::now();
        let attempt = async {
            let (issued, trust) = self.issue(spec, rec.ari_id.as_deref()).await?;
            rollout::roll_out(spec, &issued, &trust).await?;
            anyhow::Ok(issued)
        };
        match attempt.instrument(span).await {
            Ok(issued) => {
                let mut kept = history::load(&self.store, &spec.name).await?;
                kept.previous = kept.current.take();
                kept.current = Some(Kept::seal(&spec.name, &issued, &self.sealer)?);
                history::save(&self.store, &spec.name, &kept).await?;
                let jitter = unit_from(&issued.leaf_der);
                rec = Record {
                    serial: Some(issued.serial.clone()),
                    not_before: unix(issued.not_before),
                    not_after: unix(issued.not_after),
                    renew_at: renewal_time(spec, &issued, jitter),
                    leaf_sha256: sha256_hex(&issued.leaf_der),
                    issued_for: issued_for(spec),
                    last_error: None,
                    failures: 0,
                    retry_at: 0,
                    rotated_at: now,
                    generation: issued.generation,
                    ari_id: (spec.issuer == IssuerKind::Acme).then(|| super::acme::ari_id(&issued.leaf_der)).flatten(),
                    ari_next: now,
                };
                metrics::counter!("edgebox_certguard_rotations_total", "cert" => spec.name.clone()).increment(1);
                metrics::histogram!("edgebox_certguard_rotation_seconds").record(started.elapsed().as_secs_f64());
                tracing::info!(cert = %spec.name, serial = %issued.serial, reason = why, not_after = rec.not_after, "certguard installed a certificate");
            }
            Err(e) => {
                rec.failures += 1;
                let backoff = Duration::from_secs(10u64 << rec.failures.min(12)).min(MAX_BACKOFF);
                rec.retry_at = now + backoff.as_secs();
                rec.last_error = Some(format!("{e:#}"));
                metrics::counter!("edgebox_certguard_failures_total", "cert" => spec.name.clone()).increment(1);
                tracing::warn!(cert = %spec.name, error = %format!("{e:#}"), retry_in_s = backoff.as_secs(), "certguard could not rotate a certificate; the old one stays in service");
            }
        }
        self.save(&spec.name, &rec).await?;
        Ok(rec)
    }

    /// Runs a command from `edgebox certguard`: `{"op": "renew" | "rollback",
    /// "name": …}`; answers with the serial now in service.
    pub async fn command(&self, args: serde_json::Value) -> Result<serde_json::Value, String> {
        let op = args["op"].as_str().unwrap_or_default().to_owned();
        if op == "issue" {
            return self.issue_once(args["cert"].clone()).await.map_err(|e| format!("{e:#}"));
        }
        let name = args["name"].as_str().unwrap_or_default();
        let spec = self
            .cfg
            .certs
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| format!("no managed certificate named {name:?}"))?;
        let now = unix((self.clock)());
        let rec = self.records().await.map_err(|e| format!("{e:#}"))?;
        let rec = rec.into_iter().find(|(n, _)| n == name).and_then(|(_, r)| r).unwrap_or_default();
        let after = match op.as_str() {
            "renew" => {
                let mut forced = rec;
                forced.failures = 0;
                self.rotate(&spec, forced, now, "renewal asked for").await.map_err(|e| format!("{e:#}"))?
            }
            "rollback" => self.roll_back(&spec, rec, now).await.map_err(|e| format!("{e:#}"))?,
            other => return Err(format!("unknown certguard command {other:?} (renew, rollback, issue)")),
        };
        match after.last_error {
            Some(e) if after.failures > 0 => Err(e),
            _ => Ok(serde_json::json!({ "name": name, "serial": after.serial, "not_after": after.not_after })),
        }
    }

    /// Issues one certificate that certguard does not manage (a client's, a
    /// test server's) to the files its targets name; no reload, no renewal.
    async fn issue_once(&self, cert: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let spec: ManagedCert = serde_json::from_value(cert).map_err(|e| anyhow::anyhow!("issue: {e}"))?;
        CertguardConfig { certs: vec![spec.clone()], ..self.cfg.clone() }.validate().map_err(anyhow::Error::msg)?;
        let issued = self.ca.read().unwrap_or_else(|p| p.into_inner()).issue(&spec, (self.clock)())?;
        for t in &spec.targets {
            install::put(t, issued.chain_pem.clone(), issued.key_pem.clone()).await?;
        }
        metrics::counter!("edgebox_certguard_one_off_issued_total").increment(1);
        tracing::info!(name = %spec.name, serial = %issued.serial, "certguard issued a one-off certificate");
        Ok(serde_json::json!({ "name": spec.name, "serial": issued.serial, "not_after": unix(issued.not_after) }))
    }

    /// Rolls the previous certificate out again, canaries first, and swaps
    /// it with the current one in the history. Its renewal is put off to
    /// halfway to its expiry, so the certificate just rolled back is not
    /// reissued at once.
    async fn roll_back(&self, spec: &ManagedCert, rec: Record, now: u64) -> anyhow::Result<Record> {
        let mut kept = history::load(&self.store, &spec.name).await?;
        let previous = kept
            .previous
            .take()
            .ok_or_else(|| anyhow::anyhow!("{}: no previous certificate to go back to", spec.name))?;
        let issued = previous.open(&spec.name, &self.sealer)?;
        anyhow::ensure!(
            unix(issued.not_after) > now,
            "{}: the previous certificate (serial {}) has expired",
            spec.name,
            issued.serial
        );
        let trust = match (spec.issuer, &self.acme) {
            (IssuerKind::Acme, Some(acme)) => {
                Trust::Config(ClientTlsConfig { ca_file: acme.cfg.probe_ca_file.clone(), ..Default::default() })
            }
            _ => Trust::Roots(self.roots()),
        };
        rollout::roll_out(spec, &issued, &trust).await?;
        kept.previous = kept.current.take();
        kept.current = Some(previous);
        history::save(&self.store, &spec.name, &kept).await?;
        let rec = Record {
            serial: Some(issued.serial.clone()),
            not_before: unix(issued.not_before),
            not_after: unix(issued.not_after),
            renew_at: now + (unix(issued.not_after) - now) / 2,
            leaf_sha256: sha256_hex(&issued.leaf_der),
            issued_for: issued_for(spec),
            rotated_at: now,
            generation: issued.generation,
            // The server's window is asked for again only once the put-off
            // renewal time has come.
            ari_id: (spec.issuer == IssuerKind::Acme).then(|| super::acme::ari_id(&issued.leaf_der)).flatten(),
            ari_next: now + (unix(issued.not_after) - now) / 2,
            ..rec
        };
        metrics::counter!("edgebox_certguard_rollbacks_total", "cert" => spec.name.clone()).increment(1);
        tracing::info!(cert = %spec.name, serial = %issued.serial, "certguard rolled back to the previous certificate");
        self.save(&spec.name, &rec).await?;
        Ok(rec)
    }

    /// Writes the trust bundle when the config names a file for it.
    pub fn write_trust_bundle(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.cfg.trust_bundle_file {
            let bundle = self.ca.read().unwrap_or_else(|p| p.into_inner()).bundle_pem();
            install::write_atomically(path, bundle.as_bytes(), 0o644)?;
        }
        Ok(())
    }
}

/// Metrics and log warnings for a certificate's remaining life.
fn report(spec: &ManagedCert, rec: &Record, now: u64) {
    let left = rec.not_after as f64 - now as f64;
    metrics::gauge!("edgebox_certguard_expiry_seconds", "cert" => spec.name.clone()).set(left);
    let life = rec.not_after.saturating_sub(rec.not_before) as f64;
    if rec.serial.is_some() && left <= 0.0 {
        tracing::error!(cert = %spec.name, "certguard: certificate has EXPIRED");
    } else if rec.serial.is_some() && left < life * 0.1 {
        tracing::warn!(cert = %spec.name, seconds_left = left as i64, "certguard: certificate expires soon");
    }
}
