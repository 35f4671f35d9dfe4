//! Consuming a queue with bounded concurrency and a graceful drain.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Consumes `queue`, running `handler` on each delivery as its own task.
/// The broker's prefetch bounds how many run at once. The handler acks or
/// rejects its delivery itself.
///
/// When `cancel` fires, the consumer is cancelled, running handlers get up
/// to `drain` to finish, and deliveries not yet started go back to the queue
/// when the channel closes. Returns `Err` if the connection fails.
pub async fn consume<H, Fut>(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    cancel: &CancellationToken,
    drain: Duration,
    handler: H,
) -> lapin::Result<()>
where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut running = JoinSet::new();
    let failure = loop {
        tokio::select! {
            _ = cancel.cancelled() => break None,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    running.spawn(handler(delivery));
                }
                Some(Err(error)) => break Some(error),
                None => break Some(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed,
                    "consumer ended",
                ))),
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    };
    if let Some(error) = failure {
        running.abort_all();
        return Err(error);
    }
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    let drained = tokio::time::timeout(drain, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            queue,
            left = running.len(),
            "drain deadline passed; returning the rest to the queue"
        );
        running.abort_all();
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}

/// Acknowledges a delivery; a failure means the channel is gone and the
/// broker will redeliver, so it is only logged.
pub async fn ack(delivery: &Delivery) {
    if let Err(error) = delivery
        .acker
        .ack(lapin::options::BasicAckOptions::default())
        .await
    {
        tracing::warn!(%error, "ack failed; the message will be redelivered");
    }
}

/// Returns a delivery to its queue for another try.
pub async fn requeue(delivery: &Delivery) {
    let options = lapin::options::BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if let Err(error) = delivery.acker.nack(options).await {
        tracing::warn!(%error, "nack failed; the message will be redelivered");
    }
}
