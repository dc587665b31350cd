//! JWT-SVIDs for tests: an ES256 key, its JWKS, and tokens it signs.
//! Shared by the unit tests and, through `#[path]`, the integration tests.

use serde_json::{Value, json};

/// A signing key and its JWKS, for tokens made in tests.
pub struct JwtIssuer {
    key: jsonwebtoken::EncodingKey,
    pub jwks: Value,
}

impl JwtIssuer {
    pub fn new(kid: &str) -> JwtIssuer {
        use base64::Engine;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
        JwtIssuer { key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()), jwks }
    }

    pub fn token(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}
