//! Delivering to an AMQP destination: the payload published to the
//! endpoint's exchange, on the worker's own broker or on the broker at the
//! destination's (sealed) URL ([`crate::brokers`]), with the Standard
//! Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`)
//! as AMQP headers, persistent, mandatory and confirmed. It reports in the
//! same [`Sent`] shape as an HTTP attempt, so retries, the ledger and
//! dead-lettering treat both alike: a confirm is a 2xx (recorded as 200),
//! and a nack, a return (nothing bound) or a missing exchange is a failed
//! attempt.
//!
//! Publishes go on a channel of their own, never the worker's main one:
//! publishing to a missing exchange makes the broker close the channel
//! (404), and a tenant's bad exchange name must not take the worker's task
//! acks and retries down with it. The channel is reopened when it closed.
//! Failing to reach or log in to another broker is a failed attempt too.

use std::time::{Duration, Instant};

use hookfleet_contract::{BrokerUrl, DeliveryTask, Destination, broker_url_context};
use hookfleet_signing::Sealer;
use hookfleet_topology::Link;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};

use crate::brokers::Brokers;
use crate::classify::Response;
use crate::sender::{Keys, Sent};

/// Publishes webhooks to AMQP destinations through the worker's broker
/// connection, or another broker's.
#[derive(Debug)]
pub struct AmqpDestinations {
    link: Link,
    /// Connections to the other brokers destinations name.
    brokers: Brokers,
    /// Opens the destinations' broker URLs.
    sealer: Sealer,
    /// Exchanges under this prefix are hookfleet's own and never a
    /// destination (checked at registration too).
    reserved_prefix: String,
    /// How long the broker has to confirm.
    timeout: Duration,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl AmqpDestinations {
    pub fn new(
        link: Link,
        brokers: Brokers,
        sealer: Sealer,
        reserved_prefix: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            link,
            brokers,
            sealer,
            reserved_prefix: reserved_prefix.to_owned(),
            timeout,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// Publishes `body` to the destination and waits for the confirm.
    pub async fn send(
        &self,
        task: &DeliveryTask,
        destination: &Destination,
        keys: &Keys,
        body: &[u8],
    ) -> Sent {
        let started = Instant::now();
        let response = match destination.clone().check(&self.reserved_prefix) {
            Ok(destination) => self.publish(task, &destination, keys, body).await,
            Err(refused) => Response::Failed(format!("refused: {refused}")),
        };
        Sent {
            response,
            retry_after: None,
            excerpt: None,
            duration: started.elapsed(),
        }
    }

    async fn publish(
        &self,
        task: &DeliveryTask,
        destination: &Destination,
        keys: &Keys,
        body: &[u8],
    ) -> Response {
        let channel = match destination.sealed_url() {
            None => self
                .channel()
                .await
                .map_err(|error| format!("broker channel: {error}")),
            Some(sealed) => match self.broker_url(task, sealed) {
                Ok(url) => self.brokers.channel(&url).await,
                Err(error) => Err(error),
            },
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => return Response::Failed(error),
        };
        let exchange = destination.exchange();
        let routing_key = destination.routing_key_for(task.event_type.as_str());
        let properties = properties(task, keys, body);
        let publish = async {
            channel
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await?
                .await
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Err(_) => Response::Timeout,
            Ok(Err(error)) => Response::Failed(format!("exchange {exchange:?}: {error}")),
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Response::Status(200),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Response::Failed(format!(
                "unroutable: no queue is bound to exchange {exchange:?} for routing key {routing_key:?}"
            )),
            Ok(Ok(Confirmation::Nack(_))) => Response::Failed(format!(
                "the broker refused the message (nack) on exchange {exchange:?}"
            )),
        }
    }

    /// The destination's broker URL, opened.
    fn broker_url(&self, task: &DeliveryTask, sealed: &str) -> Result<BrokerUrl, String> {
        let url = self
            .sealer
            .open(sealed, &broker_url_context(task.endpoint_id.as_str()))
            .map_err(|e| format!("the destination's broker URL does not open: {e}"))?;
        BrokerUrl::parse(&url).map_err(|e| format!("the destination's broker URL {e}"))
    }

    /// The destination channel, opened (in confirm mode) on the current
    /// connection if there is none or the broker closed the last one.
    async fn channel(&self) -> Result<Channel, String> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let connection = self
            .link
            .connection()
            .ok_or("the broker is not connected")?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some(channel.clone());
        Ok(channel)
    }
}

/// Persistent JSON with the webhook's headers: the Standard Webhooks three
/// (so a consumer verifies and deduplicates as an HTTP receiver would), the
/// endpoint's own headers and the trace context.
fn properties(task: &DeliveryTask, keys: &Keys, body: &[u8]) -> BasicProperties {
    let timestamp = hookfleet_contract::now_millis() / 1000;
    let trace = hookfleet_telemetry::trace_headers();
    let mut headers = FieldTable::default();
    for (name, value) in crate::webhook::headers(task, keys, body, timestamp, trace) {
        // The content type is the message's property, not a header.
        if name != "content-type" {
            headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        }
    }
    hookfleet_topology::persistent_json()
        .with_message_id(task.event_id.as_str().into())
        .with_type(task.event_type.as_str().into())
        .with_timestamp(timestamp.max(0) as u64)
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use hookfleet_contract::{DeliveryId, EndpointId, EventId, EventType, Trigger};
    use hookfleet_signing::{SigningSecret, verify};
    use hookfleet_topology::header_str;

    use super::*;

    #[test]
    fn a_destination_message_carries_the_webhook_headers_signed() {
        let secret = SigningSecret::generate();
        let task = DeliveryTask {
            delivery_id: DeliveryId::derive(
                "acme",
                &EventId::parse("evt_1").unwrap(),
                &EndpointId::parse("ep_1").unwrap(),
            ),
            event_id: EventId::parse("evt_1").unwrap(),
            tenant: "acme".into(),
            event_type: EventType::parse("invoice.paid").unwrap(),
            endpoint_id: EndpointId::parse("ep_1").unwrap(),
            url: String::new(),
            sealed_secrets: vec![],
            sealed_ed25519: None,
            headers: [("x-team".to_owned(), "billing".to_owned())].into(),
            attempt: 1,
            chain_start: 1,
            trigger: Trigger::Scheduled,
            event_created_at: 0,
            endpoint_version: 0,
            destination: None,
            lane: None,
        };
        let keys = Keys {
            secrets: vec![secret.clone()],
            ed25519: None,
        };
        let body = br#"{"a": 1}"#;
        let properties = properties(&task, &keys, body);
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            Some("evt_1")
        );
        assert_eq!(header_str(&properties, "webhook-id"), Some("evt_1"));
        assert_eq!(header_str(&properties, "x-team"), Some("billing"));
        let timestamp: i64 = header_str(&properties, "webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap();
        let signature = header_str(&properties, "webhook-signature").unwrap();
        assert!(verify(&secret, signature, "evt_1", timestamp, body));
    }
}
