//! Replay: sending a recorded event again to some of its tenant's
//! endpoints (`POST /v1/events/{id}/replay`, and each step of a
//! [recovery](crate::recover)). Each resend reserves the next attempt
//! number of its delivery (so concurrent resends never share one) and
//! starts a new, manually triggered retry chain.

use futures_util::future::try_join_all;
use hookfleet_contract::{
    Chain, DeliveryId, DeliveryTask, EndpointId, EventId, EventType, OrderingKey, TaskEvent,
};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::endpoint::StoredEndpoint;
use hookfleet_signing::{SealError, Sealer};
use hookfleet_topology::{Link, PublishError, Topology, task_properties};

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
    #[error("the broker is not connected")]
    Disconnected,
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("event {0:?} is not in the ledger")]
    NoEvent(String),
    #[error("the endpoint's signing secret does not open with secrets.key: {0}")]
    Seal(#[from] SealError),
}

/// One resend: the delivery and the attempt number reserved for it.
#[derive(Debug, Clone)]
pub struct Resent {
    pub delivery_id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub attempt: u32,
}

#[derive(Debug, Clone)]
pub struct Resender {
    pub pool: Pool,
    pub link: Link,
    pub topology: Topology,
    /// Reseals the stored secrets for each task's tenant, endpoint and URL.
    pub sealer: Sealer,
}

impl Resender {
    /// Sends event `event_id` of `tenant` again to each endpoint,
    /// confirmed by the broker.
    pub async fn resend(
        &self,
        tenant: &str,
        event_id: &str,
        endpoints: &[StoredEndpoint],
    ) -> Result<Vec<Resent>, ResendError> {
        let publisher = self.link.publisher().ok_or(ResendError::Disconnected)?;
        let mut client = self.pool.get().await?;
        let event = client
            .query_opt(
                "SELECT event_type, payload, (extract(epoch FROM created_at) * 1000)::int8,
                        ordering_key
                 FROM events WHERE tenant = $1 AND id = $2
                 ORDER BY created_at DESC LIMIT 1",
                &[&tenant, &event_id],
            )
            .await?
            .ok_or_else(|| ResendError::NoEvent(event_id.to_owned()))?;
        let (event_type, payload, created_at): (String, String, i64) =
            (event.get(0), event.get(1), event.get(2));
        let event_type = EventType::from_stored(event_type);
        let ordering_key = event
            .get::<_, Option<&str>>(3)
            .and_then(|key| OrderingKey::parse(key).ok());
        let event = EventId::parse(event_id).map_err(|_| ResendError::NoEvent(event_id.into()))?;

        // A deadlock with the recorder (whose batches update the same
        // delivery rows in their own order) aborts one side; Postgres
        // asks that it be run again, so it is, a few times.
        let mut tries = 1;
        let tasks = loop {
            let reserved = self
                .reserve(
                    &mut client,
                    tenant,
                    &event,
                    (&event_type, created_at, ordering_key.as_ref()),
                    endpoints,
                )
                .await;
            match reserved {
                Err(ResendError::Postgres(error))
                    if tries < RESERVE_TRIES && must_retry(&error) =>
                {
                    tracing::warn!(%error, tries, "reserving replay attempts: run again");
                    tries += 1;
                }
                reserved => break reserved?,
            }
        };

        let deliver = &self.topology.deliver_exchange();
        let publisher = &publisher;
        try_join_all(tasks.iter().map(|task| {
            let key = task.routing_key();
            let payload = payload.as_bytes();
            async move {
                publisher
                    .publish(deliver, &key, payload, task_properties(task))
                    .await
            }
        }))
        .await?;
        metrics::counter!("hookfleet_resends_total").increment(tasks.len() as u64);
        Ok(tasks
            .into_iter()
            .map(|t| Resent {
                delivery_id: t.delivery_id,
                endpoint_id: t.endpoint_id,
                attempt: t.attempt,
            })
            .collect())
    }
}

/// How many times a replay's reservation runs when Postgres aborts it as
/// a deadlock or a serialization failure.
const RESERVE_TRIES: u32 = 3;

/// Whether Postgres aborted the transaction only to have it run again.
fn must_retry(error: &hookfleet_db::tokio_postgres::Error) -> bool {
    use hookfleet_db::tokio_postgres::error::SqlState;
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

impl Resender {
    /// Reserves the next attempt of the event's delivery to each endpoint,
    /// in one transaction, and makes the tasks that carry them.
    async fn reserve(
        &self,
        client: &mut hookfleet_db::deadpool_postgres::Object,
        tenant: &str,
        event: &EventId,
        event_facts: (&EventType, i64, Option<&OrderingKey>),
        endpoints: &[StoredEndpoint],
    ) -> Result<Vec<DeliveryTask>, ResendError> {
        let tx = client.transaction().await?;
        let (event_type, created_at, ordering_key) = event_facts;
        let now = hookfleet_contract::now_millis();
        let mut tasks = Vec::new();
        for endpoint in endpoints {
            let endpoint_id = &endpoint.id;
            let delivery_id = DeliveryId::derive(tenant, event, endpoint_id);
            let attempt: i32 = tx
                .query_one(
                    "INSERT INTO deliveries (id, tenant, event_id, endpoint_id, state, attempts,
                                             event_created_at)
                     VALUES ($1, $2, $3, $4, 'pending', 1, to_timestamp($5::int8 / 1000.0))
                     ON CONFLICT (id, event_created_at) DO UPDATE
                         SET attempts = deliveries.attempts + 1, state = 'pending',
                             next_attempt_at = now(), updated_at = now()
                     RETURNING attempts",
                    &[
                        &delivery_id.as_str(),
                        &tenant,
                        &event.as_str(),
                        &endpoint_id.as_str(),
                        &created_at,
                    ],
                )
                .await?
                .get(0);
            let task_event = TaskEvent {
                tenant,
                event_id: event,
                event_type,
                created_at,
                // To an ordered endpoint, the resend takes its key's lane
                // and queues behind what that lane holds of the key (a
                // recovery resends one event at a time, oldest first).
                ordering_key,
            };
            let target = endpoint.target(&self.sealer, now)?;
            tasks.push(DeliveryTask::new(
                task_event,
                &target,
                now,
                Chain::manual(attempt as u32),
            ));
        }
        tx.commit().await?;
        Ok(tasks)
    }
}
