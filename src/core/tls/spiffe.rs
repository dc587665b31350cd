//! SPIFFE identity on a listener: a client must present an X.509-SVID, and
//! the SVID must chain to the trust bundle of the trust domain named in its
//! own URI SAN (one bundle per trust domain, so one domain's CA cannot vouch
//! for another domain's IDs). The checks follow the X.509-SVID
//! specification: exactly one URI SAN, a well-formed `spiffe://` ID, a leaf
//! (basicConstraints CA:FALSE) with digitalSignature and without
//! keyCertSign or cRLSign; validity and the chain are webpki's.
//!
//! Every refusal is counted (`edgebox_svid_rejections_total{section,
//! reason}`) and logged with its reason: a handshake alert tells the peer
//! little, the operator needs the why. Bundle files are re-read within
//! 250 ms of a change, so a CA rotation published by certguard takes effect
//! without a restart; a bundle that does not load keeps the previous one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::server::{FileStamp, file_stamp};
use super::{TlsError, load_roots};

/// How often bundle files are checked for a change, at most.
const RECHECK: Duration = Duration::from_millis(250);

const PREFIX: &str = "spiffe://";

/// Longest SPIFFE ID accepted (the specification's limit).
const MAX_ID_LEN: usize = 2048;

/// A parsed SPIFFE ID: `spiffe://<trust_domain><path>`, kept as its text
/// (a request's caller is logged and labelled by it, without formatting).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    text: String,
    /// Where the trust domain ends in `text`.
    td_end: usize,
}

impl SpiffeId {
    /// Parses an ID by the SPIFFE ID specification: lowercase scheme
    /// `spiffe`, a trust domain of `[a-z0-9._-]`, path segments of
    /// `[A-Za-z0-9._-]` that are neither empty, `.` nor `..`, no query,
    /// fragment, port or user info.
    pub fn parse(s: &str) -> Result<SpiffeId, String> {
        if s.len() > MAX_ID_LEN {
            return Err(format!("longer than {MAX_ID_LEN} bytes"));
        }
        let rest = s.strip_prefix(PREFIX).ok_or_else(|| format!("{s:?} does not start with spiffe://"))?;
        let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if td.is_empty() {
            return Err(format!("{s:?} has no trust domain"));
        }
        if let Some(c) = td.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
            return Err(format!("{s:?}: the trust domain may not contain {c:?}"));
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(format!("{s:?}: empty, \".\" or \"..\" path segment"));
                }
                if let Some(c) = seg.chars().find(|c| !matches!(c, 'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
                {
                    return Err(format!("{s:?}: the path may not contain {c:?}"));
                }
            }
        }
        Ok(SpiffeId { text: s.to_owned(), td_end: PREFIX.len() + td.len() })
    }

    /// The whole ID, `spiffe://td/path`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn trust_domain(&self) -> &str {
        &self.text[PREFIX.len()..self.td_end]
    }

    /// Empty, or `/`-separated segments starting with `/`.
    pub fn path(&self) -> &str {
        &self.text[self.td_end..]
    }

    /// The SPIFFE ID of an X.509-SVID leaf, after the leaf checks.
    pub fn of_svid(der: &[u8]) -> Result<SpiffeId, Rejection> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Rejection::new("malformed", format!("the certificate does not parse: {e}")))?;
        let mut uris = Vec::new();
        let (mut ca, mut basic, mut usage) = (false, false, None);
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    uris.extend(san.general_names.iter().filter_map(|n| match n {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    }));
                }
                ParsedExtension::BasicConstraints(bc) => {
                    basic = true;
                    ca = bc.ca;
                }
                ParsedExtension::KeyUsage(ku) => usage = Some(*ku),
                _ => {}
            }
        }
        if ca {
            return Err(Rejection::new("ca_leaf", "the leaf is a CA certificate (basicConstraints CA:TRUE)"));
        }
        if !basic {
            return Err(Rejection::new("no_basic_constraints", "the leaf has no basicConstraints (CA:FALSE)"));
        }
        let usage = usage.ok_or_else(|| Rejection::new("no_key_usage", "the leaf has no keyUsage extension"))?;
        if !usage.digital_signature() {
            return Err(Rejection::new("no_digital_signature", "the leaf's keyUsage lacks digitalSignature"));
        }
        if usage.key_cert_sign() || usage.crl_sign() {
            return Err(Rejection::new("signing_usage", "the leaf's keyUsage has keyCertSign or cRLSign"));
        }
        let [uri] = uris.as_slice() else {
            return Err(Rejection::new("uri_san_count", format!("{} URI SANs, an SVID has exactly one", uris.len())));
        };
        SpiffeId::parse(uri).map_err(|e| Rejection::new("not_spiffe", format!("URI SAN {e}")))
    }

    /// Whether `pattern` admits this ID: the same ID, or a prefix ending in
    /// `/*` that covers it segment-wise (`spiffe://td/ns/*` admits
    /// `spiffe://td/ns/a` and `spiffe://td/ns/a/b`, not `spiffe://td/nsx`).
    pub fn matches(&self, pattern: &str) -> bool {
        match pattern.strip_suffix("/*") {
            Some(prefix) => self.text.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
            None => self.text == pattern,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a certificate is not an acceptable SVID: a short reason for metrics
/// and the detail for the log.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid X.509-SVID ({}): {}", self.reason, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// Trust bundles by trust domain, each a PEM file re-read when it changes.
struct Bundles {
    files: BTreeMap<String, PathBuf>,
    section: String,
    provider: Arc<CryptoProvider>,
    state: Mutex<BundleState>,
}

struct BundleState {
    verifiers: HashMap<String, Arc<dyn ClientCertVerifier>>,
    stamps: Vec<FileStamp>,
    checked: Instant,
}

impl Bundles {
    fn load(files: &BTreeMap<String, PathBuf>, section: &str, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        for td in files.keys() {
            SpiffeId::parse(&format!("spiffe://{td}")).map_err(|e| TlsError::Setup {
                key: format!("{section}.spiffe_bundles"),
                what: format!("trust domain {td:?}: {e}"),
            })?;
        }
        let verifiers = build_verifiers(files, section, &provider)?;
        let stamps = files.values().map(|p| file_stamp(p)).collect();
        let state = Mutex::new(BundleState { verifiers, stamps, checked: Instant::now() });
        Ok(Bundles { files: files.clone(), section: section.to_owned(), provider, state })
    }

    /// The chain verifier for `trust_domain`, after re-reading changed files.
    fn verifier(&self, trust_domain: &str) -> Option<Arc<dyn ClientCertVerifier>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let stamps: Vec<FileStamp> = self.files.values().map(|p| file_stamp(p)).collect();
            if stamps != state.stamps {
                match build_verifiers(&self.files, &self.section, &self.provider) {
                    Ok(v) => {
                        state.verifiers = v;
                        state.stamps = stamps;
                        tracing::info!(section = %self.section, "SPIFFE trust bundles reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a SPIFFE trust bundle changed but does not load; keeping the previous one")
                    }
                }
            }
        }
        state.verifiers.get(trust_domain).cloned()
    }
}

fn build_verifiers(
    files: &BTreeMap<String, PathBuf>,
    section: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<HashMap<String, Arc<dyn ClientCertVerifier>>, TlsError> {
    files
        .iter()
        .map(|(td, path)| {
            let key = format!("{section}.spiffe_bundles.{td}");
            let roots = Arc::new(load_roots(path, &key)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError::Setup { key, what: e.to_string() })?;
            Ok((td.clone(), v))
        })
        .collect()
}

/// The client verifier of a listener with `spiffe_bundles`.
pub struct SvidVerifier {
    bundles: Bundles,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for SvidVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidVerifier").field("trust_domains", &self.bundles.files.keys()).finish_non_exhaustive()
    }
}

impl SvidVerifier {
    /// A verifier for the bundles in `files` (trust domain → PEM file);
    /// `mandatory`: a connection without a certificate is refused.
    pub fn load(
        files: &BTreeMap<String, PathBuf>,
        section: &str,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        Ok(SvidVerifier { bundles: Bundles::load(files, section, provider.clone())?, mandatory, provider })
    }

    /// The SPIFFE ID of a presented chain, or why it is refused.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, Rejection> {
        let id = SpiffeId::of_svid(end_entity)?;
        let chain = self.bundles.verifier(id.trust_domain()).ok_or_else(|| {
            Rejection::new("unknown_trust_domain", format!("no trust bundle for trust domain {:?}", id.trust_domain()))
        })?;
        chain.verify_client_cert(end_entity, intermediates, now).map_err(|e| {
            use rustls::CertificateError as C;
            let reason = match &e {
                rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
                rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
                rustls::Error::InvalidCertificate(C::UnknownIssuer) => "untrusted_chain",
                rustls::Error::InvalidCertificate(C::BadSignature) => "bad_signature",
                _ => "invalid_chain",
            };
            Rejection::new(reason, format!("{id}: {e} (trust domain {:?}'s bundle)", id.trust_domain()))
        })?;
        Ok(id)
    }
}

impl ClientCertVerifier for SvidVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(r) => {
                let section = self.bundles.section.clone();
                metrics::counter!("edgebox_svid_rejections_total", "section" => section.clone(), "reason" => r.reason)
                    .increment(1);
                tracing::warn!(section, reason = r.reason, detail = %r.detail, "client refused at the TLS handshake");
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(r)))))
            }
        }
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
