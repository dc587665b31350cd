//! Who is calling: the SPIFFE ID of the X.509-SVID the connection presented
//! (its chain was verified at the handshake, core::tls::spiffe), else a
//! JWT-SVID bearer token (RFC 7519, SPIFFE JWT-SVID): signed by a key in
//! the JWKS of the trust domain its `sub` names, `exp` required, the
//! audience always checked, only asymmetric algorithms.

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use base64::Engine;
use http::{HeaderMap, StatusCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::JwtConfig;
use super::problem::Problem;
use crate::core::httpserve::Peer;
use crate::core::tls::spiffe::SpiffeId;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Svid,
    Jwt,
    Anonymous,
}

/// JWT-SVID verification: audiences and each trust domain's keys.
pub struct JwtVerifier {
    audience: Vec<String>,
    leeway_s: u64,
    keys: BTreeMap<String, JwkSet>,
}

/// Algorithms a JWT-SVID may be signed with (the SPIFFE JWT-SVID list).
const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl JwtVerifier {
    /// Reads every trust domain's JWKS file.
    pub fn load(cfg: &JwtConfig) -> anyhow::Result<JwtVerifier> {
        let mut keys = BTreeMap::new();
        for (td, path) in &cfg.bundles {
            SpiffeId::parse(&format!("spiffe://{td}")).map_err(|e| anyhow!("gateway.jwt.bundles: {e}"))?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("gateway.jwt.bundles.{td}: reading {}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| anyhow!("gateway.jwt.bundles.{td} {}: not a JWKS: {e}", path.display()))?;
            keys.insert(td.clone(), set);
        }
        let audience = cfg.audience.iter().filter(|a| !a.trim().is_empty()).cloned().collect();
        Ok(JwtVerifier { audience, leeway_s: cfg.leeway_s, keys })
    }

    /// A verifier for keys already read (the fuzz target's).
    pub fn with_keys(audience: Vec<String>, keys: BTreeMap<String, JwkSet>) -> JwtVerifier {
        JwtVerifier { audience, leeway_s: 0, keys }
    }

    /// The SPIFFE ID a token proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<SpiffeId, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not allowed for a JWT-SVID", header.alg));
        }
        // The subject picks the trust domain whose keys must have signed
        // it; it is trusted only once that signature checks.
        let sub = unverified_sub(token)?;
        let id = SpiffeId::parse(&sub).map_err(|e| format!("sub: {e}"))?;
        let set = self
            .keys
            .get(id.trust_domain())
            .ok_or_else(|| format!("no JWT bundle for trust domain {:?}", id.trust_domain()))?;
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => set.keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid)).collect(),
            None => set.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(format!(
                "no key {:?} in trust domain {:?}'s bundle",
                header.kid.unwrap_or_default(),
                id.trust_domain()
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.leeway = self.leeway_s;
        let mut last = String::new();
        for jwk in candidates {
            let key = match DecodingKey::from_jwk(jwk) {
                Ok(k) => k,
                Err(e) => {
                    last = format!("unusable key: {e}");
                    continue;
                }
            };
            match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
                Ok(_) => return Ok(id),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// The `sub` claim before the signature is checked.
fn unverified_sub(token: &str) -> Result<String, String> {
    let payload = token.split('.').nth(1).ok_or("malformed token: no payload")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("malformed token payload: {e}"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("malformed token claims: {e}"))?;
    claims["sub"].as_str().map(str::to_owned).ok_or_else(|| "the token has no sub".to_owned())
}

/// The caller of a request, or the 401 that answers it.
/// An SVID's ID is the connection's, read once at its first request.
pub fn identify<'p>(
    peer: Option<&'p Peer>,
    headers: &HeaderMap,
    jwt: Option<&JwtVerifier>,
    allow_anonymous: bool,
) -> Result<(Option<Cow<'p, SpiffeId>>, Proof), Problem> {
    if let Some(id) = peer.and_then(Peer::spiffe_id) {
        let id = id.map_err(|r| Problem::new(StatusCode::UNAUTHORIZED, "bad_svid", r.to_string()))?;
        return Ok((Some(Cow::Borrowed(id)), Proof::Svid));
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    match (bearer, jwt) {
        (Some(token), Some(jwt)) => match jwt.verify(token.trim()) {
            Ok(id) => Ok((Some(Cow::Owned(id)), Proof::Jwt)),
            Err(why) => Err(Problem::new(StatusCode::UNAUTHORIZED, "bad_jwt", format!("JWT-SVID refused: {why}"))),
        },
        _ if allow_anonymous => Ok((None, Proof::Anonymous)),
        _ => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "no_identity",
            "present an X.509-SVID (mutual TLS) or a JWT-SVID bearer token",
        )),
    }
}
