//! The event message: what applications publish to the events exchange,
//! directly over AMQP or through the producer's HTTP API.
//!
//! The message body is the payload itself, byte for byte; everything else
//! travels in AMQP properties and headers. That keeps the contract easy to
//! follow from any language and lets the payload pass through hookfleet
//! unchanged (DESIGN.md invariant 7).

use bytes::Bytes;

use crate::domain::{DomainError, EventType, TenantId};
use crate::ids::{BadId, EventId};
use crate::ordering::{OrderingError, OrderingKey};

/// Header and property names of the contract.
pub mod headers {
    /// Header carrying the tenant id (a string).
    pub const TENANT: &str = "x-tenant";
    /// Header the parking queue uses to say why a message was parked.
    pub const PARK_REASON: &str = "x-hookfleet-reason";
    /// Header with the service that parked a message.
    pub const PARKED_BY: &str = "x-hookfleet-parked-by";
    /// Headers with where a parked message was first published.
    pub const ORIGINAL_EXCHANGE: &str = "x-hookfleet-original-exchange";
    pub const ORIGINAL_ROUTING_KEY: &str = "x-hookfleet-original-routing-key";
    /// Header with a parking's own id, new each time a message is parked:
    /// the same message parked twice is two parked messages, while the
    /// dead-letter queue handing one parking over twice is one.
    pub const PARKING_ID: &str = "x-hookfleet-parking-id";
    /// Set by the producer's ingest API on the events and batches it
    /// publishes: their payloads were checked against the tenant's
    /// event-type catalogue when they were accepted, so the router does not
    /// check them again (a schema changed in between does not undo a 202).
    /// The value is a stamp (`hookfleet_signing::Stamper`) over
    /// [`super::checked_context`] and the body, which no broker client can
    /// make: a message whose stamp does not verify is checked.
    pub const CHECKED: &str = "x-hookfleet-checked";
    /// Header carrying a delivery task's or ledger record's metadata as JSON.
    pub const META: &str = "x-hookfleet-meta";
    /// Header of a lane task its holder set aside through the delay levels
    /// (its key overflowed): its place in the key's line, a decimal number.
    pub const ASIDE: &str = "x-hookfleet-aside";
    /// Header naming the inbound source (`src_...`) an event came in
    /// through; the router carries it into the ledger record.
    pub const SOURCE: &str = "x-hookfleet-source";
    /// Header carrying an event's ordering key (issue 17): events with the
    /// same key reach an ordered endpoint in the order they were published.
    pub const ORDERING_KEY: &str = "x-ordering-key";
    /// The only content type accepted for events.
    pub const JSON_CONTENT_TYPE: &str = "application/json";
}

/// Why a message on the events exchange was refused. The text goes into the
/// parking queue's reason header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractViolation {
    #[error("message_id (the event id) is missing")]
    MissingId,
    #[error("message_id: {0}")]
    BadId(#[from] BadId),
    #[error("header {header} (the tenant) is missing or not a string", header = headers::TENANT)]
    MissingTenant,
    #[error("routing key: {0}")]
    BadEventType(DomainError),
    #[error("tenant: {0}")]
    BadTenant(DomainError),
    #[error("content_type {0:?} is not application/json")]
    WrongContentType(String),
    #[error("payload is {size} bytes; at most {max} are allowed")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload must be a JSON object")]
    NotObject,
    #[error("payload nests {0} levels deep; at most {max} are allowed", max = crate::limits::MAX_PAYLOAD_DEPTH)]
    TooDeep(usize),
    #[error("header {header} (the ordering key) {0}", header = headers::ORDERING_KEY)]
    BadOrderingKey(OrderingError),
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    /// The payload does not match its type's JSON Schema; the text lists
    /// the problems (`/total: "19.99" is not of type "number"`).
    #[error("schema: {0}")]
    Schema(String),
    /// The tenant has `strict_types` and the type is not in its catalogue.
    #[error("event type {0:?} is not in the tenant's catalogue (strict_types)")]
    UnknownType(String),
    /// Tenants are bound to broker users (`ingest.amqp_tenant_is_user`)
    /// and the message's `user_id` is not its tenant.
    #[error(
        "tenant {tenant:?} may only be published by the broker user of that name (user_id is {user:?})"
    )]
    NotThePublisher {
        tenant: String,
        user: Option<String>,
    },
}

impl ContractViolation {
    /// A short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingId | Self::BadId(_) => "bad_id",
            Self::MissingTenant | Self::BadTenant(_) => "bad_tenant",
            Self::UnknownTenant(_) => "unknown_tenant",
            Self::BadEventType(_) => "bad_type",
            Self::WrongContentType(_) => "wrong_content_type",
            Self::TooLarge { .. } => "too_large",
            Self::NotJson(_) => "not_json",
            Self::NotObject => "not_object",
            Self::Schema(_) => "schema",
            Self::UnknownType(_) => "unknown_type",
            Self::TooDeep(_) => "too_deep",
            Self::NotThePublisher { .. } => "not_the_publisher",
            Self::BadOrderingKey(_) => "bad_ordering_key",
        }
    }
}

/// The parts of an AMQP message the contract reads, independent of the
/// AMQP client library.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    pub routing_key: &'a str,
    pub message_id: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// The [`headers::ORDERING_KEY`] header, when the message has one.
    pub ordering_key: Option<&'a str>,
    /// AMQP `timestamp` property, seconds since the epoch.
    pub timestamp: Option<u64>,
    pub body: &'a [u8],
}

/// What a [`headers::CHECKED`] stamp covers besides the body: the tenant,
/// and for a single event its id and type (`None` for a batch, whose body
/// holds them).
pub fn checked_context(tenant: &str, event: Option<(&str, &str)>) -> String {
    match event {
        Some((id, event_type)) => format!("checked event\0{tenant}\0{id}\0{event_type}"),
        None => format!("checked batch\0{tenant}"),
    }
}

/// The AMQP `type` of the message one HTTP batch call becomes: its events
/// as a JSON array of [`BatchedEvent`], published to the route queue
/// whole, so a batch is accepted all or nothing.
pub const EVENT_BATCH_KIND: &str = "event.batch";

/// One event inside an [`EVENT_BATCH_KIND`] message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchedEvent<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the producer accepted it, milliseconds since the epoch.
    pub created_at: i64,
    /// The caller chose the id, so the router claims it: a repeat of the
    /// id is not delivered again. Ids the producer generated need no claim.
    pub claim: bool,
    /// The event's trace (W3C `traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event's ordering key, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<OrderingKey>,
    /// The payload, embedded byte for byte, borrowed from the bytes it is
    /// read from or written with (no copy).
    #[serde(borrow)]
    pub payload: &'a serde_json::value::RawValue,
}

/// A valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    pub id: EventId,
    pub tenant: TenantId,
    pub event_type: EventType,
    /// The payload bytes exactly as the application sent them.
    pub payload: Bytes,
    /// When the event was accepted, milliseconds since the epoch. An AMQP
    /// message without a `timestamp` has none until the router claims its
    /// id: then it is the time of the first claim, so a re-routed event
    /// keeps the time (and the ledger partition) it was first given.
    pub created_at: Option<i64>,
    /// Orders the event against others with the same key, for endpoints
    /// that ask for order.
    pub ordering_key: Option<OrderingKey>,
}

/// Checks that `payload` is one JSON object, as the contract requires.
pub fn check_payload(payload: &[u8], max: usize) -> Result<(), ContractViolation> {
    if payload.len() > max {
        return Err(ContractViolation::TooLarge {
            size: payload.len(),
            max,
        });
    }
    let raw: &serde_json::value::RawValue =
        serde_json::from_slice(payload).map_err(|e| ContractViolation::NotJson(e.to_string()))?;
    check_parsed_payload(raw, max)
}

/// [`check_payload`] for a payload already parsed as JSON (embedded in a
/// message that was parsed whole): size, object and depth, no second parse.
pub fn check_parsed_payload(
    raw: &serde_json::value::RawValue,
    max: usize,
) -> Result<(), ContractViolation> {
    let payload = raw.get().as_bytes();
    if payload.len() > max {
        return Err(ContractViolation::TooLarge {
            size: payload.len(),
            max,
        });
    }
    if !raw.get().starts_with('{') {
        return Err(ContractViolation::NotObject);
    }
    match crate::limits::json_depth(payload) {
        depth if depth > crate::limits::MAX_PAYLOAD_DEPTH => Err(ContractViolation::TooDeep(depth)),
        _ => Ok(()),
    }
}

impl EventMessage {
    /// Parses a message taken off the events exchange.
    pub fn parse(raw: RawEvent<'_>, max_payload: usize) -> Result<Self, ContractViolation> {
        let id = EventId::parse(raw.message_id.ok_or(ContractViolation::MissingId)?)?;
        let tenant = TenantId::parse(raw.tenant.ok_or(ContractViolation::MissingTenant)?)
            .map_err(ContractViolation::BadTenant)?;
        let event_type =
            EventType::parse(raw.routing_key).map_err(ContractViolation::BadEventType)?;
        match raw.content_type {
            None | Some(headers::JSON_CONTENT_TYPE) => {}
            Some(other) => return Err(ContractViolation::WrongContentType(other.to_owned())),
        }
        check_payload(raw.body, max_payload)?;
        let ordering_key = raw
            .ordering_key
            .map(OrderingKey::parse)
            .transpose()
            .map_err(ContractViolation::BadOrderingKey)?;
        let created_at = match raw.timestamp {
            Some(secs) if secs > 0 => Some((secs as i64).saturating_mul(1000)),
            _ => None,
        };
        Ok(Self {
            id,
            tenant,
            event_type,
            payload: Bytes::copy_from_slice(raw.body),
            created_at,
            ordering_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(body: &[u8]) -> RawEvent<'_> {
        RawEvent {
            routing_key: "order.created",
            message_id: Some("evt_1"),
            content_type: Some("application/json"),
            tenant: Some("default"),
            ordering_key: None,
            timestamp: Some(1_700_000_000),
            body,
        }
    }

    #[test]
    fn a_conforming_message_keeps_its_bytes() {
        let body = b" {\"b\": 1,  \"a\": [2]}\n";
        let event = EventMessage::parse(raw(body), 1024).unwrap();
        assert_eq!(&event.payload[..], body);
        assert_eq!(event.event_type.as_str(), "order.created");
        assert_eq!(event.created_at, Some(1_700_000_000_000));
    }

    #[test]
    fn without_a_timestamp_the_time_is_left_to_the_claim() {
        let event = EventMessage::parse(
            RawEvent {
                timestamp: None,
                ..raw(b"{}")
            },
            1024,
        )
        .unwrap();
        assert_eq!(event.created_at, None);
    }

    #[test]
    fn each_breach_names_its_reason() {
        let ok = br#"{"a":1}"#;
        let cases: Vec<(RawEvent<'_>, ContractViolation)> = vec![
            (
                RawEvent {
                    message_id: None,
                    ..raw(ok)
                },
                ContractViolation::MissingId,
            ),
            (
                RawEvent {
                    tenant: None,
                    ..raw(ok)
                },
                ContractViolation::MissingTenant,
            ),
            (
                RawEvent {
                    content_type: Some("text/plain"),
                    ..raw(ok)
                },
                ContractViolation::WrongContentType("text/plain".into()),
            ),
            (raw(b"[1,2]"), ContractViolation::NotObject),
            (
                raw(&[b' '; 2000]),
                ContractViolation::TooLarge {
                    size: 2000,
                    max: 1024,
                },
            ),
            (
                RawEvent {
                    ordering_key: Some("has space"),
                    ..raw(ok)
                },
                ContractViolation::BadOrderingKey(OrderingError::BadKey),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(EventMessage::parse(input, 1024), Err(expected));
        }
        assert!(matches!(
            EventMessage::parse(raw(b"{nope"), 1024),
            Err(ContractViolation::NotJson(_))
        ));
        assert!(matches!(
            EventMessage::parse(
                RawEvent {
                    routing_key: "Bad Type",
                    ..raw(ok)
                },
                1024
            ),
            Err(ContractViolation::BadEventType(_))
        ));
    }
}
