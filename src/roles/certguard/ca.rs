//! The embedded CA: generations of a root and an intermediate made with
//! rcgen and kept in the store (certificates in DER, private keys sealed by
//! seal.rs), rotated SPIRE-style (`maintain`), and leaf issuance for
//! managed certificates: DNS, IP and SPIFFE
//! URI names, CA:FALSE, digitalSignature, server and client auth, a random
//! 127-bit serial, a minute of backdating against clock skew.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use redb::TableDefinition;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::config::{CertguardConfig, ManagedCert};
use super::seal::Sealer;
use crate::core::store::{Durability, Store};

/// `certguard.ca`: "state", the CA's generations as JSON (`StoredCa`).
pub const CA_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("certguard.ca");

/// How far back a certificate's validity starts, for peers whose clocks lag.
const BACKDATE: Duration = Duration::from_secs(60);

/// One CA generation: a root and the intermediate it signed, which signs
/// leaves while the generation is current.
pub struct Generation {
    pub number: u32,
    pub root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
    /// Unix seconds: made, and the intermediate's end of validity.
    pub created: u64,
    pub expires: u64,
    /// The root and intermediate keys, sealed, as stored.
    sealed: [Vec<u8>; 2],
}

/// A root still in the trust bundle after its generation was replaced,
/// until every leaf it may have signed has expired.
pub struct Retired {
    pub root_der: Vec<u8>,
    pub until: u64,
}

/// The CA, SPIRE-style: the current generation signs; the next one is
/// published in the trust bundle before it signs anything; old roots stay
/// published until their last leaf expired.
pub struct Ca {
    pub current: Generation,
    pub next: Option<Generation>,
    pub retired: Vec<Retired>,
}

/// A freshly issued certificate.
pub struct Issued {
    /// Leaf then intermediate, PEM.
    pub chain_pem: String,
    pub key_pem: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// The CA generation that signed it.
    pub generation: u32,
    /// When it was issued; validity starts a minute earlier.
    pub issued_at: SystemTime,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub leaf_der: Vec<u8>,
}

/// The distinguished name and usages of a CA certificate; the same
/// function rebuilds the issuer when the CA is loaded from the store.
fn ca_params(cn: &str, root: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(if root { BasicConstraints::Unconstrained } else { BasicConstraints::Constrained(0) });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn validity(p: &mut CertificateParams, now: SystemTime, lifetime: Duration) -> anyhow::Result<()> {
    let at = |t: SystemTime| -> anyhow::Result<time::OffsetDateTime> {
        let secs = t.duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_secs();
        Ok(time::OffsetDateTime::from_unix_timestamp(secs as i64)?)
    };
    p.not_before = at(now - BACKDATE)?;
    p.not_after = at(now + lifetime)?;
    Ok(())
}

fn random_serial(rng: &SystemRandom) -> anyhow::Result<(SerialNumber, String)> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| anyhow::anyhow!("no secure random numbers"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40; // positive, and no leading zero byte to strip
    let hex = bytes.iter().map(|b| format!("{b:02X}")).collect();
    Ok((SerialNumber::from(bytes.to_vec()), hex))
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// The stored form of the CA (`certguard.ca` key "state", JSON), DER and
/// sealed keys in base64.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    current: StoredGeneration,
    next: Option<StoredGeneration>,
    retired: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct StoredGeneration {
    number: u32,
    root_der: String,
    root_key: String,
    intermediate_der: String,
    intermediate_key: String,
    created: u64,
    expires: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Generation {
    /// A new root and intermediate.
    fn create(sealer: &Sealer, cfg: &CertguardConfig, number: u32, now: SystemTime) -> anyhow::Result<Generation> {
        let rng = SystemRandom::new();
        let root_name = format!("{} G{number}", cfg.ca_name);
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut root_params = ca_params(&root_name, true);
        validity(&mut root_params, now, days(cfg.root_days))?;
        root_params.serial_number = Some(random_serial(&rng)?.0);
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(ca_params(&root_name, true), &root_key);

        let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let inter_name = format!("{root_name} intermediate");
        let mut inter_params = ca_params(&inter_name, false);
        validity(&mut inter_params, now, days(cfg.intermediate_days))?;
        inter_params.serial_number = Some(random_serial(&rng)?.0);
        inter_params.use_authority_key_identifier_extension = true;
        let inter_cert = inter_params.signed_by(&inter_key, &root)?;
        Ok(Generation {
            number,
            root_der: root_cert.der().to_vec(),
            intermediate_der: inter_cert.der().to_vec(),
            sealed: [
                sealer.seal("root key", &root_key.serialize_der())?,
                sealer.seal("intermediate key", &inter_key.serialize_der())?,
            ],
            intermediate: Issuer::new(ca_params(&inter_name, false), inter_key),
            created: unix(now),
            expires: unix(now + days(cfg.intermediate_days)),
        })
    }

    fn stored(&self) -> StoredGeneration {
        let b64 = |b: &[u8]| BASE64_STANDARD.encode(b);
        StoredGeneration {
            number: self.number,
            root_der: b64(&self.root_der),
            root_key: b64(&self.sealed[0]),
            intermediate_der: b64(&self.intermediate_der),
            intermediate_key: b64(&self.sealed[1]),
            created: self.created,
            expires: self.expires,
        }
    }

    fn load(g: StoredGeneration, sealer: &Sealer, cfg: &CertguardConfig) -> anyhow::Result<Generation> {
        let de = |s: &str, what: &str| BASE64_STANDARD.decode(s).with_context(|| format!("certguard.ca {what}"));
        let sealed = [de(&g.root_key, "root key")?, de(&g.intermediate_key, "intermediate key")?];
        let pkcs8 = sealer.open("intermediate key", &sealed[1])?;
        let key = KeyPair::try_from(pkcs8.as_slice()).context("certguard.ca intermediate key: not a PKCS#8 key")?;
        let name = format!("{} G{} intermediate", cfg.ca_name, g.number);
        Ok(Generation {
            number: g.number,
            root_der: de(&g.root_der, "root certificate")?,
            intermediate_der: de(&g.intermediate_der, "intermediate certificate")?,
            intermediate: Issuer::new(ca_params(&name, false), key),
            created: g.created,
            expires: g.expires,
            sealed,
        })
    }
}

impl Ca {
    /// Loads the CA from the store, making and storing a first generation
    /// when the store holds none.
    pub fn load_or_create(
        store: &Store,
        sealer: &Sealer,
        cfg: &CertguardConfig,
        now: SystemTime,
    ) -> anyhow::Result<Ca> {
        let stored = store.read_blocking(|txn| {
            let Ok(t) = txn.open_table(CA_TABLE) else { return Ok(None) };
            Ok(t.get("state")?.map(|v| v.value().to_vec()))
        })?;
        if let Some(bytes) = stored {
            let s: StoredCa = serde_json::from_slice(&bytes).context("certguard.ca state: not a stored CA")?;
            let retired = s
                .retired
                .into_iter()
                .map(|(der, until)| Ok(Retired { root_der: BASE64_STANDARD.decode(der)?, until }))
                .collect::<anyhow::Result<_>>()?;
            return Ok(Ca {
                current: Generation::load(s.current, sealer, cfg)?,
                next: s.next.map(|g| Generation::load(g, sealer, cfg)).transpose()?,
                retired,
            });
        }
        let ca = Ca { current: Generation::create(sealer, cfg, 1, now)?, next: None, retired: Vec::new() };
        let state = ca.state()?;
        store.write_blocking(Durability::Immediate, move |txn| save_state(txn, &state))?;
        tracing::info!(ca = %cfg.ca_name, "certguard created its root and intermediate CA");
        Ok(ca)
    }

    /// The CA's state as stored (`save_state` writes it).
    pub fn state(&self) -> anyhow::Result<Vec<u8>> {
        let stored = StoredCa {
            current: self.current.stored(),
            next: self.next.as_ref().map(Generation::stored),
            retired: self.retired.iter().map(|r| (BASE64_STANDARD.encode(&r.root_der), r.until)).collect(),
        };
        Ok(serde_json::to_vec(&stored)?)
    }

    /// Moves the CA along its schedule at `now` (SPIRE's): at half of the
    /// current generation's life the next one is made and published; from
    /// three quarters on, it signs, and the old root stays published for
    /// `max_leaf_s` more; a retired root past that leaves the bundle.
    /// Returns what changed, if anything (the bundle needs writing then).
    pub fn maintain(
        &mut self,
        sealer: &Sealer,
        cfg: &CertguardConfig,
        now: SystemTime,
        max_leaf_s: u64,
    ) -> anyhow::Result<Option<&'static str>> {
        let t = unix(now);
        let before = self.retired.len();
        self.retired.retain(|r| r.until > t);
        let retired = self.retired.len() != before;
        let life = self.current.expires.saturating_sub(self.current.created).max(1);
        let age = t.saturating_sub(self.current.created);
        let step = if t + 60 >= self.current.expires {
            // Off for longer than the schedule allows (a device on a shelf):
            // no overlap is possible any more; a fresh generation takes over.
            let number = self.next.as_ref().map_or(self.current.number, |g| g.number) + 1;
            let next = match self.next.take() {
                Some(g) if g.expires > t + 60 => g,
                _ => Generation::create(sealer, cfg, number, now)?,
            };
            let old = std::mem::replace(&mut self.current, next);
            self.retired.push(Retired { root_der: old.root_der, until: t + max_leaf_s });
            Some("the CA had expired; a new generation took over at once")
        } else if self.next.is_none() && age >= life / 2 {
            self.next = Some(Generation::create(sealer, cfg, self.current.number + 1, now)?);
            Some("prepared the next CA and published its root")
        } else if self.next.is_some() && age >= life / 4 * 3 {
            let next = self.next.take().expect("checked above");
            let old = std::mem::replace(&mut self.current, next);
            self.retired.push(Retired { root_der: old.root_der, until: t + max_leaf_s });
            Some("activated the next CA; the old root stays published until its leaves expire")
        } else {
            None
        };
        Ok(step.or(retired.then_some("retired an old root from the trust bundle")))
    }

    /// Every root a client should trust now: current, next and retired.
    pub fn roots(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.current.root_der.clone()];
        out.extend(self.next.iter().map(|g| g.root_der.clone()));
        out.extend(self.retired.iter().map(|r| r.root_der.clone()));
        out
    }

    /// The trust bundle: every root in `roots`, PEM.
    pub fn bundle_pem(&self) -> String {
        self.roots().iter().map(|der| pem("CERTIFICATE", der)).collect()
    }

    /// Issues a leaf for `spec`, valid from now for its lifetime.
    pub fn issue(&self, spec: &ManagedCert, now: SystemTime) -> anyhow::Result<Issued> {
        let at = |k: &str| format!("certguard.certs.{}.{k}", spec.name);
        let mut p = CertificateParams::default();
        for name in &spec.dns_names {
            let n = name.as_str().try_into().with_context(|| format!("{} {name:?}", at("dns_names")))?;
            p.subject_alt_names.push(SanType::DnsName(n));
        }
        p.subject_alt_names.extend(spec.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        if let Some(id) = &spec.spiffe_id {
            p.subject_alt_names
                .push(SanType::URI(id.as_str().try_into().with_context(|| format!("{} {id:?}", at("spiffe_id")))?));
        }
        let cn = spec.dns_names.first().cloned().unwrap_or_else(|| spec.name.clone());
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        // A leaf never outlives the intermediate that signs it.
        let ends = UNIX_EPOCH + Duration::from_secs(self.current.expires);
        let lifetime =
            Duration::from_secs_f64(spec.lifetime_hours * 3600.0).min(ends.duration_since(now).unwrap_or_default());
        validity(&mut p, now, lifetime)?;
        let (serial, serial_hex) = random_serial(&SystemRandom::new())?;
        p.serial_number = Some(serial);
        let key = super::keys::generate(spec.key_type)?;
        let g = &self.current;
        let cert = p.signed_by(&key, &g.intermediate).with_context(|| format!("signing {}", at("name")))?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), pem("CERTIFICATE", &g.intermediate_der)),
            generation: g.number,
            key_pem: key.serialize_pem(),
            serial: serial_hex,
            issued_at: now,
            not_before: now - BACKDATE,
            not_after: now + lifetime,
            leaf_der: cert.der().to_vec(),
        })
    }
}

/// Writes a CA state (`Ca::state`) in a write transaction.
pub fn save_state(txn: &redb::WriteTransaction, state: &[u8]) -> anyhow::Result<()> {
    txn.open_table(CA_TABLE)?.insert("state", state)?;
    Ok(())
}

/// DER as a PEM block.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = BASE64_STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
