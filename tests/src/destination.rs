//! A consumer of an AMQP destination, as an internal service would run
//! one: an exchange of its own (not under the test's hookfleet prefix) and
//! an exclusive queue bound to every routing key.

use std::sync::Mutex;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};

use crate::{Taken, TestApp, eventually};

#[derive(Debug)]
pub struct DestinationQueue {
    /// The exchange to name in the endpoint's destination.
    pub exchange: String,
    queue: String,
    connection: Connection,
    channel: Channel,
    taken: Mutex<Vec<Taken>>,
}

impl DestinationQueue {
    /// Declares `{name}-{test}` (a topic exchange, deleted with its queue)
    /// and a queue bound to it with `#`.
    pub async fn declare(app: &TestApp, name: &str) -> Self {
        Self::declare_bound(app, name, "#").await
    }

    /// The same with the queue bound by `binding` only.
    pub async fn declare_bound(app: &TestApp, name: &str, binding: &str) -> Self {
        Self::declare_at(&app.amqp.url, &format!("{name}-{}", app.name), binding).await
    }

    /// The exchange `exchange` and its queue bound by `binding`, on the
    /// broker (and vhost) at `amqp_url`.
    pub async fn declare_at(amqp_url: &str, exchange: &str, binding: &str) -> Self {
        let exchange = exchange.to_owned();
        let connection = hookfleet_topology::connect(amqp_url, "hookfleet-test-consumer")
            .await
            .expect("connect to the broker");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the destination exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the consumer's queue")
            .name()
            .to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the consumer's queue");
        Self {
            exchange,
            queue,
            connection,
            channel,
            taken: Mutex::new(Vec::new()),
        }
    }

    /// Waits until at least `count` messages arrived (or `limit` passed)
    /// and returns every one taken so far.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Taken> {
        eventually(limit, || async {
            self.take().await;
            let taken = self.taken.lock().ok()?.clone();
            (taken.len() >= count).then_some(taken)
        })
        .await
        .unwrap_or_else(|| self.taken.lock().map(|t| t.clone()).unwrap_or_default())
    }

    async fn take(&self) {
        while let Ok(Some(message)) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
        {
            if let Ok(mut taken) = self.taken.lock() {
                taken.push(Taken {
                    routing_key: message.delivery.routing_key.to_string(),
                    properties: message.delivery.properties.clone(),
                    body: message.delivery.data.clone(),
                });
            }
        }
    }

    /// Removes the exchange and the queue.
    pub async fn close(self) {
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}
