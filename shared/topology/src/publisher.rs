//! A publisher whose every publish is confirmed by the broker, and the
//! record lanes that publish many small ledger records as one message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hookfleet_contract::headers;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::group::{GroupCommit, Limits, Stopped};

/// Why a publish did not become durable in the broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("broker connection: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker refused the message (nack) on {exchange}")]
    Nacked { exchange: String },
    #[error("no queue is bound for {exchange} / {routing_key}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// Most records in one batched ledger message, and most bytes: a batch
/// stays well under RabbitMQ's message size limit and cheap to redeliver.
const LANE_LIMITS: Limits = Limits {
    items: 512,
    weight: 1 << 20,
};

/// Publishes on a channel in confirm mode, with the mandatory flag, and
/// waits for the broker's confirmation: `Ok` means the message is stored
/// in a queue (for a persistent message, on disk). Cheap to clone; clones
/// share the channel and may publish concurrently.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
    lanes: Arc<Mutex<HashMap<(String, &'static str), RecordLane>>>,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            lanes: Arc::default(),
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        publish_confirmed(&self.channel, exchange, routing_key, body, properties).await
    }

    /// Publishes `record` (a JSON object) to `exchange` batched with the
    /// records other tasks hand in meanwhile, as one message of type
    /// `kind` whose body is a JSON array; returns once that message is
    /// confirmed.
    pub async fn record(
        &self,
        exchange: &str,
        kind: &'static str,
        record: Vec<u8>,
    ) -> Result<(), PublishError> {
        let lane = {
            let mut lanes = self
                .lanes
                .lock()
                .map_err(|_| PublishError::Stopped(Stopped("record lane")))?;
            lanes
                .entry((exchange.to_owned(), kind))
                .or_insert_with(|| RecordLane::start(self.channel.clone(), exchange, kind))
                .clone()
        };
        lane.batcher.submit(record).await
    }
}

async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let started = std::time::Instant::now();
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    metrics::histogram!("hookfleet_publish_confirm_seconds").record(started.elapsed());
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::Nack(_) => Err(PublishError::Nacked {
            exchange: exchange.to_owned(),
        }),
    }
}

/// Records of one kind bound for one exchange, group-committed: whatever
/// queued up while the previous message awaited its confirm goes out as
/// the next message.
#[derive(Debug, Clone)]
struct RecordLane {
    batcher: GroupCommit<Vec<u8>, (), PublishError>,
}

impl RecordLane {
    fn start(channel: Channel, exchange: &str, kind: &'static str) -> Self {
        let exchange = exchange.to_owned();
        let batcher = GroupCommit::start(kind, LANE_LIMITS, Vec::len, move |records| {
            let channel = channel.clone();
            let exchange = exchange.clone();
            async move {
                let body = json_array(&records);
                let properties = crate::persistent_json().with_type(kind.into());
                publish_confirmed(&channel, &exchange, "", &body, properties).await?;
                Ok(vec![(); records.len()])
            }
        });
        Self { batcher }
    }
}

/// `[a,b,...]` from JSON texts.
fn json_array(records: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (n, record) in records.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.push(b']');
    body
}

impl Publisher {
    /// Parks a message in the dead-letter queue with the reason in the
    /// [`headers::PARK_REASON`] header, keeping its body, properties and
    /// where it came from, so it can be inspected and requeued.
    pub async fn park(
        &self,
        topology: &crate::Topology,
        delivery: &lapin::message::Delivery,
        reason: &str,
        parked_by: &str,
    ) -> Result<(), PublishError> {
        let mut table = delivery.properties.headers().clone().unwrap_or_default();
        for (name, value) in [
            (headers::PARK_REASON, reason),
            (headers::PARKED_BY, parked_by),
            (headers::ORIGINAL_EXCHANGE, delivery.exchange.as_str()),
            (headers::ORIGINAL_ROUTING_KEY, delivery.routing_key.as_str()),
        ] {
            table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        }
        let properties = delivery
            .properties
            .clone()
            .with_headers(table)
            .with_delivery_mode(2);
        self.publish(&topology.dead_exchange(), "", &delivery.data, properties)
            .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_join_into_one_json_array() {
        let records = vec![br#"{"a":1}"#.to_vec(), br#"{"b":[2]}"#.to_vec()];
        let body = super::json_array(&records);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, serde_json::json!([{"a": 1}, {"b": [2]}]));
    }
}
