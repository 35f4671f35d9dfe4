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

use crate::settle::{Settle, Settler};

/// Consumes `queue`, running `handler` on each delivery as its own task.
/// The broker's prefetch bounds how many run at once. The handler settles
/// its delivery through the [`Settle`] it is given; acks of deliveries that
/// finished in a row go to the broker as one multiple-ack.
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
    H: Fn(Delivery, Settle) -> Fut,
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
    let settler = Settler::start(channel.clone());
    let mut running = JoinSet::new();
    let failure = loop {
        tokio::select! {
            _ = cancel.cancelled() => break None,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let settle = settler.track(delivery.delivery_tag);
                    running.spawn(handler(delivery, settle));
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
    // The last acks leave before the channel closes (the broker would
    // otherwise requeue deliveries that were done).
    let _ = tokio::time::timeout(Duration::from_secs(2), settler.idle()).await;
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}
