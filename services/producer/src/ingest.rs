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
    let publisher = state.link.publisher().ok_or(IngestError::Disconnected)?;
    let now_secs = (hookfleet_contract::now_millis() / 1000) as u64;
    let properties = persistent_json()
        .with_message_id(id.as_str().into())
        .with_timestamp(now_secs)
        .with_headers(traced_headers([(headers::TENANT, tenant.as_str())]));
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
