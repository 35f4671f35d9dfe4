//! The AMQP destination's consumer: the internal service the README's
//! "Internal destinations" shows, run by the chaos tool. An exchange and a
//! durable quorum queue named after the run (`{run id}_dest`, outside
//! hookfleet's `{run id}.` prefix, which destinations may not use), the
//! queue bound with `#`; a consumer that records every message as an
//! arrival of the destination endpoint and then acks it, keeps a set of the
//! `webhook-id`s it has handled as a receiver would to deduplicate, and
//! reconnects (declaring both again) whenever the broker goes away.
//!
//! A message the broker hands out again because this consumer lost its
//! connection before its ack (`redelivered`, and the same `webhook-id`,
//! `webhook-timestamp` and signature as one already recorded) is the
//! consumer's own repeat, not hookfleet's, and is counted apart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hookfleet_topology::header_str;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::receiver::{Answer, Arrival};

/// The exchange and the queue of run `run_id` (the same name: they live in
/// different namespaces).
pub fn name(run_id: &str) -> String {
    format!("{run_id}_dest")
}

/// What the consumer saw besides the arrivals.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConsumerSummary {
    pub exchange: String,
    pub queue: String,
    /// Messages recorded (arrivals of the destination endpoint).
    pub messages: usize,
    /// Messages whose `webhook-id` had been handled already: what a
    /// consumer deduplicating on it holds back (hookfleet's duplicates).
    pub deduplicated: usize,
    /// The broker's redeliveries of messages recorded but not acked when
    /// the consumer's connection went (not hookfleet's doing).
    pub consumer_redeliveries: usize,
    /// Messages without a `webhook-id`.
    pub unreadable: usize,
    /// Connections the consumer made (1 without broker faults).
    pub sessions: usize,
}

#[derive(Debug)]
struct Shared {
    origin: Instant,
    endpoint: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    arrivals: Vec<Arrival>,
    /// The `webhook-id`s handled, as the README's consumer keeps them.
    handled: HashSet<String>,
    /// (webhook-id, webhook-timestamp, webhook-signature) of every message
    /// recorded, to tell the consumer's own redeliveries.
    copies: HashSet<(String, String, String)>,
    summary: ConsumerSummary,
}

/// The running consumer.
#[derive(Debug)]
pub struct DestinationConsumer {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Declares the exchange (durable topic) and the queue (durable quorum),
/// and binds them; idempotent.
async fn declare(channel: &Channel, name: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    channel
        .queue_bind(
            name.into(),
            name.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

impl DestinationConsumer {
    /// Declares the run's exchange and queue (so the destination endpoint
    /// can be created: its publishes need a bound queue) and starts
    /// consuming; its arrivals are endpoint `endpoint`'s.
    pub async fn start(
        urls: &str,
        run_id: &str,
        origin: Instant,
        endpoint: usize,
    ) -> anyhow::Result<Self> {
        let name = name(run_id);
        let connection = crate::run::connect_any(urls, "hookfleet-chaos destination setup").await?;
        let channel = connection.create_channel().await?;
        declare(&channel, &name).await?;
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
        let shared = Arc::new(Shared {
            origin,
            endpoint,
            state: Mutex::new(State {
                summary: ConsumerSummary {
                    exchange: name.clone(),
                    queue: name.clone(),
                    ..ConsumerSummary::default()
                },
                ..State::default()
            }),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(consume(urls.to_owned(), name, shared.clone(), stop.clone()));
        Ok(Self { shared, stop, task })
    }

    pub fn arrival_count(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|s| s.arrivals.len())
            .unwrap_or(0)
    }

    /// Stops once the queue has been empty for a moment (or after
    /// `limit`), and returns the arrivals and the summary.
    pub async fn finish(&mut self, limit: Duration) -> (Vec<Arrival>, ConsumerSummary) {
        let started = Instant::now();
        let mut last = (self.arrival_count(), Instant::now());
        while started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.arrival_count();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(2) {
                break;
            }
        }
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
        let Ok(mut state) = self.shared.state.lock() else {
            return (Vec::new(), ConsumerSummary::default());
        };
        state.summary.messages = state.arrivals.len();
        (std::mem::take(&mut state.arrivals), state.summary.clone())
    }
}

impl Drop for DestinationConsumer {
    /// A run that fails stops its consumer, which would otherwise declare
    /// the queue again after the cleanup removed it.
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Sessions until stopped: each connects, declares, and consumes; a lost
/// connection starts the next after a short pause.
async fn consume(urls: String, name: String, shared: Arc<Shared>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(200);
    loop {
        match session(&urls, &name, &shared, &stop).await {
            Ok(()) => return,
            Err(error) => {
                if !stop.is_cancelled() {
                    eprintln!("  destination consumer: {error}; reconnecting");
                }
            }
        }
        tokio::select! {
            // One more session drains what is left, if the broker answers.
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(10), session(&urls, &name, &shared, &stop)).await;
                return;
            }
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One connection's worth of consuming. Ok once stopped and drained.
async fn session(
    urls: &str,
    name: &str,
    shared: &Shared,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let connection = crate::run::connect_any(urls, "hookfleet-chaos destination consumer").await?;
    if let Ok(mut state) = shared.state.lock() {
        state.summary.sessions += 1;
    }
    let channel = connection.create_channel().await?;
    declare(&channel, name).await?;
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            name.into(),
            "hookfleet-chaos".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => handle(shared, delivery).await?,
                Some(Err(error)) => return Err(error.into()),
                None => anyhow::bail!("the consumer ended"),
            },
        }
    }
    // Stopped: what was handed out already, then whatever is still queued.
    channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await?;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        handle(shared, delivery).await?;
    }
    while let Some(message) = channel
        .basic_get(name.into(), BasicGetOptions::default())
        .await?
    {
        handle(shared, message.delivery).await?;
    }
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}

/// Records one message, then acks it.
async fn handle(shared: &Shared, delivery: Delivery) -> lapin::Result<()> {
    let properties = &delivery.properties;
    let header = |n| header_str(properties, n).unwrap_or_default().to_owned();
    let id = header("webhook-id");
    let copy = (
        id.clone(),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let at = shared.origin.elapsed();
    if let Ok(mut state) = shared.state.lock() {
        if id.is_empty() {
            state.summary.unreadable += 1;
        } else if delivery.redelivered && state.copies.contains(&copy) {
            state.summary.consumer_redeliveries += 1;
        } else {
            state.copies.insert(copy);
            if !state.handled.insert(id.clone()) {
                state.summary.deduplicated += 1;
            }
            let endpoint = shared.endpoint;
            state.arrivals.push(Arrival {
                endpoint,
                event_id: id,
                answer: Answer::Ok,
                at,
                sender: None,
            });
        }
    }
    delivery.ack(BasicAckOptions::default()).await.map(|_| ())
}

/// Removes the run's exchange and queue (idempotent).
pub async fn delete(channel: &Channel, run_id: &str) -> lapin::Result<()> {
    let name = name(run_id);
    channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        .await
}
