//! API tokens: random, shown once, stored as SHA-256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A freshly issued token: the token itself (for the caller, once) and what
/// is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub hash: String,
    /// The first characters, to tell tokens apart in listings.
    pub prefix: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedToken({}..)", self.prefix)
    }
}

impl IssuedToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("hf_{}", URL_SAFE_NO_PAD.encode(bytes));
        Self {
            hash: hash_token(&token),
            prefix: token[..10].to_owned(),
            token,
        }
    }
}

/// The stored form of a token: lowercase hex SHA-256.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let a = IssuedToken::generate();
        let b = IssuedToken::generate();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("hf_") && a.token.len() == 46);
        assert_eq!(a.hash, hash_token(&a.token));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.token));
    }
}
