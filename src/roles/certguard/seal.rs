//! Private keys at rest: the CA keys are kept in the store only sealed with
//! ChaCha20-Poly1305 under a key-encryption key read from a file, so a copy
//! of the store (a backup, a stolen disk image without that file) does not
//! give away the CA. The key file holds 64 hex digits; certguard creates one
//! (mode 0600) when it is missing.
//!
//! Sealed value: `12-byte random nonce || ciphertext || 16-byte tag`, with
//! what the value is (e.g. "root key") as associated data, so one sealed
//! value cannot be passed off as another.

use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a key file or a sealed value is unusable; names the file.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("certguard.key_file {path}: {what}")]
    KeyFile { path: String, what: String },
    #[error("sealed {what}: does not open with this key file (another key, or damaged)")]
    Open { what: String },
    #[error("no secure random numbers: {0}")]
    Random(String),
}

/// The key-encryption key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// Reads the key file, creating it with a fresh random key when it does
    /// not exist.
    pub fn open_or_create(path: &Path) -> Result<Sealer, SealError> {
        let bad = |what: String| SealError::KeyFile { path: path.display().to_string(), what };
        let rng = SystemRandom::new();
        let bytes = match std::fs::read_to_string(path) {
            Ok(text) => decode_hex(text.trim()).ok_or_else(|| bad("must hold 64 hex digits (32 bytes)".into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rng.fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
                let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
                super::install::write_atomically(path, format!("{text}\n").as_bytes(), 0o600)
                    .map_err(|e| bad(format!("cannot create: {e:#}")))?;
                tracing::info!(key_file = %path.display(), "certguard created a new key-encryption key");
                key.to_vec()
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| bad("not a 32-byte key".into()))?;
        Ok(Sealer { key: LessSafeKey::new(key), rng })
    }

    /// Encrypts `plain`, bound to `what`.
    pub fn seal(&self, what: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(what.as_bytes()), &mut body)
            .map_err(|_| SealError::Open { what: what.to_owned() })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a value sealed for `what`.
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Open { what: what.to_owned() };
        if sealed.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut body = body.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(what.as_bytes()), &mut body).map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..32).map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let sealer = Sealer::open_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = sealer.seal("root key", b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        // The same file opens it again; another label, a flipped bit or
        // another key do not.
        let again = Sealer::open_or_create(&path).unwrap();
        assert_eq!(again.open("root key", &sealed).unwrap(), b"secret");
        assert!(again.open("intermediate key", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(again.open("root key", &flipped).is_err());
        assert!(again.open("root key", &sealed[..10]).is_err());
        let other = Sealer::open_or_create(&dir.path().join("other")).unwrap();
        assert!(other.open("root key", &sealed).unwrap_err().to_string().contains("does not open"));
        std::fs::write(&path, "not hex").unwrap();
        assert!(Sealer::open_or_create(&path).err().unwrap().to_string().contains("64 hex digits"));
    }
}
