//! Publishing an accepted event to the events exchange, confirmed.

use hookfleet_contract::{EventId, EventType, TenantId, headers};
use hookfleet_topology::{PublishError, persistent_json, traced_headers};

use crate::api::ApiState;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the broker is not connected")]
    Disconnected,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Publishes the event as the AMQP contract describes it (the same form an
/// application publishing directly would use) and returns once the broker
/// has confirmed it.
pub async fn publish_event(
    state: &ApiState,
    id: &EventId,
    tenant: &TenantId,
    event_type: &EventType,
    payload: &[u8],
) -> Result<(), IngestError> {
    publish_event_from(state, id, tenant, event_type, payload, None).await
}

/// [`publish_event`] for an event that came in through an inbound source:
/// the source's id travels in a header to the event's ledger record.
pub async fn publish_event_from(
    state: &ApiState,
    id: &EventId,
    tenant: &TenantId,
    event_type: &EventType,
    payload: &[u8],
    source: Option<&str>,
) -> Result<(), IngestError> {
    let publisher = state.link.publisher().ok_or(IngestError::Disconnected)?;
    let now_secs = (hookfleet_contract::now_millis() / 1000) as u64;
    let properties = persistent_json()
        .with_message_id(id.as_str().into())
        .with_timestamp(now_secs)
        .with_headers(traced_headers(
            std::iter::once((headers::TENANT, tenant.as_str()))
                .chain(source.map(|source| (headers::SOURCE, source))),
        ));
    publisher
        .publish(
            &state.topology.events_exchange(),
            event_type.as_str(),
            payload,
            properties,
        )
        .await?;
    Ok(())
}
