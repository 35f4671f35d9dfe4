//! The fan-out router: consumes the route queue, finds the endpoints
//! subscribed to each event, and publishes one delivery task per endpoint
//! plus one ledger record. The event is acked only after all of them are
//! confirmed by the broker (DESIGN.md invariant 1).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::try_join_all;
use hookfleet_contract::{
    ContractViolation, DeliveryId, DeliveryTask, EVENT_ROUTED_KIND, EventMessage, EventRouted,
    RawEvent, RoutedDelivery, headers,
};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_topology::{
    PublishError, Publisher, TASK_ROUTING_KEY, Topology, ack, continue_trace_from, header_str,
    persistent_json, requeue, task_properties, traced_headers,
};
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::index::{Subscriber, SubscriptionIndex};

#[derive(Debug, thiserror::Error)]
enum StandingError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// Everything one routing needs.
#[derive(Debug)]
pub struct Router {
    pub topology: Topology,
    pub index: Arc<SubscriptionIndex>,
    pub pool: Pool,
    pub max_payload_bytes: usize,
    pub cancel: CancellationToken,
    /// Tenants seen to exist (tenants are never deleted), to spare a query.
    pub known_tenants: Mutex<HashSet<String>>,
}

/// What the database says about an incoming event.
struct Standing {
    tenant_exists: bool,
    /// This message claimed the event id: it is the one to route it.
    claimed: bool,
    /// The state of an earlier claim: `routing` or `routed`.
    earlier: Option<String>,
}

impl Standing {
    /// Whether this message should be fanned out. A repeat of a routed
    /// event is not. A repeat of one still being routed is not either,
    /// unless it is a redelivery: then the earlier try failed or crashed
    /// and its message is this one, come back.
    fn should_route(&self, redelivered: bool) -> bool {
        match self.earlier.as_deref() {
            _ if self.claimed => true,
            Some("routing") => redelivered,
            _ => false,
        }
    }
}

impl Router {
    /// Routes one message off the route queue and settles it, in a span
    /// that continues the event's trace.
    pub async fn route(self: Arc<Self>, publisher: Publisher, delivery: Delivery) {
        let span = tracing::info_span!(
            "route_event",
            event_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str()),
            event_type = delivery.routing_key.as_str(),
            fan_out = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        continue_trace_from(&span, &delivery.properties);
        self.route_in_span(publisher, delivery)
            .instrument(span)
            .await
    }

    async fn route_in_span(self: Arc<Self>, publisher: Publisher, delivery: Delivery) {
        let properties = &delivery.properties;
        let raw = RawEvent {
            routing_key: delivery.routing_key.as_str(),
            message_id: properties.message_id().as_ref().map(|s| s.as_str()),
            content_type: properties.content_type().as_ref().map(|s| s.as_str()),
            tenant: header_str(properties, headers::TENANT),
            timestamp: *properties.timestamp(),
            body: &delivery.data,
        };
        let parsed = EventMessage::parse(raw, self.max_payload_bytes);
        let standing = match &parsed {
            Ok(event) => match self.standing(event).await {
                Some(standing) => Some(standing),
                // Shutting down: the message goes back to the queue.
                None => return,
            },
            Err(_) => None,
        };
        let parsed = match (parsed, standing) {
            (Ok(event), Some(standing)) if !standing.tenant_exists => {
                Err(ContractViolation::UnknownTenant(event.tenant.to_string()))
            }
            (Ok(event), Some(standing)) if !standing.should_route(delivery.redelivered) => {
                tracing::debug!(event_id = %event.id, "a repeat of a routed event; not delivered again");
                metrics::counter!("hookfleet_events_repeated_total").increment(1);
                ack(&delivery).await;
                return;
            }
            (parsed, _) => parsed,
        };
        let event = match parsed {
            Ok(event) => event,
            Err(violation) => {
                tracing::warn!(reason = %violation, "parking a malformed event");
                metrics::counter!("hookfleet_events_parked_total", "reason" => violation.kind())
                    .increment(1);
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
        let subscribers = self.index.subscribers(&event.tenant, &event.event_type);
        tracing::Span::current().record("fan_out", subscribers.len());
        match self.fan_out(&publisher, &event, &subscribers).await {
            Ok(()) => {
                self.remember(&event).await;
                ack(&delivery).await;
                metrics::counter!("hookfleet_events_routed_total").increment(1);
                metrics::histogram!("hookfleet_fanout_size").record(subscribers.len() as f64);
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %event.id, "fan-out failed; requeueing");
                requeue(&delivery).await;
            }
        }
    }

    /// Whether the tenant exists and whether this event was routed before.
    /// While the database is unreachable this waits and retries rather than
    /// dropping or requeueing the event (requeues count towards the queue's
    /// delivery limit); `None` if the service shuts down meanwhile.
    async fn standing(&self, event: &EventMessage) -> Option<Standing> {
        let known = self
            .known_tenants
            .lock()
            .map(|t| t.contains(event.tenant.as_str()))
            .unwrap_or(false);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.query_standing(event, known).await {
                Ok(standing) => {
                    if standing.tenant_exists
                        && !known
                        && let Ok(mut tenants) = self.known_tenants.lock()
                    {
                        tenants.insert(event.tenant.to_string());
                    }
                    return Some(standing);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "producer database unreachable")
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Checks the tenant and claims the event id, in one round trip.
    async fn query_standing(
        &self,
        event: &EventMessage,
        tenant_known: bool,
    ) -> Result<Standing, StandingError> {
        let client = self.pool.get().await?;
        // The outer SELECT does not see the CTE's insert (one snapshot), so
        // `earlier` is the state of a claim made before this one.
        // Prepared once per connection: re-parsing these two statements for
        // every event was the largest Postgres cost in the benchmark.
        let statement = client
            .prepare_cached(
                "WITH tenant AS (
                     SELECT $4 OR EXISTS (SELECT 1 FROM tenants WHERE id = $1) AS known
                 ), claim AS (
                     INSERT INTO routed_events (tenant, id, event_type)
                     SELECT $1, $2, $3 FROM tenant WHERE tenant.known
                     ON CONFLICT DO NOTHING
                     RETURNING 1
                 )
                 SELECT (SELECT known FROM tenant),
                        EXISTS (SELECT 1 FROM claim),
                        (SELECT state FROM routed_events WHERE tenant = $1 AND id = $2)",
            )
            .await?;
        let row = client
            .query_one(
                &statement,
                &[
                    &event.tenant.as_str(),
                    &event.id.as_str(),
                    &event.event_type.as_str(),
                    &tenant_known,
                ],
            )
            .await?;
        Ok(Standing {
            tenant_exists: row.get(0),
            claimed: row.get(1),
            earlier: row.get(2),
        })
    }

    /// Marks a claimed event as routed, so repeats are skipped. Best
    /// effort: if it fails, a fresh repeat is skipped anyway (the claim
    /// stands) and only a redelivery routes again, which receivers
    /// deduplicate by `webhook-id`.
    async fn remember(&self, event: &EventMessage) {
        let result = async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached(
                    "UPDATE routed_events SET state = 'routed', routed_at = now()
                     WHERE tenant = $1 AND id = $2",
                )
                .await?;
            client
                .execute(&statement, &[&event.tenant.as_str(), &event.id.as_str()])
                .await?;
            Ok::<_, StandingError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, event_id = %event.id, "could not mark an event routed");
        }
    }

    async fn fan_out(
        &self,
        publisher: &Publisher,
        event: &EventMessage,
        subscribers: &[Arc<Subscriber>],
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
                sealed_secrets: subscriber.secrets_at(hookfleet_contract::now_millis()),
                headers: subscriber.headers.clone(),
                sealed_ed25519: subscriber.sealed_ed25519.clone(),
                attempt: 1,
                chain_start: 1,
                trigger: hookfleet_contract::Trigger::Scheduled,
                event_created_at: event.created_at,
                endpoint_version: subscriber.version,
            })
            .collect();
        // The ledger record first: it is idempotent (the ledger keeps one
        // row per event), the tasks are not. Were the record published
        // last and refused, the event would be requeued and routed again,
        // leaving a second copy of every task (issue 16 item 17).
        let record = EventRouted {
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
        };
        let meta = serde_json::to_string(&record).unwrap_or_default();
        let properties = persistent_json()
            .with_type(EVENT_ROUTED_KIND.into())
            .with_message_id(event.id.as_str().into())
            .with_headers(traced_headers([(headers::META, meta.as_str())]));
        publisher
            .publish(
                &self.topology.ledger_exchange(),
                "",
                &event.payload,
                properties,
            )
            .await?;

        let deliver = self.topology.deliver_exchange();
        try_join_all(tasks.iter().map(|task| {
            publisher.publish(
                &deliver,
                TASK_ROUTING_KEY,
                &event.payload,
                task_properties(task),
            )
        }))
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Standing;

    fn standing(claimed: bool, earlier: Option<&str>) -> Standing {
        Standing {
            tenant_exists: true,
            claimed,
            earlier: earlier.map(str::to_owned),
        }
    }

    #[test]
    fn only_the_claimant_or_its_redelivery_routes() {
        assert!(standing(true, None).should_route(false));
        assert!(!standing(false, Some("routed")).should_route(false));
        assert!(!standing(false, Some("routed")).should_route(true));
        // Another copy is being routed: a fresh repeat is skipped, but the
        // redelivery of a failed or crashed try goes ahead.
        assert!(!standing(false, Some("routing")).should_route(false));
        assert!(standing(false, Some("routing")).should_route(true));
    }
}
