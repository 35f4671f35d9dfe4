//! The dead-letter queue, seen per tenant: what is parked and why, and
//! requeueing it. Messages are read by consuming them on a channel of our
//! own; those not taken are returned to the queue, in place, when the
//! channel closes.
//!
//! Messages are looked at one by one as they arrive and dropped from
//! memory at once unless they are the caller's, whose bodies are shown cut
//! to [`LISTED_BODY_MAX`]: a scan of 1000 parked 256 KiB payloads holds one
//! at a time, not 256 MB (issue 16 item 5).

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use hookfleet_contract::{AttemptOutcome, DeliveryTask, EventRouted, Trigger, headers};
use hookfleet_topology::{Link, PublishError, Topology, header_str, traced_headers};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Serialize;

/// How long to wait for the queue to hand over the next message before
/// taking it as empty.
const QUIET: Duration = Duration::from_millis(300);

/// The most of a parked message's body a listing shows.
pub const LISTED_BODY_MAX: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("the broker is not connected")]
    Disconnected,
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// A parked message as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Parked {
    /// The AMQP message id: the event id, delivery id or record id.
    pub message_id: Option<String>,
    /// `event`, `task` (a delivery that was exhausted or malformed) or `record`.
    pub kind: &'static str,
    pub reason: Option<String>,
    pub parked_by: Option<String>,
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub original_exchange: Option<String>,
    pub original_routing_key: Option<String>,
    /// The body, as text, cut to its first 16 KiB in listings.
    pub body: String,
    /// Whether `body` was cut.
    pub body_truncated: bool,
}

/// What a parked message is and whose.
struct Identity {
    kind: &'static str,
    tenant: Option<String>,
    event_id: Option<String>,
    endpoint_id: Option<String>,
    task: Option<DeliveryTask>,
}

fn identify(delivery: &Delivery) -> Identity {
    let meta = header_str(&delivery.properties, headers::META);
    if let Some(task) = meta.and_then(|m| DeliveryTask::from_meta_json(m).ok()) {
        return Identity {
            kind: "task",
            tenant: Some(task.tenant.clone()),
            event_id: Some(task.event_id.to_string()),
            endpoint_id: Some(task.endpoint_id.to_string()),
            task: Some(task),
        };
    }
    if let Some(routed) = meta.and_then(|m| serde_json::from_str::<EventRouted>(m).ok()) {
        return Identity {
            kind: "record",
            tenant: Some(routed.tenant),
            event_id: Some(routed.event_id.to_string()),
            endpoint_id: None,
            task: None,
        };
    }
    if let Ok(outcome) = serde_json::from_slice::<AttemptOutcome>(&delivery.data) {
        return Identity {
            kind: "record",
            tenant: Some(outcome.tenant),
            event_id: Some(outcome.event_id.to_string()),
            endpoint_id: Some(outcome.endpoint_id.to_string()),
            task: None,
        };
    }
    Identity {
        kind: "event",
        tenant: header_str(&delivery.properties, headers::TENANT).map(str::to_owned),
        event_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        endpoint_id: None,
        task: None,
    }
}

fn view(delivery: &Delivery, identity: &Identity) -> Parked {
    let header = |name| header_str(&delivery.properties, name).map(str::to_owned);
    let shown = &delivery.data[..delivery.data.len().min(LISTED_BODY_MAX)];
    Parked {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        kind: identity.kind,
        reason: header(headers::PARK_REASON),
        parked_by: header(headers::PARKED_BY),
        event_id: identity.event_id.clone(),
        endpoint_id: identity.endpoint_id.clone(),
        original_exchange: header(headers::ORIGINAL_EXCHANGE),
        original_routing_key: header(headers::ORIGINAL_ROUTING_KEY),
        body: String::from_utf8_lossy(shown).into_owned(),
        body_truncated: shown.len() < delivery.data.len(),
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub link: Link,
    pub topology: Topology,
}

impl DeadLetters {
    /// Starts taking up to `scan` messages off the dead-letter queue,
    /// unacked, on a channel of its own. Closing the channel returns those
    /// not acked.
    async fn take(&self, scan: u16) -> Result<Taking, DlqError> {
        let reader = self
            .link
            .connection()
            .ok_or(DlqError::Disconnected)?
            .create_channel()
            .await?;
        reader.basic_qos(scan, BasicQosOptions::default()).await?;
        let consumer = reader
            .basic_consume(
                self.topology.dead_queue().as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Taking {
            reader,
            consumer,
            left: scan,
        })
    }

    /// The tenant's parked messages among the first `scan` in the queue.
    pub async fn list(&self, tenant: &str, scan: u16) -> Result<Vec<Parked>, DlqError> {
        let mut taking = self.take(scan).await?;
        let mut found = Vec::new();
        let result = async {
            while let Some(delivery) = taking.next().await? {
                let identity = identify(&delivery);
                if identity.tenant.as_deref() == Some(tenant) {
                    found.push(view(&delivery, &identity));
                }
            }
            Ok::<_, DlqError>(())
        }
        .await;
        let _ = taking.reader.close(200, "returned".into()).await;
        result.map(|()| found)
    }

    /// Puts the tenant's parked messages (those with the given message ids,
    /// or all) back where they came from. A dead delivery task comes back
    /// as a new, manually triggered retry chain. Returns what was requeued.
    pub async fn requeue(
        &self,
        tenant: &str,
        only: Option<&HashSet<String>>,
        scan: u16,
    ) -> Result<Vec<Parked>, DlqError> {
        let publisher = self.link.publisher().ok_or(DlqError::Disconnected)?;
        let mut taking = self.take(scan).await?;
        let mut requeued = Vec::new();
        let mut result = Ok(());
        loop {
            let delivery = match taking.next().await {
                Ok(Some(delivery)) => delivery,
                Ok(None) => break,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            };
            let identity = identify(&delivery);
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string());
            let chosen = identity.tenant.as_deref() == Some(tenant)
                && only.is_none_or(|ids| id.as_ref().is_some_and(|id| ids.contains(id)));
            let Some(exchange) = header_str(&delivery.properties, headers::ORIGINAL_EXCHANGE)
            else {
                continue;
            };
            if !chosen {
                continue;
            }
            let key =
                header_str(&delivery.properties, headers::ORIGINAL_ROUTING_KEY).unwrap_or_default();
            let parked = view(&delivery, &identity);
            let table = match &identity.task {
                Some(task) => {
                    let mut task = task.clone();
                    task.attempt += 1;
                    task.chain_start = task.attempt;
                    task.trigger = Trigger::Manual;
                    traced_headers([(headers::META, task.to_meta_json().as_str())])
                }
                None => original_headers(&delivery),
            };
            let properties = delivery.properties.clone().with_headers(table);
            if let Err(error) = publisher
                .publish(exchange, key, &delivery.data, properties)
                .await
            {
                result = Err(error.into());
                break;
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            requeued.push(parked);
        }
        let _ = taking.reader.close(200, "returned".into()).await;
        result.map(|()| requeued)
    }
}

/// Messages being taken off the dead-letter queue, one at a time.
struct Taking {
    reader: lapin::Channel,
    consumer: lapin::Consumer,
    left: u16,
}

impl Taking {
    /// The next message, or `None` once `scan` were taken or the queue has
    /// nothing more to hand over.
    async fn next(&mut self) -> Result<Option<Delivery>, DlqError> {
        if self.left == 0 {
            return Ok(None);
        }
        match tokio::time::timeout(QUIET, self.consumer.next()).await {
            Ok(Some(next)) => {
                self.left -= 1;
                Ok(Some(next?))
            }
            _ => Ok(None),
        }
    }
}

/// A parked message's headers less what parking added and the broker's
/// dead-lettering history (which would make the broker take the message's
/// next dead-lettering for a cycle).
fn original_headers(delivery: &Delivery) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(original) = delivery.properties.headers() {
        for (name, value) in original.inner() {
            let name = name.as_str();
            let added = name.starts_with("x-hookfleet-") && name != headers::META;
            let history = matches!(
                name,
                "x-death"
                    | "x-first-death-exchange"
                    | "x-first-death-queue"
                    | "x-first-death-reason"
                    | "x-last-death-exchange"
                    | "x-last-death-queue"
                    | "x-last-death-reason"
                    | "x-delivery-count"
            );
            if !added && !history {
                table.insert(name.into(), value.clone());
            }
        }
    }
    table
}
