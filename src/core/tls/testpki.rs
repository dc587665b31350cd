//! A throwaway PKI for tests: one CA, and leaf certificates it signs written
//! as PEM files. Shared by the unit tests and, through `#[path]`, the
//! integration tests, so both use real X.509 and real handshakes.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA whose certificate is written to `<dir>/<name>-ca.pem`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub ca_file: PathBuf,
    /// PEM of the intermediates between this CA and its root, this one
    /// first (empty for a root): appended to every leaf's file.
    chain: String,
}

/// A leaf certificate and its key, as files.
pub struct Leaf {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).expect("write CA");
        TestCa { issuer, ca_file, chain: String::new() }
    }

    /// An intermediate signed by this CA; `ca_flag: false` makes the broken
    /// kind (no basicConstraints CA:TRUE) that must not be trusted.
    #[cfg_attr(not(any(feature = "gateway", feature = "orchestrator")), allow(dead_code))]
    pub fn intermediate(&self, dir: &Path, name: &str, ca_flag: bool) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = if ca_flag { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        params.distinguished_name.push(DnType::CommonName, format!("{name} test intermediate"));
        let issuer = CertifiedIssuer::signed_by(params, KeyPair::generate().expect("CA key"), &self.issuer)
            .expect("intermediate cert");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).expect("write CA");
        let chain = format!("{}{}", issuer.pem(), self.chain);
        TestCa { issuer, ca_file, chain }
    }

    /// An X.509-SVID for `id` as the specification shapes it (one URI SAN,
    /// CA:FALSE, digitalSignature, client and server auth), after `tweak`
    /// has had its way with the parameters (tests break them on purpose).
    #[cfg_attr(not(any(feature = "gateway", feature = "orchestrator")), allow(dead_code))]
    pub fn svid(&self, dir: &Path, file: &str, id: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("SVID params");
        params.subject_alt_names.push(SanType::URI(id.try_into().expect("URI")));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        tweak(&mut params);
        self.write_leaf(dir, file, params)
    }

    /// A leaf for `names` (DNS names or IP addresses), written as
    /// `<dir>/<file>.pem` and `<dir>/<file>.key`.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        self.write_leaf(dir, file, params)
    }

    fn write_leaf(&self, dir: &Path, file: &str, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let leaf = Leaf { cert_file: dir.join(format!("{file}.pem")), key_file: dir.join(format!("{file}.key")) };
        std::fs::write(&leaf.cert_file, format!("{}{}", cert.pem(), self.chain)).expect("write leaf");
        std::fs::write(&leaf.key_file, key.serialize_pem()).expect("write key");
        leaf
    }
}
