//! ACME (RFC 8555) as a certificate source, with instant-acme: an account
//! made on first use and kept in the store (its key sealed), orders for the
//! certificate's DNS names and IP addresses, http-01 challenges answered by
//! certguard's own listener (`http01_listen`) or dns-01 through a hook
//! command (wildcards), a key generated here and a CSR
//! (the server never sees the key), and the chain it returns. Where the
//! server offers ACME Renewal Information (RFC 9773), its suggested window
//! sets the renewal time and a renewal order names the certificate it
//! replaces. Tested against Pebble (whose Debian build offers no ARI: that
//! path is covered by the scheduling unit test only).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ca::{CA_TABLE, Issued};
use super::config::{AcmeConfig, ChallengeKind, ManagedCert};
use super::seal::Sealer;
use crate::core::httpserve::{respond, serve};
use crate::core::store::{Durability, Store};
use tokio_util::sync::CancellationToken;

/// http-01 tokens being validated: token → key authorization.
pub type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// How long one order may take from creation to certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// tls-alpn-01 validation certificates being served: name → certificate.
pub type AlpnCerts = Arc<Mutex<HashMap<String, Arc<rustls::sign::CertifiedKey>>>>;

/// The ALPN protocol of tls-alpn-01 (RFC 8737).
const ACME_TLS: &[u8] = b"acme-tls/1";

/// The ACME source of a running certguard.
pub struct Acme {
    pub cfg: AcmeConfig,
    pub tokens: Tokens,
    pub alpn_certs: AlpnCerts,
    account: tokio::sync::Mutex<Option<Account>>,
}

/// A server's renewal suggestion (RFC 9773): the window, Unix seconds, and
/// when to ask again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalHint {
    pub start: u64,
    pub end: u64,
    pub ask_again_in: Duration,
}

impl Acme {
    pub fn new(cfg: AcmeConfig, tokens: Tokens) -> Acme {
        Acme { cfg, tokens, alpn_certs: AlpnCerts::default(), account: tokio::sync::Mutex::new(None) }
    }

    fn builder(&self) -> anyhow::Result<instant_acme::AccountBuilder> {
        Ok(match &self.cfg.server_ca_file {
            Some(path) => Account::builder_with_root(path)
                .with_context(|| format!("certguard.acme.server_ca_file {}", path.display()))?,
            None => Account::builder()?,
        })
    }

    /// The account: from memory, else from the store, else made now.
    async fn account(&self, store: &Store, sealer: &Sealer) -> anyhow::Result<Account> {
        let mut held = self.account.lock().await;
        if let Some(a) = held.as_ref() {
            return Ok(a.clone());
        }
        let stored = store
            .read(|txn| {
                let Ok(t) = txn.open_table(CA_TABLE) else { return Ok(None) };
                Ok(t.get("acme_account")?.map(|v| v.value().to_vec()))
            })
            .await?;
        let url = &self.cfg.directory_url;
        let mut restored = None;
        if let Some(sealed) = stored {
            let json = sealer.open("acme account", &sealed)?;
            let creds: AccountCredentials = serde_json::from_slice(&json)?;
            match self.builder()?.from_credentials(creds).await {
                Ok(a) => restored = Some(a),
                // A test server forgets its accounts on restart; a real one
                // may have deactivated it. A new account is the way on.
                Err(e) => {
                    tracing::warn!(directory = %url, error = %e, "stored ACME account unusable; making a new one")
                }
            }
        }
        let account = match restored {
            Some(a) => a,
            None => {
                let contact: Vec<String> = self.cfg.contact.iter().map(|c| format!("mailto:{c}")).collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
                let (account, creds) = self
                    .builder()?
                    .create(&new, url.clone(), None)
                    .await
                    .with_context(|| format!("creating an ACME account at {url}"))?;
                let sealed = sealer.seal("acme account", &serde_json::to_vec(&creds)?)?;
                store
                    .write(Durability::Immediate, move |txn| {
                        txn.open_table(CA_TABLE)?.insert("acme_account", sealed.as_slice())?;
                        Ok(())
                    })
                    .await?;
                tracing::info!(directory = %url, "certguard made an ACME account");
                account
            }
        };
        *held = Some(account.clone());
        Ok(account)
    }

    /// The server's renewal window for the certificate `ari_id` (see
    /// `ari_id`); None when the server offers no ARI.
    pub async fn renewal_hint(
        &self,
        ari_id: &str,
        store: &Store,
        sealer: &Sealer,
    ) -> anyhow::Result<Option<RenewalHint>> {
        let account = self.account(store, sealer).await?;
        let id = parse_ari_id(ari_id).ok_or_else(|| anyhow::anyhow!("ARI certificate id {ari_id:?} is malformed"))?;
        match account.renewal_info(&id).await {
            Ok((info, ask_again_in)) => {
                let unix = |t: time::OffsetDateTime| t.unix_timestamp().max(0) as u64;
                let (start, end) = (unix(info.suggested_window.start), unix(info.suggested_window.end));
                Ok(Some(RenewalHint { start, end: end.max(start), ask_again_in }))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(e).context("ACME renewal information"),
        }
    }

    /// Orders a certificate for `spec` and returns it once issued;
    /// `replaces` is the ARI id of the certificate it renews, passed on
    /// when the server offers ARI.
    pub async fn issue(
        &self,
        spec: &ManagedCert,
        replaces: Option<&str>,
        store: &Store,
        sealer: &Sealer,
    ) -> anyhow::Result<Issued> {
        let account = self.account(store, sealer).await?;
        let mut ids: Vec<Identifier> = spec.dns_names.iter().cloned().map(Identifier::Dns).collect();
        ids.extend(spec.ip_addresses.iter().copied().map(Identifier::Ip));
        let replaced = replaces.and_then(parse_ari_id);
        let mut new_order = NewOrder::new(&ids);
        if let Some(r) = replaced {
            new_order = new_order.replaces(r);
        }
        let mut order = match account.new_order(&new_order).await {
            // No ARI at this server (any more): a plain order.
            Err(instant_acme::Error::Unsupported(_)) => account.new_order(&NewOrder::new(&ids)).await,
            other => other,
        }
        .context("ACME new order")?;
        let mut answered = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("ACME authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => anyhow::bail!("ACME authorization for {:?} is {other:?}", authz.identifier()),
            }
            let kind = match self.cfg.challenge {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
                ChallengeKind::Dns01 => ChallengeType::Dns01,
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| anyhow::anyhow!("the ACME server offers no {kind:?} challenge"))?;
            match self.cfg.challenge {
                ChallengeKind::Http01 => {
                    let token = challenge.token.clone();
                    let proof = challenge.key_authorization().as_str().to_owned();
                    self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), proof);
                    answered.push(Answered::Token(token));
                }
                ChallengeKind::TlsAlpn01 => {
                    let name = challenge.identifier().to_string();
                    let cert = alpn_cert(&name, challenge.key_authorization().digest().as_ref())?;
                    self.alpn_certs.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), Arc::new(cert));
                    answered.push(Answered::Alpn(name));
                }
                ChallengeKind::Dns01 => {
                    let name =
                        format!("_acme-challenge.{}.", challenge.identifier().to_string().trim_start_matches("*."));
                    let value = challenge.key_authorization().dns_value();
                    self.dns01("present", &name, &value).await?;
                    answered.push(Answered::Record(name, value));
                }
            }
            challenge.set_ready().await.context("ACME challenge ready")?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await;
        let finished = async {
            let status = status.context("waiting for the ACME order")?;
            anyhow::ensure!(status == OrderStatus::Ready, "ACME order ended {status:?} (validation failed)");
            let (csr, key_pem) = csr(spec)?;
            order.finalize_csr(&csr).await.context("ACME finalize")?;
            let chain = order.poll_certificate(&retries).await.context("ACME certificate")?;
            anyhow::Ok((chain, key_pem))
        }
        .await;
        for a in answered {
            match a {
                Answered::Token(t) => {
                    self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&t);
                }
                Answered::Alpn(name) => {
                    self.alpn_certs.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                }
                Answered::Record(name, value) => {
                    if let Err(e) = self.dns01("cleanup", &name, &value).await {
                        tracing::warn!(record = %name, error = %format!("{e:#}"), "certguard: dns-01 cleanup failed");
                    }
                }
            }
        }
        let (chain_pem, key_pem) = finished?;
        issued(chain_pem, key_pem)
    }
}

/// A challenge answered, to take back once the order is done.
enum Answered {
    Token(String),
    Alpn(String),
    Record(String, String),
}

impl Acme {
    /// Runs the dns-01 hook: `<hook…> present|cleanup <record name> <value>`.
    async fn dns01(&self, action: &str, name: &str, value: &str) -> anyhow::Result<()> {
        let mut argv = self.cfg.dns01_hook.clone();
        argv.extend([action.to_owned(), name.to_owned(), value.to_owned()]);
        super::install::run(&argv, Duration::from_secs(self.cfg.dns01_hook_timeout_s))
            .await
            .with_context(|| format!("dns-01 hook ({action} {name})"))
    }
}

/// A fresh key of the certificate's type and a CSR for its names.
fn csr(spec: &ManagedCert) -> anyhow::Result<(Vec<u8>, String)> {
    let key = super::keys::generate(spec.key_type)?;
    let mut names: Vec<String> = spec.dns_names.clone();
    names.extend(spec.ip_addresses.iter().map(|ip| ip.to_string()));
    let params = rcgen::CertificateParams::new(names)?;
    let request = params.serialize_request(&key)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}

/// The certificate's ARI id (RFC 9773 §4.1: base64url authority key id
/// "." serial), None without an authority key identifier.
pub fn ari_id(leaf_der: &[u8]) -> Option<String> {
    let der = CertificateDer::from(leaf_der);
    CertificateIdentifier::try_from(&der).ok().map(|id| id.to_string())
}

/// An ARI id read back from the store.
fn parse_ari_id(id: &str) -> Option<CertificateIdentifier<'static>> {
    let (aki, serial) = id.split_once('.')?;
    Some(CertificateIdentifier { authority_key_identifier: aki.to_owned().into(), serial: serial.to_owned().into() })
}

/// When to renew by a server's hint: at once when the window has begun,
/// else at the point `jitter` ∈ [0, 1) of the way through it (RFC 9773
/// §4.2), never later than 2% of the lifetime before expiry.
pub fn hinted_renewal(hint: &RenewalHint, now: u64, jitter: f64, not_before: u64, not_after: u64) -> u64 {
    let at = if hint.start <= now { now } else { hint.start + ((hint.end - hint.start) as f64 * jitter) as u64 };
    let margin = not_after.saturating_sub(not_before) / 50;
    at.min(not_after.saturating_sub(margin))
}

/// The issued chain as certguard keeps it: serial and validity read from
/// the leaf.
fn issued(chain_pem: String, key_pem: String) -> anyhow::Result<Issued> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("the ACME server returned no certificate"))??;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| anyhow::anyhow!("ACME leaf: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    let serial = cert.raw_serial().iter().map(|b| format!("{b:02X}")).collect();
    Ok(Issued {
        serial,
        generation: 0,
        issued_at: SystemTime::now(),
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        leaf_der: leaf.to_vec(),
        chain_pem,
        key_pem,
    })
}

/// Answers http-01 validation requests from the ACME server on
/// `listener` until `shutdown`: `GET /.well-known/acme-challenge/<token>`
/// with the key authorization, 404 for anything else. Public by nature (the
/// ACME server must reach it); it serves only challenges in flight.
pub async fn serve_http01(listener: tokio::net::TcpListener, tokens: Tokens, shutdown: CancellationToken) {
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let found = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")
            .and_then(|token| tokens.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned());
        async move {
            Ok::<_, std::convert::Infallible>(match found {
                Some(proof) => respond("/.well-known/acme-challenge", http::StatusCode::OK, "text/plain", proof),
                None => respond("", http::StatusCode::NOT_FOUND, "text/plain", "no such challenge\n"),
            })
        }
    };
    serve("certguard", listener, None, handler, shutdown, Duration::from_secs(1)).await;
}

/// The self-signed certificate tls-alpn-01 asks for: the name, and the
/// SHA-256 of the key authorization in a critical acmeIdentifier extension.
fn alpn_cert(name: &str, digest: &[u8]) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let signing = crate::core::tls::provider().key_provider.load_private_key(private)?;
    Ok(rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// Picks the validation certificate for the name a tls-alpn-01 handshake
/// asks for; other handshakes get none and fail.
#[derive(Debug)]
struct AlpnResolver(AlpnCerts);

impl rustls::server::ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let acme = hello.alpn().is_some_and(|mut p| p.any(|p| p == ACME_TLS));
        let name = hello.server_name()?;
        acme.then(|| self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()).flatten()
    }
}

/// Answers tls-alpn-01 validation handshakes (ALPN `acme-tls/1`) on
/// `listener` until `shutdown`; only names with a challenge in flight get a
/// certificate.
pub async fn serve_tls_alpn01(listener: tokio::net::TcpListener, certs: AlpnCerts, shutdown: CancellationToken) {
    let config = rustls::ServerConfig::builder_with_provider(crate::core::tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(Arc::new(AlpnResolver(certs))));
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "certguard cannot serve tls-alpn-01");
            return;
        }
    };
    config.alpn_protocols = vec![ACME_TLS.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // The handshake is the answer; the validator then closes.
            let _ = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
        });
    }
}
