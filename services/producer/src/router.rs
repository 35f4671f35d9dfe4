//! The fan-out router: consumes the route queue, finds the endpoints
//! subscribed to each event, and publishes one delivery task per endpoint
//! plus one ledger record. The event is acked only after all of them are
//! confirmed by the broker (DESIGN.md invariant 1).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use hookfleet_contract::{
    DeliveryId, DeliveryTask, EVENT_ROUTED_KIND, EventMessage, EventRouted, RawEvent,
    RoutedDelivery, headers,
};
use hookfleet_topology::{
    PublishError, Publisher, Topology, ack, header_str, headers_with, persistent_json, requeue,
};
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use crate::registry::{EndpointRegistry, Subscriber};

/// The routing key of delivery tasks on the deliver exchange.
pub const TASK_ROUTING_KEY: &str = "task";

/// Everything one routing needs.
#[derive(Debug)]
pub struct Router {
    pub topology: Topology,
    pub registry: EndpointRegistry,
    pub max_payload_bytes: usize,
    pub cancel: CancellationToken,
}

impl Router {
    /// Routes one message off the route queue and settles it.
    pub async fn route(self: Arc<Self>, publisher: Publisher, delivery: Delivery) {
        let properties = &delivery.properties;
        let raw = RawEvent {
            routing_key: delivery.routing_key.as_str(),
            message_id: properties.message_id().as_ref().map(|s| s.as_str()),
            content_type: properties.content_type().as_ref().map(|s| s.as_str()),
            tenant: header_str(properties, headers::TENANT),
            timestamp: *properties.timestamp(),
            body: &delivery.data,
        };
        let event = match EventMessage::parse(raw, self.max_payload_bytes) {
            Ok(event) => event,
            Err(violation) => {
                tracing::warn!(reason = %violation, "parking a malformed event");
                match publisher
                    .park(&self.topology, &delivery, &violation.to_string(), "router")
                    .await
                {
                    Ok(()) => ack(&delivery).await,
                    Err(error) => {
                        tracing::warn!(%error, "parking failed; requeueing");
                        requeue(&delivery).await;
                    }
                }
                return;
            }
        };
        let Some(subscribers) = self.subscribers(&event).await else {
            // Shutting down: the message goes back to the queue.
            return;
        };
        match self.fan_out(&publisher, &event, &subscribers).await {
            Ok(()) => ack(&delivery).await,
            Err(error) => {
                tracing::warn!(%error, event_id = %event.id, "fan-out failed; requeueing");
                requeue(&delivery).await;
            }
        }
    }

    /// The event's subscribers. While the registry is unreachable this
    /// waits and retries rather than dropping or requeueing the event
    /// (requeues count towards the queue's delivery limit); `None` if the
    /// service shuts down meanwhile.
    async fn subscribers(&self, event: &EventMessage) -> Option<Vec<Subscriber>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .registry
                .subscribers(&event.tenant, &event.event_type)
                .await
            {
                Ok(subscribers) => return Some(subscribers),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "endpoint registry unreachable")
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn fan_out(
        &self,
        publisher: &Publisher,
        event: &EventMessage,
        subscribers: &[Subscriber],
    ) -> Result<(), PublishError> {
        let tasks: Vec<DeliveryTask> = subscribers
            .iter()
            .map(|subscriber| DeliveryTask {
                delivery_id: DeliveryId::derive(event.tenant.as_str(), &event.id, &subscriber.id),
                event_id: event.id.clone(),
                tenant: event.tenant.to_string(),
                event_type: event.event_type.to_string(),
                endpoint_id: subscriber.id.clone(),
                url: subscriber.url.clone(),
                sealed_secrets: vec![subscriber.sealed_secret.clone()],
                attempt: 1,
                event_created_at: event.created_at,
            })
            .collect();
        let deliver = self.topology.deliver_exchange();
        try_join_all(tasks.iter().map(|task| {
            let properties = persistent_json()
                .with_message_id(task.delivery_id.as_str().into())
                .with_headers(headers_with([(
                    headers::META,
                    task.to_meta_json().as_str(),
                )]));
            publisher.publish(&deliver, TASK_ROUTING_KEY, &event.payload, properties)
        }))
        .await?;

        let record = EventRouted {
            event_id: event.id.clone(),
            tenant: event.tenant.to_string(),
            event_type: event.event_type.to_string(),
            created_at: event.created_at,
            routed_at: hookfleet_contract::now_millis(),
            deliveries: tasks
                .into_iter()
                .map(|task| RoutedDelivery {
                    delivery_id: task.delivery_id,
                    endpoint_id: task.endpoint_id,
                })
                .collect(),
        };
        let meta = serde_json::to_string(&record).unwrap_or_default();
        let properties = persistent_json()
            .with_type(EVENT_ROUTED_KIND.into())
            .with_message_id(event.id.as_str().into())
            .with_headers(headers_with([(headers::META, meta.as_str())]));
        publisher
            .publish(
                &self.topology.ledger_exchange(),
                "",
                &event.payload,
                properties,
            )
            .await
    }
}
