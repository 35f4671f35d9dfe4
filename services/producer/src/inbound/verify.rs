//! Signature verification, one pure function per provider, exactly as each
//! provider documents it. No I/O and no clock: the caller passes the time.
//! Every comparison of a signature is constant-time (`Mac::verify_slice`,
//! or `subtle` inside `hookfleet_signing::verify`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hookfleet_signing::SigningSecret;
use sha2::Sha256;

/// How far a signed timestamp may be from now, either way (Stripe's and
/// the Standard Webhooks libraries' default).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a request was not accepted as the provider's. Each is a 401, and a
/// metric label (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature header is missing")]
    MissingSignature,
    #[error("the signature header is malformed")]
    MalformedSignature,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the signed timestamp is more than 5 minutes away from now")]
    StaleTimestamp,
}

impl Rejection {
    /// A short, stable name for metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
        }
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn check_time(timestamp: i64, now: i64) -> Result<(), Rejection> {
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(Rejection::StaleTimestamp);
    }
    Ok(())
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn github(secret: &str, header: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let header = header.ok_or(Rejection::MissingSignature)?;
    let tag = header
        .strip_prefix("sha256=")
        .and_then(hex_decode)
        .ok_or(Rejection::MalformedSignature)?;
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| Rejection::BadSignature)
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`;
/// any one of several `v1` may match (Stripe sends one per active secret),
/// other schemes (`v0`) are ignored, and `t` must be within the tolerance.
/// The key is the whole `whsec_...` string, as Stripe's libraries use it.
pub fn stripe(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), Rejection> {
    let header = header.ok_or(Rejection::MissingSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.extend(hex_decode(hex)),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejection::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    let mut signed = mac(secret.as_bytes());
    signed.update(timestamp.to_string().as_bytes());
    signed.update(b".");
    signed.update(body);
    // Each candidate is checked in constant time against its own copy.
    let matched = signatures
        .iter()
        .any(|tag| signed.clone().verify_slice(tag).is_ok());
    if !matched {
        return Err(Rejection::BadSignature);
    }
    check_time(timestamp, now)
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`.
pub fn shopify(secret: &str, header: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let header = header.ok_or(Rejection::MissingSignature)?;
    let tag = STANDARD
        .decode(header.trim())
        .map_err(|_| Rejection::MalformedSignature)?;
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| Rejection::BadSignature)
}

/// The Standard Webhooks headers of a request.
#[derive(Debug, Clone, Copy)]
pub struct StandardHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key,
/// "<id>.<timestamp>.<body>")>` (several, space-separated, during a
/// rotation), the key being the base64 part of `whsec_...`, and
/// `webhook-timestamp` within the spec's tolerance either way.
pub fn standard_webhooks(
    secret: &SigningSecret,
    headers: StandardHeaders<'_>,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let signature = headers.signature.ok_or(Rejection::MissingSignature)?;
    let id = headers.id.ok_or(Rejection::MalformedSignature)?;
    let timestamp = headers
        .timestamp
        .and_then(|t| t.trim().parse::<i64>().ok())
        .ok_or(Rejection::MalformedSignature)?;
    if !hookfleet_signing::verify(secret, signature, id, timestamp, body) {
        return Err(Rejection::BadSignature);
    }
    check_time(timestamp, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac_of(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut m = mac(key);
        m.update(message);
        m.finalize().into_bytes().to_vec()
    }

    // GitHub's documented example ("Validating webhook deliveries").
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_accepts_its_documented_example() {
        assert_eq!(
            github(GITHUB_SECRET, Some(GITHUB_SIGNATURE), GITHUB_BODY),
            Ok(())
        );
    }

    #[test]
    fn github_refuses_changes_and_bad_headers() {
        assert_eq!(
            github(GITHUB_SECRET, Some(GITHUB_SIGNATURE), b"Hello, World?"),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            github("another secret", Some(GITHUB_SIGNATURE), GITHUB_BODY),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            github(GITHUB_SECRET, None, GITHUB_BODY),
            Err(Rejection::MissingSignature)
        );
        // The SHA-1 header's form, and hex that is not hex.
        for bad in [
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=zz",
            "sha256=abc",
        ] {
            assert_eq!(
                github(GITHUB_SECRET, Some(bad), GITHUB_BODY),
                Err(Rejection::MalformedSignature),
                "{bad}"
            );
        }
    }

    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_BODY: &[u8] = br#"{"id": "evt_1", "type": "invoice.paid"}"#;

    /// A header built as Stripe documents it ("Verify manually").
    fn stripe_header(secret: &str, t: i64) -> String {
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(STRIPE_BODY);
        format!(
            "t={t},v1={},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            hex(&hmac_of(secret.as_bytes(), &signed))
        )
    }

    #[test]
    fn stripe_accepts_any_v1_within_the_tolerance() {
        let now = 1_700_000_000;
        let header = stripe_header(STRIPE_SECRET, now - 299);
        assert_eq!(
            stripe(STRIPE_SECRET, Some(&header), STRIPE_BODY, now),
            Ok(())
        );
        // During a rotation Stripe sends one v1 per secret.
        let old = stripe_header("whsec_old", now);
        let new = stripe_header(STRIPE_SECRET, now);
        let v1 = new.split(',').nth(1).unwrap();
        let both = format!("{},{v1}", old.split(",v0").next().unwrap());
        assert_eq!(stripe(STRIPE_SECRET, Some(&both), STRIPE_BODY, now), Ok(()));
    }

    #[test]
    fn stripe_refuses_stale_timestamps_bad_signatures_and_malformed_headers() {
        let now = 1_700_000_000;
        let stale = stripe_header(STRIPE_SECRET, now - 301);
        assert_eq!(
            stripe(STRIPE_SECRET, Some(&stale), STRIPE_BODY, now),
            Err(Rejection::StaleTimestamp)
        );
        let header = stripe_header("whsec_other", now);
        assert_eq!(
            stripe(STRIPE_SECRET, Some(&header), STRIPE_BODY, now),
            Err(Rejection::BadSignature)
        );
        // The timestamp is signed: changing it breaks the signature.
        let good = stripe_header(STRIPE_SECRET, now);
        let moved = good.replacen(&format!("t={now}"), &format!("t={}", now + 1), 1);
        assert_eq!(
            stripe(STRIPE_SECRET, Some(&moved), STRIPE_BODY, now),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            stripe(STRIPE_SECRET, None, STRIPE_BODY, now),
            Err(Rejection::MissingSignature)
        );
        for bad in ["v1=abcd", "t=12", "garbage"] {
            assert_eq!(
                stripe(STRIPE_SECRET, Some(bad), STRIPE_BODY, now),
                Err(Rejection::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn shopify_verifies_the_base64_hmac_of_the_body() {
        let secret = "shpss_app_secret";
        let body = br#"{"id": 820982911946154508, "email": "jon@example.com"}"#;
        let header = STANDARD.encode(hmac_of(secret.as_bytes(), body));
        assert_eq!(shopify(secret, Some(&header), body), Ok(()));
        assert_eq!(
            shopify("other", Some(&header), body),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            shopify(secret, Some("not base64!"), body),
            Err(Rejection::MalformedSignature)
        );
        assert_eq!(
            shopify(secret, None, body),
            Err(Rejection::MissingSignature)
        );
    }

    // The Standard Webhooks specification's test vector.
    #[test]
    fn standard_webhooks_accepts_the_spec_vector_within_the_tolerance() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let headers = StandardHeaders {
            id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            timestamp: Some("1614265330"),
            signature: Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        };
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_webhooks(&secret, headers, body, 1614265330),
            Ok(())
        );
        assert_eq!(
            standard_webhooks(&secret, headers, body, 1614265330 + 301),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(
            standard_webhooks(&secret, headers, body, 1614265330 - 301),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(
            standard_webhooks(&secret, headers, b"{}", 1614265330),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            standard_webhooks(
                &secret,
                StandardHeaders {
                    signature: None,
                    ..headers
                },
                body,
                1614265330
            ),
            Err(Rejection::MissingSignature)
        );
        assert_eq!(
            standard_webhooks(
                &secret,
                StandardHeaders {
                    timestamp: Some("yesterday"),
                    ..headers
                },
                body,
                1614265330
            ),
            Err(Rejection::MalformedSignature)
        );
    }
}
