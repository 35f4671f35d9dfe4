//! Sealing signing secrets (DESIGN.md invariant 8): they are stored in
//! Postgres and carried inside delivery tasks only as XChaCha20-Poly1305
//! ciphertext under a key that the producer and the workers share. The
//! associated data (the "context") binds a sealed secret to where it may
//! be used: at rest, the endpoint id; inside a delivery task, the tenant,
//! endpoint and URL (`hookfleet_contract::task_secret_context`), so a task
//! copied with another URL does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const VERSION: &str = "v1.";
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("secrets.key must be 32 random bytes in base64 (for example: openssl rand -base64 32)")]
    BadKey,
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the sealed secret does not open with this key (wrong secrets.key, or tampered)")]
    WontOpen,
}

/// Seals and opens secrets. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// From the configured key: base64 of exactly 32 bytes.
    pub fn from_base64(key: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self { cipher })
    }

    /// A fresh random key in the configured form, for set-up scripts and
    /// tests.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    /// `v1.` + base64(nonce || ciphertext), bound to `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_else(|_| unreachable!("encryption of a short secret cannot fail"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let encoded = sealed.strip_prefix(VERSION).ok_or(SealError::Malformed)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SealError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::WontOpen)?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }
}

impl Sealer {
    /// Opens `sealed` under context `from` and seals it again under `to`:
    /// a secret stored for an endpoint becomes one bound to a task's
    /// tenant, endpoint and URL.
    pub fn reseal(&self, sealed: &str, from: &str, to: &str) -> Result<String, SealError> {
        Ok(self.seal(&self.open(sealed, from)?, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_key_and_context() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let sealed = sealer.seal("whsec_abc", "ep_1");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(sealer.open(&sealed, "ep_1").unwrap(), "whsec_abc");
        assert_eq!(sealer.open(&sealed, "ep_2"), Err(SealError::WontOpen));
        let other = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        assert_eq!(other.open(&sealed, "ep_1"), Err(SealError::WontOpen));
        assert_eq!(sealer.open("whsec_abc", "ep_1"), Err(SealError::Malformed));
        // Sealing twice gives different ciphertexts (random nonces).
        assert_ne!(sealer.seal("whsec_abc", "ep_1"), sealed);
    }

    #[test]
    fn resealing_moves_a_secret_to_another_context_only() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let stored = sealer.seal("whsec_abc", "ep_1");
        let task = sealer
            .reseal(&stored, "ep_1", "acme/ep_1/https://a")
            .unwrap();
        assert_eq!(
            sealer.open(&task, "acme/ep_1/https://a").unwrap(),
            "whsec_abc"
        );
        assert_eq!(sealer.open(&task, "ep_1"), Err(SealError::WontOpen));
        assert_eq!(
            sealer.open(&task, "acme/ep_1/https://b"),
            Err(SealError::WontOpen)
        );
        assert_eq!(
            sealer.reseal(&stored, "ep_2", "x"),
            Err(SealError::WontOpen)
        );
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert_eq!(
            Sealer::from_base64("c2hvcnQ=").unwrap_err(),
            SealError::BadKey
        );
        assert_eq!(Sealer::from_base64("!!").unwrap_err(), SealError::BadKey);
        assert!(
            format!(
                "{:?}",
                Sealer::from_base64(&Sealer::generate_key()).unwrap()
            ) == "Sealer(..)"
        );
    }
}
