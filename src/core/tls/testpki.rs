//! A throwaway PKI for tests: one CA, and leaf certificates it signs written
//! as PEM files. Shared by the unit tests and, through `#[path]`, the
//! integration tests, so both use real X.509 and real handshakes.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA whose certificate is written to `<dir>/<name>-ca.pem`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub ca_file: PathBuf,
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
        TestCa { issuer, ca_file }
    }

    /// A leaf for `names` (DNS names or IP addresses), written as
    /// `<dir>/<file>.pem` and `<dir>/<file>.key`.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let leaf = Leaf { cert_file: dir.join(format!("{file}.pem")), key_file: dir.join(format!("{file}.key")) };
        std::fs::write(&leaf.cert_file, cert.pem()).expect("write leaf");
        std::fs::write(&leaf.key_file, key.serialize_pem()).expect("write key");
        leaf
    }
}
