//! The server side: a listener's certificate, re-read when its files change
//! (a rotation by certguard or any tool that replaces the files takes effect
//! within a second, without a restart), and an optional client CA that makes
//! every client present a certificate, re-read the same way (a CA rotation
//! publishes its next root there before it signs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::spiffe::SvidVerifier;
use super::{ServerTlsConfig, TlsError, load_certs, load_key, load_roots, provider};

/// How often the certificate files are checked for a change, at most.
const RECHECK: Duration = Duration::from_millis(250);

/// A listener's TLS, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ServerTlsConfig,
    key: String,
    resolver: Arc<ReloadingCert>,
    /// With spiffe_bundles: the SVID verifier (it re-reads its bundles).
    svids: Option<Arc<SvidVerifier>>,
    /// The config in use, rebuilt when the client CA file changes (a CA
    /// rotation publishes a new root there), and what that file looked like.
    current: Mutex<(Arc<rustls::ServerConfig>, FileStamp, Instant)>,
}

impl ServerTls {
    /// Loads the certificate, key and client CA named by `cfg`; `key` is the
    /// config section in errors (e.g. "tsdb.tls").
    pub fn load(cfg: &ServerTlsConfig, key: &str) -> Result<Self, TlsError> {
        if let Some(what) = cfg.problem(key) {
            return Err(TlsError::Setup { key: key.to_owned(), what });
        }
        let resolver = Arc::new(ReloadingCert::load(&cfg.cert_file, &cfg.key_file, key, provider())?);
        let svids = match cfg.spiffe_bundles.is_empty() {
            true => None,
            false => {
                Some(Arc::new(SvidVerifier::load(&cfg.spiffe_bundles, key, !cfg.client_cert_optional, provider())?))
            }
        };
        let stamp = cfg.client_ca_file.as_deref().and_then(file_stamp);
        let config = build(cfg, key, resolver.clone(), svids.clone())?;
        let current = Mutex::new((config, stamp, Instant::now()));
        Ok(Self { inner: Arc::new(Inner { cfg: cfg.clone(), key: key.to_owned(), resolver, svids, current }) })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certs(&self) -> bool {
        self.inner.cfg.requires_client_certs()
    }

    /// The SVID verifier, when clients present X.509-SVIDs.
    pub fn svids(&self) -> Option<&Arc<SvidVerifier>> {
        self.inner.svids.as_ref()
    }

    /// Runs the handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        TlsAcceptor::from(self.config()).accept(tcp).await
    }

    /// The config to accept with, rebuilt first when the client CA file
    /// changed; a bundle that does not load keeps the previous one.
    fn config(&self) -> Arc<rustls::ServerConfig> {
        let inner = &self.inner;
        let mut current = inner.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &inner.cfg.client_ca_file
            && current.2.elapsed() >= RECHECK
        {
            current.2 = Instant::now();
            let stamp = file_stamp(path);
            if stamp != current.1 {
                match build(&inner.cfg, &inner.key, inner.resolver.clone(), inner.svids.clone()) {
                    Ok(config) => {
                        *current = (config, stamp, Instant::now());
                        tracing::info!(section = %inner.key, client_ca_file = %path.display(), "TLS client CA reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS client CA file changed but does not load; keeping the previous one")
                    }
                }
            }
        }
        current.0.clone()
    }
}

/// The rustls config for `cfg`, its certificate from `resolver`.
fn build(
    cfg: &ServerTlsConfig,
    key: &str,
    resolver: Arc<ReloadingCert>,
    svids: Option<Arc<SvidVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(key, e))?;
    let builder = match (&cfg.client_ca_file, svids) {
        (_, Some(svids)) => builder.with_client_cert_verifier(svids),
        (Some(path), None) => {
            let roots = Arc::new(load_roots(path, &format!("{key}.client_ca_file"))?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if cfg.client_cert_optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| setup(&format!("{key}.client_ca_file"), e))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, None) => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn setup(key: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup { key: key.to_owned(), what: e.to_string() }
}

/// The certificate in use and what its files looked like when it was read.
#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// Identity of both files' contents as the file system shows it: a rename
/// over the file changes the inode, an edit in place the mtime or length.
type Stamp = [FileStamp; 2];

/// A file's inode, length and mtime; None when it does not exist.
pub type FileStamp = Option<(u64, u64, SystemTime)>;

/// A certificate and key re-read when their files change: a listener's,
/// or the identity a client presents (`ResolvesClientCert`, client.rs).
#[derive(Debug)]
pub(super) struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    key: String,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

impl ReloadingCert {
    pub(super) fn load(
        cert_file: &Path,
        key_file: &Path,
        key: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(cert_file, key_file);
        let current = Arc::new(certified_key(cert_file, key_file, key, &provider)?);
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            key: key.to_owned(),
            provider,
            state: Mutex::new(Loaded { current, stamp, checked: Instant::now() }),
        })
    }

    /// Re-reads the files when they changed since the last read. A pair that
    /// does not load (a rotation half written, a key that does not match)
    /// keeps the previous certificate and is tried again at the next check.
    fn refresh(&self, state: &mut Loaded) {
        if state.checked.elapsed() < RECHECK {
            return;
        }
        state.checked = Instant::now();
        let now = stamp(&self.cert_file, &self.key_file);
        if now == state.stamp {
            return;
        }
        match certified_key(&self.cert_file, &self.key_file, &self.key, &self.provider) {
            Ok(k) => {
                state.current = Arc::new(k);
                state.stamp = now;
                tracing::info!(section = %self.key, cert_file = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the previous one")
            }
        }
    }
}

impl ReloadingCert {
    /// The certificate to present now.
    pub(super) fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut state);
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(cert_file: &Path, key_file: &Path) -> Stamp {
    [cert_file, key_file].map(file_stamp)
}

pub fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().and_then(|m| Some((m.ino(), m.len(), m.modified().ok()?)))
}

/// The chain and key from their files, checked to belong together.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    key: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert_file, &format!("{key}.cert_file"))?;
    let private = load_key(key_file, &format!("{key}.key_file"))?;
    CertifiedKey::from_der(certs, private, provider).map_err(|e| TlsError::Pem {
        key: format!("{key}.key_file"),
        path: key_file.to_owned(),
        what: format!("does not fit {}: {e}", cert_file.display()),
    })
}
