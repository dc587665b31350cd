//! TLS in one place, for every listener and every outbound connection (as
//! linkerd2-proxy keeps identity apart from the services that use it): the
//! config sections roles embed, PEM loading with errors that name the file,
//! the server side (certificates reloaded when their files change, optional
//! client certificates) and the client side (trust roots, client identity,
//! a pinned verifier for the CLI talking to its own listener).
//!
//! One crypto provider (ring) is passed explicitly to every config; nothing is
//! installed process-wide.

mod client;
mod server;
pub mod spiffe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

pub use client::{ClientTls, pinned_client};
pub use server::ServerTls;
pub use server::{FileStamp, file_stamp};

/// A listener's TLS: its certificate and, optionally, what its clients'
/// certificates must chain to: one CA bundle, or SPIFFE trust bundles by
/// trust domain (clients then present X.509-SVIDs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first. Re-read when the file changes.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf.
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate that
    /// chains to it (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// SPIFFE trust domain → PEM bundle file; when set, every client must
    /// present an X.509-SVID that chains to its own trust domain's bundle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spiffe_bundles: BTreeMap<String, PathBuf>,
    /// With client_ca_file or spiffe_bundles: a client without a
    /// certificate is let through the handshake (it must authenticate
    /// otherwise, e.g. with a JWT-SVID); one with a bad certificate is not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_cert_optional: bool,
}

impl ServerTlsConfig {
    /// The files it reads.
    pub fn files(&self) -> Vec<&Path> {
        let mut out = vec![self.cert_file.as_path(), self.key_file.as_path()];
        out.extend(self.client_ca_file.as_deref());
        out.extend(self.spiffe_bundles.values().map(PathBuf::as_path));
        out
    }

    /// Whether every client must present a certificate.
    pub fn requires_client_certs(&self) -> bool {
        (self.client_ca_file.is_some() || !self.spiffe_bundles.is_empty()) && !self.client_cert_optional
    }

    /// The config section's own contradictions, named under `key`.
    pub fn problem(&self, key: &str) -> Option<String> {
        (self.client_ca_file.is_some() && !self.spiffe_bundles.is_empty())
            .then(|| format!("{key}: client_ca_file and spiffe_bundles exclude each other"))
    }
}

/// An outbound connection's TLS: whom to trust and, optionally, who we are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM CA bundle the server must chain to; absent: the Mozilla roots
    /// built into the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name checked against the server's certificate, when it differs from
    /// the host in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl ClientTlsConfig {
    /// The files it reads.
    pub fn files(&self) -> Vec<&Path> {
        [&self.ca_file, &self.cert_file, &self.key_file].into_iter().flatten().map(PathBuf::as_path).collect()
    }
}

/// Why TLS material could not be used; every variant names the config key
/// and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {}: {source}", path.display())]
    Read { key: String, path: PathBuf, source: std::io::Error },
    #[error("{key} {}: {what}", path.display())]
    Pem { key: String, path: PathBuf, what: String },
    #[error("{key}: {what}")]
    Setup { key: String, what: String },
}

impl From<TlsError> for crate::core::exit::ConfigProblem {
    fn from(e: TlsError) -> Self {
        crate::core::exit::ConfigProblem(e.to_string())
    }
}

/// The crypto provider every config is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; at least one.
pub fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, key, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, key, "no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            pem_error(path, key, "no PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)".into())
        }
        e => pem_error(path, key, format!("malformed PEM: {e}")),
    })
}

/// A root store from a PEM CA bundle.
pub(crate) fn load_roots(path: &Path, key: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path, key)? {
        roots.add(cert).map_err(|e| pem_error(path, key, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key: key.to_owned(), path: path.to_owned(), source })
}

fn pem_error(path: &Path, key: &str, what: String) -> TlsError {
    TlsError::Pem { key: key.to_owned(), path: path.to_owned(), what }
}

#[cfg(test)]
pub(crate) mod testpki;

#[cfg(test)]
mod tests;
