//! Records for the ledger: an event that was routed, and the outcome of one
//! delivery attempt. Both travel on the ledger exchange; the AMQP `kind`
//! property (`type` in AMQP terms) says which.
//!
//! Producers and workers send them batched: one message whose body is a
//! JSON array of the records that many handlers produced while the
//! previous message awaited its confirm ([`EVENTS_ROUTED_KIND`],
//! [`ATTEMPT_OUTCOMES_KIND`]). The single-record kinds are still read, so
//! messages queued by an older version are recorded after an upgrade.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::{AttemptId, DeliveryId, EndpointId, EventId};

/// The AMQP `type` property of an [`EventRouted`] record.
pub const EVENT_ROUTED_KIND: &str = "event.routed";
/// The AMQP `type` property of an [`AttemptOutcome`] record.
pub const ATTEMPT_OUTCOME_KIND: &str = "attempt.outcome";
/// The AMQP `type` of a JSON array of [`RoutedEventRecord`]s.
pub const EVENTS_ROUTED_KIND: &str = "events.routed";
/// The AMQP `type` of a JSON array of [`AttemptOutcome`]s.
pub const ATTEMPT_OUTCOMES_KIND: &str = "attempt.outcomes";

/// One routed event inside an [`EVENTS_ROUTED_KIND`] batch: its metadata
/// and its payload, embedded as the raw JSON it is, byte for byte, borrowed
/// from the bytes it is read from or written with (no copy).
#[derive(Debug, Serialize, Deserialize)]
pub struct RoutedEventRecord<'a> {
    pub meta: EventRouted,
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

/// One accepted event and the deliveries it fanned out into. The AMQP body
/// is the payload; this is the metadata header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRouted {
    pub event_id: EventId,
    pub tenant: String,
    pub event_type: String,
    pub created_at: i64,
    pub routed_at: i64,
    pub deliveries: Vec<RoutedDelivery>,
    /// The event's W3C `traceparent`, so the ledger's write joins its
    /// trace when many records share one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The inbound source (`src_...`) the event came in through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The event's ordering key, kept so that resends to ordered endpoints
    /// go out in order per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<crate::OrderingKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedDelivery {
    pub delivery_id: DeliveryId,
    pub endpoint_id: EndpointId,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// 2xx: the delivery is done.
    Succeeded,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed and no attempts are left: the task is in the dead-letter queue.
    Exhausted,
    /// Not sent, and never will be: the endpoint was deleted or disabled
    /// after the task was made. No HTTP request was made; `error` says why.
    Cancelled,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Exhausted => "exhausted",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The outcome of one attempt, as JSON in the AMQP body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOutcome {
    pub attempt_id: AttemptId,
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub tenant: String,
    /// When the event was accepted, milliseconds since the epoch: the
    /// ledger's partition key, the same for every record of the event.
    pub event_created_at: i64,
    pub attempt: u32,
    pub result: AttemptResult,
    /// The HTTP status, when a response arrived.
    pub status_code: Option<u16>,
    /// What went wrong, when something did (timeout, refused, status text).
    pub error: Option<String>,
    /// The start of the response body, capped.
    pub response_excerpt: Option<String>,
    pub started_at: i64,
    pub duration_ms: i64,
    /// When the next attempt is due, if one is scheduled.
    pub next_attempt_at: Option<i64>,
    /// The receiver answered 410 Gone: the endpoint is to be disabled.
    #[serde(default)]
    pub endpoint_gone: bool,
    /// On schedule, or a manual replay.
    #[serde(default)]
    pub trigger: crate::task::Trigger,
    /// The attempt's W3C `traceparent` (see [`EventRouted::traceparent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}
