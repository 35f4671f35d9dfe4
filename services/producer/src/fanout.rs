//! Fan-out: one event becomes one delivery task per subscribed endpoint
//! and one routed record for the ledger, all published at once and
//! confirmed by the broker. The router does it for events off the route
//! queue; the HTTP API does it in the request for a single event whose id
//! it generated, which saves the event a trip through the broker.

use std::sync::Arc;

use futures_util::future::try_join_all;
use hookfleet_contract::{
    Chain, DeliveryTask, EVENTS_ROUTED_KIND, EventId, EventRouted, EventType, OrderingKey,
    RoutedDelivery, RoutedEventRecord, Target, TaskEvent, TenantId,
};
use hookfleet_topology::{PublishError, Publisher, Sent, Topology, task_properties};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::index::SubscriptionIndex;

/// An event ready to fan out: valid, with its id and time settled.
#[derive(Debug, Clone, Copy)]
pub struct Routable<'a> {
    pub id: &'a EventId,
    pub tenant: &'a TenantId,
    pub event_type: &'a EventType,
    pub created_at: i64,
    /// The payload, checked to be one JSON object.
    pub payload: &'a [u8],
    /// The inbound source it came in through, for the ledger record.
    pub source: Option<&'a str>,
    /// The event's ordering key: its tasks for ordered endpoints take the
    /// key's lane.
    pub ordering_key: Option<&'a OrderingKey>,
}

/// Why a fan-out did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The payload is not the JSON text it was checked to be: a bug.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
}

/// Fans events out to the endpoints the subscription index names.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub topology: Topology,
    pub index: Arc<SubscriptionIndex>,
}

impl Fanout {
    /// Publishes the event's tasks and its routed record together and
    /// returns the fan-out once the broker has confirmed all of them.
    ///
    /// `handed`, when given, is told as soon as every task is handed to
    /// the publisher's channel, before the confirms: the next event of an
    /// ordering key may then be sent, and queues behind this one (see
    /// [`Publisher::send`]). It is dropped untold if sending fails.
    pub async fn publish(
        &self,
        publisher: &Publisher,
        event: Routable<'_>,
        handed: Option<oneshot::Sender<()>>,
    ) -> Result<usize, FanoutError> {
        let subscribers = self.index.subscribers(event.tenant, event.event_type);
        let tasks: Vec<DeliveryTask> = subscribers
            .iter()
            .map(|subscriber| task_for(&event, subscriber))
            .collect();
        let record = routed_record(&event, &tasks)?;
        let deliver = &self.topology.deliver_exchange();
        let ledger = self.topology.ledger_exchange();
        // A lane's task is confirmed in its lane before the event is
        // acknowledged (or answered 202).
        let sent = async {
            let sent = try_join_all(tasks.iter().map(|task| {
                let key = task.routing_key();
                async move {
                    publisher
                        .send(deliver, &key, event.payload, task_properties(task))
                        .await
                }
            }))
            .await?;
            if let Some(handed) = handed {
                let _ = handed.send(());
            }
            try_join_all(sent.into_iter().map(Sent::confirmed)).await
        };
        let recorded = publisher.record(&ledger, EVENTS_ROUTED_KIND, record);
        futures_util::try_join!(sent, recorded)?;
        metrics::counter!("hookfleet_events_routed_total").increment(1);
        metrics::histogram!("hookfleet_fanout_size").record(tasks.len() as f64);
        Ok(tasks.len())
    }
}

/// The span of one event's routing, in the event's trace.
pub fn span(id: &EventId, event_type: &EventType) -> tracing::Span {
    tracing::info_span!(
        "route_event",
        event_id = %id,
        event_type = %event_type,
        fan_out = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    )
}

fn task_for(event: &Routable<'_>, subscriber: &Target) -> DeliveryTask {
    let event = TaskEvent {
        tenant: event.tenant.as_str(),
        event_id: event.id,
        event_type: event.event_type,
        created_at: event.created_at,
        ordering_key: event.ordering_key,
    };
    DeliveryTask::new(
        event,
        subscriber,
        hookfleet_contract::now_millis(),
        Chain::ROUTED,
    )
}

/// The ledger's record of the routing, with the payload embedded.
fn routed_record(
    event: &Routable<'_>,
    tasks: &[DeliveryTask],
) -> Result<Vec<u8>, serde_json::Error> {
    let meta = EventRouted {
        event_id: event.id.clone(),
        tenant: event.tenant.to_string(),
        event_type: event.event_type.to_string(),
        created_at: event.created_at,
        routed_at: hookfleet_contract::now_millis(),
        deliveries: tasks
            .iter()
            .map(|task| RoutedDelivery {
                delivery_id: task.delivery_id.clone(),
                endpoint_id: task.endpoint_id.clone(),
            })
            .collect(),
        traceparent: hookfleet_telemetry::traceparent(),
        source: event.source.map(str::to_owned),
        ordering_key: event.ordering_key.cloned(),
    };
    // Checked at intake; parsed again only to be embedded (no copy).
    let payload: &RawValue = serde_json::from_slice(event.payload)?;
    serde_json::to_vec(&RoutedEventRecord { meta, payload })
}
