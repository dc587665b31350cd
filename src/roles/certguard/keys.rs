//! Fresh private keys of a certificate's key type, the one place that maps
//! `key_type` to an algorithm for the embedded CA and for ACME CSRs alike.
//!
//! ring signs with every supported type but cannot generate RSA keys, so RSA
//! keys come from the `rsa` crate as PKCS#8 and are signed with by ring.

use anyhow::Context;
use rcgen::KeyPair;
use rsa::pkcs8::EncodePrivateKey;

use super::config::KeyType;

/// A new key pair of `kind`.
pub fn generate(kind: KeyType) -> anyhow::Result<KeyPair> {
    let bits = match kind {
        KeyType::EcdsaP256 => return Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
        KeyType::Ed25519 => return Ok(KeyPair::generate_for(&rcgen::PKCS_ED25519)?),
        KeyType::Rsa2048 => 2048,
        KeyType::Rsa3072 => 3072,
        KeyType::Rsa4096 => 4096,
    };
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .with_context(|| format!("generating an RSA-{bits} key"))?;
    let der = key.to_pkcs8_der().context("encoding the RSA key as PKCS#8")?;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)?)
}
