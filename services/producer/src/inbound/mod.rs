//! Inbound sources: webhooks *from* providers (GitHub, Stripe, Shopify, any
//! Standard Webhooks sender), verified by the provider's own signature and
//! published, byte for byte, as the tenant's events. This module is the
//! pure part: which kinds exist, how each is verified ([`verify`]) and how
//! each names its event type and its delivery id.

pub mod verify;

use hookfleet_contract::{EventId, EventType};
use hookfleet_signing::SigningSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use verify::Rejection;

/// The providers a source can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Github,
    Stripe,
    Shopify,
    StandardWebhooks,
}

impl SourceKind {
    pub const ALL: [Self; 4] = [
        Self::Github,
        Self::Stripe,
        Self::Shopify,
        Self::StandardWebhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::StandardWebhooks => "standard_webhooks",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Whether hookfleet may make the secret up. Stripe and Shopify issue
    /// theirs; GitHub and Standard Webhooks senders take one they are given.
    pub fn can_generate_secret(self) -> bool {
        matches!(self, Self::Github | Self::StandardWebhooks)
    }

    /// A fresh secret: `whsec_` + base64 of 32 random bytes, which a
    /// Standard Webhooks sender needs and GitHub takes as any other string.
    pub fn generate_secret(self) -> String {
        SigningSecret::generate().expose()
    }

    /// Checks a secret given for this kind.
    pub fn check_secret(self, secret: &str) -> Result<(), String> {
        if secret.is_empty() || secret.chars().count() > 1024 {
            return Err("must be 1 to 1024 characters".into());
        }
        if self == Self::StandardWebhooks {
            SigningSecret::parse(secret).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The request headers verification and naming read, by lowercase name.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for axum::http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        axum::http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

/// Verifies a request against any of the source's secrets (the current
/// one, and the previous one during a rotation's grace period). The
/// rejection reported is the current secret's.
pub fn verify(
    kind: SourceKind,
    secrets: &[String],
    headers: &impl Headers,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let mut first = Err(Rejection::BadSignature);
    for (n, secret) in secrets.iter().enumerate() {
        let result = match kind {
            SourceKind::Github => verify::github(secret, headers.get("x-hub-signature-256"), body),
            SourceKind::Stripe => {
                verify::stripe(secret, headers.get("stripe-signature"), body, now)
            }
            SourceKind::Shopify => {
                verify::shopify(secret, headers.get("x-shopify-hmac-sha256"), body)
            }
            SourceKind::StandardWebhooks => match SigningSecret::parse(secret) {
                Ok(secret) => verify::standard_webhooks(
                    &secret,
                    verify::StandardHeaders {
                        id: headers.get("webhook-id"),
                        timestamp: headers.get("webhook-timestamp"),
                        signature: headers.get("webhook-signature"),
                    },
                    body,
                    now,
                ),
                Err(_) => Err(Rejection::BadSignature),
            },
        };
        if result.is_ok() {
            return Ok(());
        }
        if n == 0 {
            first = result;
        }
    }
    first
}

/// What a verified request is, as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub event_type: EventType,
    /// The provider's id of this delivery, the same when it retries.
    pub provider_id: String,
}

/// Why a verified request cannot be named as an event (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unnamed {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("payload field {0:?} is missing or not a string")]
    MissingField(&'static str),
    #[error("the payload is not a JSON object")]
    NotJson,
    #[error("event type {0:?}: {1}")]
    BadType(String, hookfleet_contract::DomainError),
}

/// The payload fields the kinds name events by.
#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    event_type: Option<serde_json::Value>,
    #[serde(default)]
    action: Option<serde_json::Value>,
}

fn string(value: &Option<serde_json::Value>) -> Option<&str> {
    value.as_ref().and_then(|v| v.as_str())
}

/// Names the event per the kind's rules: its type under `prefix`, and the
/// provider's delivery id.
pub fn identify(
    kind: SourceKind,
    prefix: &str,
    headers: &impl Headers,
    body: &[u8],
) -> Result<Identity, Unnamed> {
    let fields: Fields = serde_json::from_slice(body).map_err(|_| Unnamed::NotJson)?;
    let header = |name: &'static str| {
        headers
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or(Unnamed::MissingHeader(name))
    };
    let (suffix, provider_id) = match kind {
        SourceKind::Github => {
            let mut suffix = header("x-github-event")?.to_owned();
            if let Some(action) = string(&fields.action) {
                suffix = format!("{suffix}.{action}");
            }
            (suffix, header("x-github-delivery")?.to_owned())
        }
        SourceKind::Stripe => (
            string(&fields.event_type)
                .ok_or(Unnamed::MissingField("type"))?
                .to_owned(),
            string(&fields.id)
                .ok_or(Unnamed::MissingField("id"))?
                .to_owned(),
        ),
        SourceKind::Shopify => (
            header("x-shopify-topic")?.replace('/', "."),
            header("x-shopify-webhook-id")?.to_owned(),
        ),
        SourceKind::StandardWebhooks => (
            string(&fields.event_type).unwrap_or("event").to_owned(),
            header("webhook-id")?.to_owned(),
        ),
    };
    let raw = format!("{prefix}.{}", suffix.to_ascii_lowercase());
    let event_type = EventType::parse(&raw).map_err(|e| Unnamed::BadType(raw.clone(), e))?;
    Ok(Identity {
        event_type,
        provider_id,
    })
}

/// The event id of a provider's delivery through a source: the same for
/// every retry of it, so the router delivers it once, and distinct per
/// source. Readable (`src_...:<provider id>`) when the provider's id fits
/// the event id rules, else the source and a hash of the provider's id.
pub fn event_id(source_id: &str, provider_id: &str) -> EventId {
    EventId::parse(&format!("{source_id}:{provider_id}")).unwrap_or_else(|_| {
        let digest = Sha256::digest(provider_id.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        EventId::parse(&format!("{source_id}:h{hex}"))
            .unwrap_or_else(|_| unreachable!("a source id and hex make a valid event id"))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, &'static str>);

    impl Headers for Map {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> Map {
        Map(pairs.iter().copied().collect())
    }

    #[test]
    fn github_types_carry_the_action_when_there_is_one() {
        let h = headers(&[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        let named = identify(
            SourceKind::Github,
            "github",
            &h,
            br#"{"action": "opened", "number": 1}"#,
        )
        .unwrap();
        assert_eq!(named.event_type.as_str(), "github.pull_request.opened");
        assert_eq!(named.provider_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        let push = identify(SourceKind::Github, "gh", &h, br#"{"ref": "main"}"#).unwrap();
        assert_eq!(push.event_type.as_str(), "gh.pull_request");
        // A non-string action is not part of the type.
        let odd = identify(SourceKind::Github, "gh", &h, br#"{"action": 3}"#).unwrap();
        assert_eq!(odd.event_type.as_str(), "gh.pull_request");
        assert_eq!(
            identify(SourceKind::Github, "gh", &headers(&[]), b"{}"),
            Err(Unnamed::MissingHeader("x-github-event"))
        );
    }

    #[test]
    fn stripe_shopify_and_standard_webhooks_name_events_their_way() {
        let stripe = identify(
            SourceKind::Stripe,
            "stripe",
            &headers(&[]),
            br#"{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "type": "invoice.paid"}"#,
        )
        .unwrap();
        assert_eq!(stripe.event_type.as_str(), "stripe.invoice.paid");
        assert_eq!(stripe.provider_id, "evt_1NG8Du2eZvKYlo2CUI79vXWy");
        assert_eq!(
            identify(SourceKind::Stripe, "s", &headers(&[]), br#"{"type": "a"}"#),
            Err(Unnamed::MissingField("id"))
        );

        let shopify = identify(
            SourceKind::Shopify,
            "shopify",
            &headers(&[
                ("x-shopify-topic", "orders/create"),
                (
                    "x-shopify-webhook-id",
                    "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                ),
            ]),
            br#"{"id": 820982911946154508}"#,
        )
        .unwrap();
        assert_eq!(shopify.event_type.as_str(), "shopify.orders.create");
        assert_eq!(shopify.provider_id, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");

        let h = headers(&[("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")]);
        let typed = identify(
            SourceKind::StandardWebhooks,
            "partner",
            &h,
            br#"{"type": "user.created"}"#,
        )
        .unwrap();
        assert_eq!(typed.event_type.as_str(), "partner.user.created");
        let untyped = identify(SourceKind::StandardWebhooks, "partner", &h, b"{}").unwrap();
        assert_eq!(untyped.event_type.as_str(), "partner.event");
        assert!(matches!(
            identify(
                SourceKind::StandardWebhooks,
                "p",
                &h,
                br#"{"type": "has space"}"#
            ),
            Err(Unnamed::BadType(..))
        ));
        assert_eq!(
            identify(SourceKind::StandardWebhooks, "p", &h, b"not json"),
            Err(Unnamed::NotJson)
        );
    }

    #[test]
    fn event_ids_are_stable_per_source_and_provider_id() {
        let id = event_id("src_1", "evt_abc");
        assert_eq!(id.as_str(), "src_1:evt_abc");
        assert_eq!(event_id("src_1", "evt_abc"), id);
        assert_ne!(event_id("src_2", "evt_abc"), id);
        // Ids the event id rules refuse are hashed, stably.
        let odd = event_id("src_1", "a/b c");
        assert!(odd.as_str().starts_with("src_1:h"));
        assert_eq!(event_id("src_1", "a/b c"), odd);
        assert_ne!(event_id("src_1", "a/b d"), odd);
    }

    #[test]
    fn any_active_secret_verifies_and_generated_secrets_fit_their_kind() {
        let body = b"Hello, World!";
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        let current = "new secret".to_owned();
        let previous = "It's a Secret to Everybody".to_owned();
        assert_eq!(
            verify(
                SourceKind::Github,
                &[current.clone(), previous],
                &h,
                body,
                0
            ),
            Ok(())
        );
        assert_eq!(
            verify(SourceKind::Github, &[current], &h, body, 0),
            Err(Rejection::BadSignature)
        );
        for kind in SourceKind::ALL {
            if kind.can_generate_secret() {
                assert_eq!(kind.check_secret(&kind.generate_secret()), Ok(()));
            }
            assert_eq!(SourceKind::parse(kind.as_str()), Some(kind));
        }
        assert!(SourceKind::StandardWebhooks.check_secret("plain").is_err());
        assert!(SourceKind::Stripe.check_secret("").is_err());
    }
}
