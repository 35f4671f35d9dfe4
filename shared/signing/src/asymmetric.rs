//! Standard Webhooks `v1a`: ed25519 signatures of `id.timestamp.body`.
//! Receivers verify with the public key (`whpk_` + base64), so they never
//! hold a secret that could forge a webhook.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;

const PRIVATE_PREFIX: &str = "whsk_";
const PUBLIC_PREFIX: &str = "whpk_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an ed25519 key must be {0} followed by base64 of 32 bytes")]
pub struct BadKey(&'static str);

/// An endpoint's ed25519 signing key. Its `Debug` form never shows it.
#[derive(Clone)]
pub struct Ed25519Key {
    key: SigningKey,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Key({})", self.public())
    }
}

fn message(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(msg_id.len() + body.len() + 24);
    message.extend_from_slice(msg_id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    message
}

impl Ed25519Key {
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Parses `whsk_` + base64 of the 32-byte seed.
    pub fn parse(raw: &str) -> Result<Self, BadKey> {
        let seed: [u8; 32] = raw
            .strip_prefix(PRIVATE_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(BadKey(PRIVATE_PREFIX))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The `whsk_` form, for sealing and storing.
    pub fn expose(&self) -> String {
        format!("{PRIVATE_PREFIX}{}", STANDARD.encode(self.key.to_bytes()))
    }

    /// The `whpk_` public key receivers verify with.
    pub fn public(&self) -> String {
        format!(
            "{PUBLIC_PREFIX}{}",
            STANDARD.encode(self.key.verifying_key().to_bytes())
        )
    }

    /// One `v1a,<base64>` signature.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let signature = self.key.sign(&message(msg_id, timestamp, body));
        format!("v1a,{}", STANDARD.encode(signature.to_bytes()))
    }
}

/// True if any `v1a` signature in `header` verifies with `public_key`
/// (`whpk_...`).
pub fn verify_v1a(
    public_key: &str,
    header: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    let Some(key) = public_key
        .strip_prefix(PUBLIC_PREFIX)
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let message = message(msg_id, timestamp, body);
    header
        .split(' ')
        .filter_map(|sig| sig.strip_prefix("v1a,"))
        .filter_map(|b| STANDARD.decode(b).ok())
        .filter_map(|b| <[u8; 64]>::try_from(b).ok())
        .any(|b| key.verify(&message, &Signature::from_bytes(&b)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1a_signatures_verify_with_the_public_key_only() {
        let key = Ed25519Key::generate();
        let signature = key.sign("msg_1", 1614265330, b"{}");
        assert!(signature.starts_with("v1a,"));
        let header = format!("v1,abc {signature}");
        assert!(verify_v1a(
            &key.public(),
            &header,
            "msg_1",
            1614265330,
            b"{}"
        ));
        assert!(!verify_v1a(
            &key.public(),
            &header,
            "msg_1",
            1614265331,
            b"{}"
        ));
        let other = Ed25519Key::generate();
        assert!(!verify_v1a(
            &other.public(),
            &header,
            "msg_1",
            1614265330,
            b"{}"
        ));
    }

    #[test]
    fn keys_round_trip_and_never_show_in_debug() {
        let key = Ed25519Key::generate();
        let parsed = Ed25519Key::parse(&key.expose()).unwrap();
        assert_eq!(parsed.public(), key.public());
        assert!(key.public().starts_with("whpk_"));
        assert!(!format!("{key:?}").contains(&key.expose()));
        assert!(Ed25519Key::parse("whsk_short").is_err());
    }
}
