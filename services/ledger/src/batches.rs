//! Consuming a queue in batches, as the recorder and the parking do: wait
//! for a first message, take whatever else arrives within a short wait up
//! to a batch's size, handle the batch as one, then ack it with one
//! multiple-ack (DESIGN.md invariant 1: only once the batch is durable).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;

/// A queue consumed on a channel of its own, a batch at a time. The
/// prefetch is two batches, so the next one fills while one is written.
#[derive(Debug)]
pub struct Batches {
    channel: Channel,
    consumer: Consumer,
    max: usize,
    wait: Duration,
}

impl Batches {
    /// Starts consuming `queue` in batches of at most `max` messages, each
    /// waiting at most `wait` to fill after its first message.
    pub async fn open(
        connection: &Connection,
        queue: &str,
        consumer_tag: &str,
        max: usize,
        wait: Duration,
    ) -> lapin::Result<Self> {
        let max = max.max(1);
        let channel = connection.create_channel().await?;
        let prefetch = u16::try_from(max * 2).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            channel,
            consumer,
            max,
            wait,
        })
    }

    /// The next batch, or `None` once `cancel` fires (the channel is then
    /// closed, and what it held goes back to the queue). An error means
    /// the channel or connection is gone.
    pub async fn next(
        &mut self,
        cancel: &CancellationToken,
    ) -> lapin::Result<Option<Vec<Delivery>>> {
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                self.close().await;
                return Ok(None);
            }
            next = self.consumer.next() => next.ok_or_else(consumer_ended)??,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.wait;
        while batch.len() < self.max {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Ok(Some(next)) => batch.push(next?),
                Ok(None) => return Err(consumer_ended()),
                Err(_) => break,
            }
        }
        Ok(Some(batch))
    }

    /// Acks every message of `batch` (and any before it) at once.
    pub async fn ack(&self, batch: &[Delivery]) -> lapin::Result<()> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        self.channel
            .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
            .await
    }

    /// Closes the channel: the messages taken and not acked go back to the
    /// queue.
    pub async fn close(&self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}

fn consumer_ended() -> lapin::Error {
    lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
        lapin::ChannelState::Closed,
        "consumer ended",
    ))
}
