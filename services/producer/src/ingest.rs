//! Handing accepted events to the broker, confirmed, the cheapest way that
//! keeps each ingest call's promise:
//!
//! - a single event whose id the producer generated is fanned out in the
//!   request: its tasks and routed record are the only messages it costs;
//! - a single event with the caller's id goes to the events exchange as the
//!   AMQP contract describes it, so the router claims the id first;
//! - a batch becomes one message on the route queue, so it is accepted all
//!   or nothing (a retried batch never half-duplicates).

use hookfleet_contract::{
    BatchedEvent, EVENT_BATCH_KIND, EventId, EventType, OrderingKey, TenantId, checked_context,
    headers,
};
use hookfleet_topology::{PublishError, persistent_json, traced_headers};
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::api::ApiState;
use crate::fanout::{FanoutError, Routable};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the broker is not connected")]
    Disconnected,
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Fanout(#[from] FanoutError),
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
}

/// One checked event of an ingest call.
#[derive(Debug)]
pub struct Accepted<'a> {
    pub id: EventId,
    /// The caller chose the id (body or `Idempotency-Key`).
    pub caller_id: bool,
    pub event_type: EventType,
    pub payload: &'a [u8],
    pub ordering_key: Option<OrderingKey>,
}

/// Hands one event to the broker (see the module comment for how).
pub async fn single(
    state: &ApiState,
    tenant: &TenantId,
    event: &Accepted<'_>,
) -> Result<(), IngestError> {
    if event.caller_id {
        return publish_event(
            state,
            &Publishable {
                id: &event.id,
                tenant,
                event_type: &event.event_type,
                payload: event.payload,
                ordering_key: event.ordering_key.as_ref(),
                source: None,
            },
        )
        .await;
    }
    let publisher = state.link.publisher().ok_or(IngestError::Disconnected)?;
    let routable = Routable {
        id: &event.id,
        tenant,
        event_type: &event.event_type,
        created_at: hookfleet_contract::now_millis(),
        payload: event.payload,
        source: None,
        ordering_key: event.ordering_key.as_ref(),
    };
    let span = crate::fanout::span(&event.id, &event.event_type);
    let fan_out = state
        .fanout
        .publish(&publisher, routable, None)
        .instrument(span.clone())
        .await?;
    span.record("fan_out", fan_out);
    Ok(())
}

/// An event to publish as the AMQP contract describes it.
#[derive(Debug, Clone, Copy)]
pub struct Publishable<'a> {
    pub id: &'a EventId,
    pub tenant: &'a TenantId,
    pub event_type: &'a EventType,
    pub payload: &'a [u8],
    pub ordering_key: Option<&'a OrderingKey>,
    /// The inbound source it came in through: its id travels in a header
    /// to the event's ledger record.
    pub source: Option<&'a str>,
}

/// Publishes the event as the AMQP contract describes it (the same form an
/// application publishing directly would use) and returns once the broker
/// has confirmed it.
pub async fn publish_event(state: &ApiState, event: &Publishable<'_>) -> Result<(), IngestError> {
    let publisher = state.link.publisher().ok_or(IngestError::Disconnected)?;
    let now_secs = (hookfleet_contract::now_millis() / 1000) as u64;
    let checked = state.stamper.stamp(
        &checked_context(
            event.tenant.as_str(),
            Some((event.id.as_str(), event.event_type.as_str())),
        ),
        event.payload,
    );
    let properties = persistent_json()
        .with_message_id(event.id.as_str().into())
        .with_timestamp(now_secs)
        .with_headers(traced_headers(
            [
                (headers::TENANT, event.tenant.as_str()),
                (headers::CHECKED, checked.as_str()),
            ]
            .into_iter()
            .chain(event.source.map(|source| (headers::SOURCE, source)))
            .chain(
                event
                    .ordering_key
                    .map(|key| (headers::ORDERING_KEY, key.as_str())),
            ),
        ));
    publisher
        .publish(
            &state.topology.events_exchange(),
            event.event_type.as_str(),
            event.payload,
            properties,
        )
        .await?;
    Ok(())
}

/// Publishes a batch as one message on the route queue. `traceparents`
/// gives each event its own trace.
pub async fn batch(
    state: &ApiState,
    tenant: &TenantId,
    events: &[Accepted<'_>],
    traceparents: Vec<Option<String>>,
) -> Result<(), IngestError> {
    let publisher = state.link.publisher().ok_or(IngestError::Disconnected)?;
    let created_at = hookfleet_contract::now_millis();
    let batched = events
        .iter()
        .zip(traceparents)
        .map(|(event, traceparent)| {
            Ok(BatchedEvent {
                id: event.id.to_string(),
                event_type: event.event_type.to_string(),
                created_at,
                claim: event.caller_id,
                traceparent,
                ordering_key: event.ordering_key.clone(),
                // Checked by the API; parsed again only to be embedded.
                payload: serde_json::from_slice::<&RawValue>(event.payload)?,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    let body = serde_json::to_vec(&batched)?;
    let checked = state
        .stamper
        .stamp(&checked_context(tenant.as_str(), None), &body);
    let properties = persistent_json()
        .with_type(EVENT_BATCH_KIND.into())
        .with_headers(traced_headers([
            (headers::TENANT, tenant.as_str()),
            (headers::CHECKED, checked.as_str()),
        ]));
    publisher
        .publish("", &state.topology.route_queue(), &body, properties)
        .await?;
    Ok(())
}
