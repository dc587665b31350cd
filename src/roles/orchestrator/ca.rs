//! The node CA: issues each joined node a client certificate whose one URI
//! SAN is its SPIFFE ID, `spiffe://<trust_domain>/node/<id>` (an
//! X.509-SVID: a leaf, digitalSignature, clientAuth), from a request the
//! node signed with its own key, which never leaves the device. The CA's
//! root (ECDSA P-256, ten years) is made on the orchestrator's first start
//! and kept in the store (table `orchestrator.ca`) until the certguard
//! role takes this job over; its certificate is written beside the store
//! as the trust bundle the listener verifies nodes against.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

pub(super) const CA: TableDefinition<&str, &str> = TableDefinition::new("orchestrator.ca");
const ROOT: &str = "root";
/// Certificates start up to this long before they are issued (clock skew),
/// and at most a tenth of their life, so renewal at two thirds of it stays
/// after the issue.
const BACKDATE_S: u64 = 300;

/// The root as stored: certificate and key, PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct Stored {
    cert_pem: String,
    key_pem: String,
}

impl Stored {
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// Never the key, in logs or errors.
impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A certificate issued to a node.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub spiffe_id: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// The CA's certificate, PEM: what the node's certificate chains to.
    pub ca: String,
    pub not_after_ms: u64,
}

pub struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    trust_domain: String,
    ttl_s: u64,
}

impl NodeCa {
    /// The CA from the root that was committed (command.rs: the first
    /// one offered stays), its certificate written to `bundle` (the
    /// listener's trust bundle for `trust_domain`).
    pub fn load(stored: Stored, trust_domain: &str, ttl_s: u64, bundle: &Path) -> anyhow::Result<NodeCa> {
        let key = KeyPair::from_pem(&stored.key_pem).context("store table orchestrator.ca: the root key")?;
        let issuer =
            Issuer::from_ca_cert_pem(&stored.cert_pem, key).context("store table orchestrator.ca: the root")?;
        write_bundle(bundle, &stored.cert_pem)?;
        Ok(NodeCa { issuer, cert_pem: stored.cert_pem, trust_domain: trust_domain.to_owned(), ttl_s })
    }

    /// The SPIFFE ID of node `id`.
    pub fn spiffe_id(&self, id: &str) -> String {
        format!("spiffe://{}/node/{id}", self.trust_domain)
    }

    /// The node id a SPIFFE ID of this trust domain names, if it names one.
    pub fn node_of<'a>(&self, id: &'a crate::core::tls::spiffe::SpiffeId) -> Option<&'a str> {
        (id.trust_domain() == self.trust_domain).then(|| id.path().strip_prefix("/node/")).flatten()
    }

    /// Issues node `id` a certificate for the key that signed `csr_pem`;
    /// whatever else the request asks for (names, usages) is ignored.
    pub fn issue(&self, id: &str, csr_pem: &str) -> Result<Issued, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("csr: not a certificate request signed by its key ({e})"))?;
        let spiffe_id = self.spiffe_id(id);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, id);
        p.distinguished_name = dn;
        let uri = spiffe_id.clone().try_into().map_err(|e| format!("{spiffe_id}: {e}"))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(BACKDATE_S.min(self.ttl_s / 10) as i64);
        p.not_after = now + time::Duration::seconds(self.ttl_s as i64);
        let cert = CertificateSigningRequestParams { params: p.clone(), public_key: csr.public_key }
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing the certificate: {e}"))?;
        metrics::counter!("edgebox_orchestrator_certificates_issued_total").increment(1);
        Ok(Issued {
            spiffe_id,
            certificate: cert.pem(),
            ca: self.cert_pem.clone(),
            not_after_ms: (p.not_after.unix_timestamp() * 1000) as u64,
        })
    }
}

/// A new root for `trust_domain`: what a start offers.
pub fn make_root(trust_domain: &str) -> anyhow::Result<Stored> {
    let key = KeyPair::generate().context("generating the node CA key")?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("edgebox node CA ({trust_domain})"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let td = format!("spiffe://{trust_domain}").try_into().context("the trust domain as a URI")?;
    p.subject_alt_names = vec![SanType::URI(td)];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::seconds(BACKDATE_S as i64);
    p.not_after = now + time::Duration::days(3650);
    let cert = p.self_signed(&key).context("signing the node CA")?;
    Ok(Stored { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Keeps `offered` as the root unless one is stored; the root that stays.
pub fn apply_init(txn: &WriteTransaction, offered: &Stored) -> anyhow::Result<Stored> {
    let mut t = txn.open_table(CA)?;
    if let Some(v) = t.get(ROOT)? {
        return serde_json::from_str(v.value()).context("store table orchestrator.ca: key root");
    }
    t.insert(ROOT, serde_json::to_string(offered)?.as_str())?;
    tracing::info!("orchestrator: node CA created");
    Ok(offered.clone())
}

/// Writes the CA certificate where the listener reads its trust bundle.
pub fn write_bundle(path: &Path, pem: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == pem) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("placing {}", path.display()))?;
    Ok(())
}
