//! The embedded CA: a root and an intermediate made with rcgen on first
//! start and kept in the store (certificates in DER, private keys sealed by
//! seal.rs), and leaf issuance for managed certificates: DNS, IP and SPIFFE
//! URI names, CA:FALSE, digitalSignature, server and client auth, a random
//! 127-bit serial, a minute of backdating against clock skew.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use redb::TableDefinition;
use ring::rand::{SecureRandom, SystemRandom};

use super::config::{CertguardConfig, KeyType, ManagedCert};
use super::seal::Sealer;
use crate::core::store::{Durability, Store};

/// `certguard.ca`: "root_cert", "intermediate_cert" (DER) and "root_key",
/// "intermediate_key" (sealed PKCS#8).
pub const CA_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("certguard.ca");

/// How far back a certificate's validity starts, for peers whose clocks lag.
const BACKDATE: Duration = Duration::from_secs(60);

/// The CA, loaded.
pub struct Ca {
    pub root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
}

/// A freshly issued certificate.
pub struct Issued {
    /// Leaf then intermediate, PEM.
    pub chain_pem: String,
    pub key_pem: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
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

impl Ca {
    /// Loads the CA from the store, making and storing it first when the
    /// store holds none.
    pub fn load_or_create(store: &Store, sealer: &Sealer, cfg: &CertguardConfig) -> anyhow::Result<Ca> {
        let stored = store.read_blocking(|txn| {
            let Ok(t) = txn.open_table(CA_TABLE) else { return Ok(None) };
            let get = |k: &str| -> anyhow::Result<Option<Vec<u8>>> { Ok(t.get(k)?.map(|v| v.value().to_vec())) };
            Ok(match (get("intermediate_cert")?, get("intermediate_key")?, get("root_cert")?) {
                (Some(c), Some(k), Some(r)) => Some((c, k, r)),
                _ => None,
            })
        })?;
        if let Some((intermediate_der, sealed, root_der)) = stored {
            let pkcs8 = sealer.open("intermediate key", &sealed)?;
            let key = KeyPair::try_from(pkcs8.as_slice()).context("certguard.ca intermediate_key: not a PKCS#8 key")?;
            let intermediate = Issuer::new(ca_params(&format!("{} intermediate", cfg.ca_name), false), key);
            return Ok(Ca { root_der, intermediate_der, intermediate });
        }
        let (ca, rows) = Self::create(sealer, cfg)?;
        store.write_blocking(Durability::Immediate, move |txn| {
            let mut t = txn.open_table(CA_TABLE)?;
            for (k, v) in &rows {
                t.insert(*k, v.as_slice())?;
            }
            Ok(())
        })?;
        tracing::info!(ca = %cfg.ca_name, "certguard created its root and intermediate CA");
        Ok(ca)
    }

    /// A new root and intermediate, and the rows that store them.
    #[allow(clippy::type_complexity)]
    fn create(sealer: &Sealer, cfg: &CertguardConfig) -> anyhow::Result<(Ca, Vec<(&'static str, Vec<u8>)>)> {
        let rng = SystemRandom::new();
        let now = SystemTime::now();
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut root_params = ca_params(&cfg.ca_name, true);
        validity(&mut root_params, now, days(cfg.root_days))?;
        root_params.serial_number = Some(random_serial(&rng)?.0);
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(ca_params(&cfg.ca_name, true), &root_key);

        let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let inter_name = format!("{} intermediate", cfg.ca_name);
        let mut inter_params = ca_params(&inter_name, false);
        validity(&mut inter_params, now, days(cfg.intermediate_days))?;
        inter_params.serial_number = Some(random_serial(&rng)?.0);
        inter_params.use_authority_key_identifier_extension = true;
        let inter_cert = inter_params.signed_by(&inter_key, &root)?;

        let rows = vec![
            ("root_cert", root_cert.der().to_vec()),
            ("root_key", sealer.seal("root key", &root_key.serialize_der())?),
            ("intermediate_cert", inter_cert.der().to_vec()),
            ("intermediate_key", sealer.seal("intermediate key", &inter_key.serialize_der())?),
        ];
        let ca = Ca {
            root_der: root_cert.der().to_vec(),
            intermediate_der: inter_cert.der().to_vec(),
            intermediate: Issuer::new(ca_params(&inter_name, false), inter_key),
        };
        Ok((ca, rows))
    }

    /// The trust bundle: the root, PEM.
    pub fn root_pem(&self) -> String {
        pem("CERTIFICATE", &self.root_der)
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
        let lifetime = Duration::from_secs_f64(spec.lifetime_hours * 3600.0);
        validity(&mut p, now, lifetime)?;
        let (serial, serial_hex) = random_serial(&SystemRandom::new())?;
        p.serial_number = Some(serial);
        let alg = match spec.key_type {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        };
        let key = KeyPair::generate_for(alg)?;
        let cert = p.signed_by(&key, &self.intermediate).with_context(|| format!("signing {}", at("name")))?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), pem("CERTIFICATE", &self.intermediate_der)),
            key_pem: key.serialize_pem(),
            serial: serial_hex,
            issued_at: now,
            not_before: now - BACKDATE,
            not_after: now + lifetime,
            leaf_der: cert.der().to_vec(),
        })
    }
}

/// DER as a PEM block.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::prelude::BASE64_STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
