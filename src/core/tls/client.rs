//! The client side: whom an outbound connection trusts (a configured CA
//! bundle, else the Mozilla roots built into the binary, since a device
//! image may have no CA store), the identity it presents to servers that ask,
//! and a pinned verifier for the CLI talking to its own role's listener.

use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use super::server::ReloadingCert;
use super::{ClientTlsConfig, ServerTlsConfig, TlsError, load_certs, load_roots, provider};

/// A blocking TLS client stream.
pub type ClientStream = StreamOwned<ClientConnection, TcpStream>;

/// An outbound TLS setup: the rustls config and the name the server's
/// certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the client for connections to `host` (a DNS name or an IP
    /// address, as in the URL); `key` is the config section in errors.
    pub fn load(cfg: &ClientTlsConfig, host: &str, key: &str) -> Result<Self, TlsError> {
        let roots = match &cfg.ca_file {
            Some(path) => load_roots(path, &format!("{key}.ca_file"))?,
            None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        let identity = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(private)) => Some(Arc::new(ReloadingCert::load(cert, private, key, provider())?)),
            (None, None) => None,
            _ => return Err(setup(key, "cert_file and key_file go together")),
        };
        let name = cfg.server_name.as_deref().unwrap_or(host);
        Self::build(roots, identity, name, key)
    }

    /// A client trusting exactly `roots` (DER), for names checked against
    /// `name`: certguard's probes, which trust its own CA.
    pub fn with_roots(roots: &[Vec<u8>], name: &str, key: &str) -> Result<Self, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for der in roots {
            store.add(CertificateDer::from(der.clone())).map_err(|e| setup(key, format!("unusable root: {e}")))?;
        }
        Self::build(store, None, name, key)
    }

    fn build(
        roots: rustls::RootCertStore,
        identity: Option<Arc<ReloadingCert>>,
        name: &str,
        key: &str,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(key, e))?
            .with_root_certificates(roots);
        let config = match identity {
            Some(resolver) => builder.with_client_cert_resolver(resolver),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']').to_owned())
            .map_err(|e| setup(&format!("{key}.server_name"), format!("{name:?}: {e}")))?;
        Ok(Self { config: Arc::new(config), name })
    }

    /// The rustls config, for clients that run their own connections (a
    /// pooled HTTP client).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> ServerName<'static> {
        self.name.clone()
    }

    /// Starts a session over a connected socket; the handshake runs with the
    /// first read or write.
    pub fn connect(&self, tcp: TcpStream) -> Result<ClientStream, rustls::Error> {
        Ok(StreamOwned::new(ClientConnection::new(self.config.clone(), self.name.clone())?, tcp))
    }
}

impl ClientTls {
    /// Connects to `addr`, completes a handshake (so the server's chain and
    /// name are verified) and returns the leaf certificate it presented, in
    /// DER. Every socket operation is bounded by `timeout`.
    pub fn leaf_served_at(&self, addr: std::net::SocketAddr, timeout: std::time::Duration) -> anyhow::Result<Vec<u8>> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let mut s = self.connect(tcp)?;
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        let leaf =
            s.conn.peer_certificates().and_then(|c| c.first()).ok_or_else(|| anyhow::anyhow!("no certificate"))?;
        Ok(leaf.to_vec())
    }
}

/// A client that trusts exactly the leaf certificate a local listener is
/// configured with: the CLI reaching its own role needs no CA and no name
/// that matches the loopback address it connects to.
pub fn pinned_client(server: &ServerTlsConfig, key: &str) -> Result<ClientTls, TlsError> {
    let leaf = load_certs(&server.cert_file, &format!("{key}.cert_file"))?.swap_remove(0);
    let provider = provider();
    let verifier = Arc::new(Pinned { leaf, algorithms: provider.signature_verification_algorithms });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(key, e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(ClientTls { config: Arc::new(config), name: ServerName::try_from("localhost").expect("a valid DNS name") })
}

fn setup(key: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup { key: key.to_owned(), what: e.to_string() }
}

/// The identity a client presents: its files re-read when they change (a
/// rotated SVID is presented from the next handshake on).
impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts the one certificate it was given, with handshake signatures
/// checked as usual (so the server must hold its private key).
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the listener presented a certificate other than its configured cert_file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
