//! Standard Webhooks signing (<https://www.standardwebhooks.com>).
//!
//! A signature is `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")),
//! where the secret is the base64-decoded part of `whsec_...`. During a
//! secret rotation a request carries one signature per active secret,
//! space-separated, and a receiver accepts the request if any one verifies.
//! This crate is pure: no I/O, no clock.

mod asymmetric;
mod seal;
mod stamp;
mod token;

pub use asymmetric::{BadKey, Ed25519Key, verify_v1a};
pub use seal::{SealError, Sealer};
pub use stamp::Stamper;
pub use token::{IssuedToken, hash_token};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// Why a secret or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("signing secret must start with whsec_ followed by base64")]
    BadSecret,
    #[error("signing secret must decode to 24 to 64 bytes")]
    BadSecretLength,
}

/// A webhook signing secret. Its `Debug` form never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Parses `whsec_<base64>`. The Standard Webhooks libraries accept the
    /// secret without its prefix too, and so do we.
    pub fn parse(raw: &str) -> Result<Self, SigningError> {
        let encoded = raw.strip_prefix(PREFIX).unwrap_or(raw);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SigningError::BadSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SigningError::BadSecretLength);
        }
        Ok(Self { key })
    }

    /// The `whsec_...` form, for showing to the endpoint's owner.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One `v1,<base64>` signature.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// The `webhook-signature` header value for every active secret.
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True if any `v1` signature in `header` was made with `secret`. Compared
/// in constant time. Timestamp tolerance is the receiver's policy and is
/// not checked here.
pub fn verify(
    secret: &SigningSecret,
    header: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    use subtle::ConstantTimeEq;
    let expected = secret.sign(msg_id, timestamp, body);
    header
        .split(' ')
        .filter(|sig| sig.starts_with("v1,"))
        .any(|sig| bool::from(sig.as_bytes().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(MSG_ID, TIMESTAMP, BODY), EXPECTED);
        assert!(verify(&secret, EXPECTED, MSG_ID, TIMESTAMP, BODY));
    }

    #[test]
    fn verification_fails_on_any_change() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert!(!verify(&secret, EXPECTED, MSG_ID, TIMESTAMP + 1, BODY));
        assert!(!verify(&secret, EXPECTED, "msg_other", TIMESTAMP, BODY));
        assert!(!verify(&secret, EXPECTED, MSG_ID, TIMESTAMP, b"{}"));
        let other = SigningSecret::generate();
        assert!(!verify(&other, EXPECTED, MSG_ID, TIMESTAMP, BODY));
    }

    #[test]
    fn rotation_header_carries_every_secret() {
        let old = SigningSecret::parse(SECRET).unwrap();
        let new = SigningSecret::generate();
        let header = signature_header(&[new.clone(), old.clone()], MSG_ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, &header, MSG_ID, TIMESTAMP, BODY));
        assert!(verify(&new, &header, MSG_ID, TIMESTAMP, BODY));
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let secret = SigningSecret::generate();
        let shown = secret.expose();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&shown).unwrap(), secret);
        assert_eq!(
            SigningSecret::parse("whsec_!!!"),
            Err(SigningError::BadSecret)
        );
        assert_eq!(
            SigningSecret::parse("whsec_c2hvcnQ="),
            Err(SigningError::BadSecretLength)
        );
        assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
    }
}
