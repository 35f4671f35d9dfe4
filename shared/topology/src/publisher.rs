//! A publisher whose every publish is confirmed by the broker.

use hookfleet_contract::headers;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// Why a publish did not become durable in the broker.
#[derive(Debug, thiserror::Error)]
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
}

/// Publishes on a channel in confirm mode, with the mandatory flag, and
/// waits for the broker's confirmation: `Ok` means the message is stored
/// in a queue (for a persistent message, on disk). Cheap to clone; clones
/// share the channel and may publish concurrently.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
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
        let started = std::time::Instant::now();
        let confirmation = self
            .channel
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
