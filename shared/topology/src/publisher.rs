//! A publisher whose every publish is confirmed by the broker, and which
//! never sends a frame the broker would close the connection for; and the
//! record lanes that publish many small ledger records as one message.
//!
//! AMQP sends a message as a method frame, one content header frame (all
//! the properties, headers table included) and body frames. lapin splits
//! the body to fit the negotiated `frame_max`, but the header frame cannot
//! be split: RabbitMQ closes the whole *connection* with `FRAME_ERROR`
//! (`frame_too_large`) when a frame's payload (the frame less its 8 bytes
//! of type, channel, size and end marker) is longer than `frame_max`
//! (128 KiB by default; measured in `tests/tests/e2e/frame_limit.rs`).
//! Every channel on that connection goes with it, and every other
//! tenant's unacked messages are requeued. So [`Publisher::publish`]
//! measures the header frame first and parks a message that would not fit
//! instead of sending it. It counts the 8 bytes, as AMQP 0-9-1 defines
//! `frame_max`, so it refuses 8 bytes earlier than RabbitMQ would.

use std::sync::{Arc, Mutex};

use hookfleet_contract::headers;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

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
    #[error(
        "the message's properties take {header_frame} bytes, over the connection's frame_max of \
         {frame_max}; not sent"
    )]
    TooLarge { header_frame: usize, frame_max: u32 },
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// A content header frame's bytes besides the properties: frame type (1),
/// channel (2), payload size (4), class (2), weight (2), body size (8),
/// frame end (1).
const HEADER_FRAME_OVERHEAD: usize = 20;
/// The longest a header value keeps in the copy of an oversized message
/// that is parked.
const PARKED_VALUE_MAX: usize = 1024;

/// The length in bytes of the content header frame that would carry
/// `properties`, framing included: what RabbitMQ compares with
/// `frame_max`. The body does not count: it goes in frames of its own.
pub fn header_frame_len(properties: &BasicProperties) -> usize {
    // Serialised as lapin will (flags, then each property).
    HEADER_FRAME_OVERHEAD + crate::encode_properties(properties).len()
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
///
/// A message whose header frame would exceed the connection's `frame_max`
/// is not sent: a slimmed copy (body and small properties kept, headers
/// cut to [`PARKED_VALUE_MAX`] bytes each, the reason added) goes to the
/// parking exchange if one is set ([`Self::parking_to`]), and `publish`
/// returns `Ok`, since the message is then stored, in the dead-letter
/// queue; without one it returns [`PublishError::TooLarge`]. Either way
/// the connection stays up.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
    frame_max: u32,
    parking: Option<String>,
    /// One lane per exchange and kind: a handful, so looked up by a scan
    /// that allocates nothing (it runs once per delivery).
    lanes: Arc<Mutex<Vec<KeyedLane>>>,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            frame_max: connection.configuration().frame_max(),
            parking: None,
            lanes: Arc::default(),
        })
    }

    /// Parks messages too large to send on `exchange` (the topology's dead
    /// exchange) instead of refusing them.
    pub fn parking_to(mut self, exchange: String) -> Self {
        self.parking = Some(exchange);
        self
    }

    /// The negotiated `frame_max` of the publisher's connection.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
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
        self.send(exchange, routing_key, body, properties)
            .await?
            .confirmed()
            .await
    }

    /// [`Self::publish`] in two steps: returns once the message is handed
    /// to the channel, and the [`Sent`] then waits for its confirm. A
    /// message sent after another's `send` returned follows it on the
    /// channel, and the broker keeps one channel's messages to one queue
    /// in that order (AMQP 0-9-1, 4.7), whether or not the first is
    /// confirmed yet.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Sent, PublishError> {
        let header_frame = header_frame_len(&properties);
        if header_frame > self.frame_max as usize {
            self.park_oversized(exchange, routing_key, body, &properties, header_frame)
                .await?;
            return Ok(Sent::Stored);
        }
        send_confirmable(&self.channel, exchange, routing_key, body, properties, true).await
    }

    /// Publishes a message that nobody need be listening for (a broadcast
    /// to whichever consumers are bound): without the mandatory flag, so a
    /// message no queue takes is dropped rather than returned. Confirmed
    /// and size-checked like [`Self::publish`].
    pub async fn broadcast(
        &self,
        exchange: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let header_frame = header_frame_len(&properties);
        if header_frame > self.frame_max as usize {
            return Err(PublishError::TooLarge {
                header_frame,
                frame_max: self.frame_max,
            });
        }
        publish_confirmed(&self.channel, exchange, "", body, properties, false).await
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
            match lanes.iter().find(|(e, k, _)| e == exchange && *k == kind) {
                Some((_, _, lane)) => lane.clone(),
                None => {
                    let lane =
                        RecordLane::start(self.channel.clone(), self.frame_max, exchange, kind);
                    lanes.push((exchange.to_owned(), kind, lane.clone()));
                    lane
                }
            }
        };
        lane.batcher.submit(record).await
    }
}

/// A record lane with the exchange and record kind it serves.
type KeyedLane = (String, &'static str, RecordLane);

/// Sends one message and waits for its confirm. The caller has checked its
/// header frame against `frame_max`.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<(), PublishError> {
    send_confirmable(channel, exchange, routing_key, body, properties, mandatory)
        .await?
        .confirmed()
        .await
}

/// Hands one message to the channel; its confirm is still to come.
async fn send_confirmable(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<Sent, PublishError> {
    let started = std::time::Instant::now();
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?;
    Ok(Sent::Confirming {
        confirm,
        started,
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
    })
}

/// A message handed to the channel ([`Publisher::send`]).
#[derive(Debug)]
pub enum Sent {
    /// Its confirm is yet to come.
    Confirming {
        confirm: PublisherConfirm,
        started: std::time::Instant,
        exchange: String,
        routing_key: String,
    },
    /// Already stored (an oversized message, parked in its place).
    Stored,
}

impl Sent {
    /// Waits for the broker's confirm: `Ok` means the message is stored in
    /// a queue.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        let Sent::Confirming {
            confirm,
            started,
            exchange,
            routing_key,
        } = self
        else {
            return Ok(());
        };
        let confirmation = confirm.await?;
        metrics::histogram!("hookfleet_publish_confirm_seconds").record(started.elapsed());
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable {
                exchange,
                routing_key,
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked { exchange }),
        }
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
    /// A lane message's properties are the persistent JSON ones and its
    /// type, so its header frame is tiny whatever the batch holds (lapin
    /// splits the body into frames that fit `frame_max`); it is measured
    /// all the same, like every message a [`Publisher`] sends.
    fn start(channel: Channel, frame_max: u32, exchange: &str, kind: &'static str) -> Self {
        let exchange = exchange.to_owned();
        let batcher = GroupCommit::start(kind, LANE_LIMITS, Vec::len, move |records| {
            let channel = channel.clone();
            let exchange = exchange.clone();
            async move {
                let body = json_array(&records);
                let properties = crate::persistent_json().with_type(kind.into());
                let header_frame = header_frame_len(&properties);
                if header_frame > frame_max as usize {
                    return Err(PublishError::TooLarge {
                        header_frame,
                        frame_max,
                    });
                }
                publish_confirmed(&channel, &exchange, "", &body, properties, true).await?;
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
    /// Parks a slimmed copy of a message too large to send, or refuses it.
    async fn park_oversized(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: &BasicProperties,
        header_frame: usize,
    ) -> Result<(), PublishError> {
        let too_large = PublishError::TooLarge {
            header_frame,
            frame_max: self.frame_max,
        };
        metrics::counter!("hookfleet_publish_oversized_total").increment(1);
        tracing::warn!(
            exchange,
            header_frame,
            frame_max = self.frame_max,
            message_id = properties.message_id().as_ref().map(|s| s.as_str()),
            "a message's properties exceed frame_max; parking it instead of sending it"
        );
        let Some(parking) = &self.parking else {
            return Err(too_large);
        };
        let slim = slimmed(properties, exchange, routing_key, &too_large.to_string());
        if header_frame_len(&slim) > self.frame_max as usize {
            return Err(too_large);
        }
        publish_confirmed(&self.channel, parking, "", body, slim, true).await
    }

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
        add_parking_headers(
            &mut table,
            reason,
            parked_by,
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
        );
        let properties = delivery
            .properties
            .clone()
            .with_headers(table)
            .with_delivery_mode(2);
        self.publish(&topology.dead_exchange(), "", &delivery.data, properties)
            .await
    }
}

/// Adds what a parked message says of itself: a new parking id (so two
/// parkings of one message stay two), why, by whom and where from.
fn add_parking_headers(
    table: &mut lapin::types::FieldTable,
    reason: &str,
    parked_by: &str,
    exchange: &str,
    routing_key: &str,
) {
    let parking_id = uuid::Uuid::new_v4().simple().to_string();
    for (name, value) in [
        (headers::PARKING_ID, parking_id.as_str()),
        (headers::PARK_REASON, reason),
        (headers::PARKED_BY, parked_by),
        (headers::ORIGINAL_EXCHANGE, exchange),
        (headers::ORIGINAL_ROUTING_KEY, routing_key),
    ] {
        table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

/// A copy of `properties` small enough to send: the small properties kept,
/// each string header cut to [`PARKED_VALUE_MAX`] bytes, other headers
/// dropped, and the parking headers added.
fn slimmed(
    properties: &BasicProperties,
    exchange: &str,
    routing_key: &str,
    reason: &str,
) -> BasicProperties {
    let mut table = lapin::types::FieldTable::default();
    if let Some(original) = properties.headers() {
        for (name, value) in original.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => continue,
            };
            let mut end = text.len().min(PARKED_VALUE_MAX);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            table.insert(
                name.clone(),
                AMQPValue::LongString(LongString::from(&text[..end])),
            );
        }
    }
    add_parking_headers(&mut table, reason, "publisher", exchange, routing_key);
    let mut slim = BasicProperties::default()
        .with_headers(table)
        .with_delivery_mode(2);
    if let Some(id) = properties.message_id() {
        slim = slim.with_message_id(id.clone());
    }
    if let Some(kind) = properties.kind() {
        slim = slim.with_type(kind.clone());
    }
    if let Some(content_type) = properties.content_type() {
        slim = slim.with_content_type(content_type.clone());
    }
    if let Some(user_id) = properties.user_id() {
        slim = slim.with_user_id(user_id.clone());
    }
    slim
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value_len: usize) -> BasicProperties {
        let mut table = lapin::types::FieldTable::default();
        table.insert(
            "x-big".into(),
            AMQPValue::LongString(LongString::from("é".repeat(value_len / 2))),
        );
        table.insert("x-number".into(), AMQPValue::LongInt(7));
        BasicProperties::default()
            .with_message_id("m1".into())
            .with_headers(table)
    }

    /// The length of the header frame lapin itself would write.
    fn real_frame_len(properties: &BasicProperties, body_len: u64) -> usize {
        use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
        let frame = AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: body_len,
                properties: properties.clone(),
            },
        );
        gen_frame(&frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
            .len()
    }

    #[test]
    fn the_header_frame_is_measured_as_lapin_writes_it() {
        let empty = BasicProperties::default();
        // type, channel, size, class, weight, body size, flags, frame end.
        assert_eq!(header_frame_len(&empty), 1 + 2 + 4 + 2 + 2 + 8 + 2 + 1);
        for properties in [empty, with_header(10), with_header(200 * 1024)] {
            assert_eq!(
                header_frame_len(&properties),
                real_frame_len(&properties, 1 << 20)
            );
        }
        let big = header_frame_len(&with_header(200 * 1024));
        assert!(big > 200 * 1024 && big < 201 * 1024, "{big}");
    }

    #[test]
    fn a_parked_copy_is_small_and_says_why() {
        let slim = slimmed(&with_header(200 * 1024), "ex", "rk", "too large");
        assert!(header_frame_len(&slim) < 4 * 1024);
        assert_eq!(slim.message_id().as_ref().unwrap().as_str(), "m1");
        let get = |name: &str| crate::header_str(&slim, name).map(str::to_owned);
        assert_eq!(get(headers::PARK_REASON).as_deref(), Some("too large"));
        assert_eq!(get(headers::ORIGINAL_EXCHANGE).as_deref(), Some("ex"));
        assert_eq!(get(headers::PARKING_ID).map(|id| id.len()), Some(32));
        assert!(get("x-big").unwrap().len() <= PARKED_VALUE_MAX);
        assert!(get("x-number").is_none());
    }

    #[test]
    fn records_join_into_one_json_array() {
        let records = vec![br#"{"a":1}"#.to_vec(), br#"{"b":[2]}"#.to_vec()];
        let body = super::json_array(&records);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, serde_json::json!([{"a": 1}, {"b": [2]}]));
    }

    #[test]
    fn a_lane_message_fits_any_frame_max() {
        // RabbitMQ's smallest frame_max is 4096.
        let properties = crate::persistent_json().with_type("attempt.outcomes".into());
        assert!(header_frame_len(&properties) < 4096);
    }
}
