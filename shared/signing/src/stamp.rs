//! Stamps: marks that hookfleet's own services put on messages they publish
//! where any broker client may publish too (the events exchange, the route
//! queue), such as "this event was checked against the catalogue". A
//! stamp is base64(HMAC-SHA256) over a context and the body, under a key
//! derived from `secrets.key`, which every hookfleet service holds and no
//! broker client does; so a client that copies the header name cannot
//! skip what the mark lets the router skip.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::seal::SealError;

/// Makes and checks stamps. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct Stamper {
    /// The HMAC keyed with the derived key, cloned for each stamp.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Stamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stamper(..)")
    }
}

impl Stamper {
    /// From the configured `secrets.key` (base64 of exactly 32 bytes). The
    /// stamp key is HMAC(secrets.key, "hookfleet stamp v1"), so the sealing
    /// key itself is used for one purpose only.
    pub fn from_base64(key: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let mut derive = hmac_with(&bytes);
        derive.update(b"hookfleet stamp v1");
        let derived = derive.finalize().into_bytes();
        Ok(Self {
            keyed: hmac_with(&derived),
        })
    }

    /// The stamp of `body` for `context`.
    pub fn stamp(&self, context: &str, body: &[u8]) -> String {
        STANDARD.encode(self.mac(context, body).finalize().into_bytes())
    }

    /// Whether `stamp` is this key's stamp of `body` for `context`
    /// (compared in constant time).
    pub fn verifies(&self, stamp: &str, context: &str, body: &[u8]) -> bool {
        let Ok(tag) = STANDARD.decode(stamp) else {
            return false;
        };
        self.mac(context, body).verify_slice(&tag).is_ok()
    }

    fn mac(&self, context: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        // The context's length first, so context and body cannot trade bytes.
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context.as_bytes());
        mac.update(body);
        mac
    }
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sealer;

    #[test]
    fn a_stamp_verifies_only_with_its_key_context_and_body() {
        let key = Sealer::generate_key();
        let stamper = Stamper::from_base64(&key).unwrap();
        let stamp = stamper.stamp("checked:acme:evt_1:a.b", b"{}");
        assert!(stamper.verifies(&stamp, "checked:acme:evt_1:a.b", b"{}"));
        // Another process with the same key agrees.
        assert!(Stamper::from_base64(&key).unwrap().verifies(
            &stamp,
            "checked:acme:evt_1:a.b",
            b"{}"
        ));
        assert!(!stamper.verifies(&stamp, "checked:acme:evt_2:a.b", b"{}"));
        assert!(!stamper.verifies(&stamp, "checked:acme:evt_1:a.b", b"{\"x\":1}"));
        assert!(!stamper.verifies("ingest", "checked:acme:evt_1:a.b", b"{}"));
        let other = Stamper::from_base64(&Sealer::generate_key()).unwrap();
        assert!(!other.verifies(&stamp, "checked:acme:evt_1:a.b", b"{}"));
        assert!(Stamper::from_base64("short").is_err());
    }
}
