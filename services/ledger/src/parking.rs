//! Parking: consumes the `{p}.dead` queue in batches and moves each batch
//! into the `parked` table in one statement, acking only after the commit
//! (DESIGN.md invariant 1). While Postgres is unreachable it holds the
//! batch, unacked, and retries with backoff: the messages stay in the
//! queue, nothing is redelivered in a loop, and nothing is lost.
//!
//! The queue can hand the same message over twice (the ledger stopped
//! between commit and ack); its fingerprint makes that one row.

use std::time::Duration;

use hookfleet_contract::headers;
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_topology::{Topology, encode_properties, header_str};
use lapin::message::Delivery;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::batches::Batches;
use crate::dlq::identify;

/// The most messages moved in one statement. Parked bodies can be up to
/// 256 KiB; with the prefetch at twice this, the ledger holds at most
/// 64 of them (16 MiB).
const BATCH: usize = 32;
/// How long a batch waits to fill before it is written as it is.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// The queue header a quorum queue adds to a message it delivers again;
/// it says nothing about the message, so it is neither kept nor part of
/// the fingerprint.
const DELIVERY_COUNT: &str = "x-delivery-count";

#[derive(Debug, Clone)]
pub struct Parking {
    pub topology: Topology,
    pub pool: Pool,
}

/// One parked message, as the `parked` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParkedRow {
    pub tenant: Option<String>,
    pub kind: &'static str,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub parked_by: Option<String>,
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub original_exchange: Option<String>,
    pub original_routing_key: Option<String>,
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
    pub fingerprint: Vec<u8>,
}

/// Postgres text cannot hold NUL; these fields are for people and filters.
fn text(value: Option<&str>) -> Option<String> {
    value.map(|v| v.replace('\0', "\u{fffd}"))
}

impl ParkedRow {
    /// The row of a message taken off the dead-letter queue `dead`.
    pub(crate) fn of(delivery: &Delivery, dead: &str) -> Self {
        let properties = without_delivery_count(&delivery.properties);
        let header = |name| text(header_str(&properties, name));
        let identity = identify(&properties, &delivery.data);
        // Parked by a service: it said where from. Dead-lettered by the
        // broker (too many redeliveries): the broker did. Sent to `{p}.dead`
        // as an exchange's alternate: the exchange it was published to.
        let original_exchange = header(headers::ORIGINAL_EXCHANGE)
            .or_else(|| header("x-first-death-exchange"))
            .or_else(|| {
                let exchange = delivery.exchange.as_str();
                (!exchange.is_empty() && exchange != dead).then(|| exchange.to_owned())
            });
        let original_routing_key = header(headers::ORIGINAL_ROUTING_KEY)
            .or_else(|| text(Some(delivery.routing_key.as_str())));
        let encoded = encode_properties(&properties);
        Self {
            tenant: text(identity.tenant.as_deref()),
            kind: identity.kind,
            message_id: text(properties.message_id().as_ref().map(|m| m.as_str())),
            reason: header(headers::PARK_REASON),
            parked_by: header(headers::PARKED_BY),
            event_id: text(identity.event_id.as_deref()),
            endpoint_id: text(identity.endpoint_id.as_deref()),
            original_exchange,
            original_routing_key,
            fingerprint: fingerprint(&encoded, &delivery.data),
            properties: encoded,
            body: delivery.data.clone(),
        }
    }
}

/// The properties less the queue's [`DELIVERY_COUNT`].
fn without_delivery_count(properties: &BasicProperties) -> BasicProperties {
    let Some(table) = properties.headers().as_ref() else {
        return properties.clone();
    };
    if !table.inner().contains_key(DELIVERY_COUNT) {
        return properties.clone();
    }
    let mut kept = FieldTable::default();
    for (name, value) in table.inner() {
        if name.as_str() != DELIVERY_COUNT {
            kept.insert(name.clone(), value.clone());
        }
    }
    properties.clone().with_headers(kept)
}

/// SHA-256 of a message's encoded properties and its body.
fn fingerprint(encoded_properties: &[u8], body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update((encoded_properties.len() as u64).to_be_bytes());
    hash.update(encoded_properties);
    hash.update(body);
    hash.finalize().to_vec()
}

/// Writes `rows` in one statement; a row already there (same fingerprint)
/// is skipped.
async fn insert(pool: &Pool, rows: &[ParkedRow]) -> Result<u64, crate::dlq::DlqError> {
    let column = |f: fn(&ParkedRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let properties: Vec<&[u8]> = rows.iter().map(|r| r.properties.as_slice()).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
    let fingerprints: Vec<&[u8]> = rows.iter().map(|r| r.fingerprint.as_slice()).collect();
    let client = pool.get().await?;
    let written = client
        .execute(
            "INSERT INTO parked (tenant, kind, message_id, reason, parked_by, event_id,
                 endpoint_id, original_exchange, original_routing_key, properties, body,
                 fingerprint)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[],
                 $12::bytea[])
             ON CONFLICT (fingerprint) DO NOTHING",
            &[
                &column(|r| r.tenant.clone()),
                &kinds,
                &column(|r| r.message_id.clone()),
                &column(|r| r.reason.clone()),
                &column(|r| r.parked_by.clone()),
                &column(|r| r.event_id.clone()),
                &column(|r| r.endpoint_id.clone()),
                &column(|r| r.original_exchange.clone()),
                &column(|r| r.original_routing_key.clone()),
                &properties,
                &bodies,
                &fingerprints,
            ],
        )
        .await?;
    Ok(written)
}

impl Parking {
    /// Runs until `cancel` fires (then returns `Ok`, leaving unwritten
    /// messages in the queue) or the connection fails.
    pub async fn run(
        &self,
        connection: &Connection,
        cancel: &CancellationToken,
    ) -> lapin::Result<()> {
        let mut batches = Batches::open(
            connection,
            &self.topology.dead_queue(),
            "hookfleet-ledger-parking",
            BATCH,
            BATCH_WAIT,
        )
        .await?;
        let dead = self.topology.dead_exchange();
        while let Some(deliveries) = batches.next(cancel).await? {
            let rows: Vec<ParkedRow> = deliveries.iter().map(|d| ParkedRow::of(d, &dead)).collect();
            if !self.write(&rows, cancel).await {
                batches.close().await;
                return Ok(());
            }
            batches.ack(&deliveries).await?;
        }
        Ok(())
    }

    /// Writes the batch, retrying until it is committed; `false` if
    /// cancelled first.
    async fn write(&self, rows: &[ParkedRow], cancel: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match insert(&self.pool, rows).await {
                Ok(written) => {
                    metrics::counter!("hookfleet_parked_total").increment(written);
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot store parked messages; holding them in the queue");
                    metrics::counter!("hookfleet_parked_write_retries_total").increment(1);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookfleet_topology::headers_with;
    use lapin::types::AMQPValue;

    fn stored(properties: &BasicProperties, body: &[u8]) -> Vec<u8> {
        fingerprint(
            &encode_properties(&without_delivery_count(properties)),
            body,
        )
    }

    #[test]
    fn a_message_delivered_again_has_the_same_fingerprint() {
        let first = BasicProperties::default()
            .with_message_id("evt_1".into())
            .with_headers(headers_with([("x-tenant", "acme")]));
        let mut table = headers_with([("x-tenant", "acme")]);
        table.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(1));
        let again = first.clone().with_headers(table);
        assert_eq!(stored(&first, b"{}"), stored(&again, b"{}"));
        assert_eq!(
            without_delivery_count(&again),
            first,
            "the queue's count is not kept"
        );
    }

    #[test]
    fn other_messages_have_other_fingerprints() {
        let one = BasicProperties::default().with_message_id("evt_1".into());
        let two = BasicProperties::default().with_message_id("evt_2".into());
        assert_ne!(stored(&one, b"{}"), stored(&two, b"{}"));
        assert_ne!(stored(&one, b"{}"), stored(&one, b"[]"));
    }
}
