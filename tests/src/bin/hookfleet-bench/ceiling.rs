//! The broker's raw ceiling on this machine: persistent 1 KiB messages
//! through one throwaway quorum queue, one publisher with confirms (a
//! window of outstanding confirms) and one consumer with manual acks, both
//! at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub queue_type: &'static str,
    pub messages: u64,
    pub message_bytes: usize,
    pub confirm_window: usize,
    pub prefetch: u16,
    /// Messages per second from the first publish to the last ack.
    pub msgs_per_s: f64,
    /// Confirmed publishes per second.
    pub publish_msgs_per_s: f64,
    /// Acked deliveries per second from the first to the last.
    pub consume_msgs_per_s: f64,
    pub elapsed_s: f64,
    /// CPU seconds RabbitMQ, and this process, used meanwhile.
    pub rabbitmq_cpu_s: f64,
    pub bench_cpu_s: f64,
}

#[derive(Debug, Default)]
struct Consumed {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

pub async fn measure(
    url: &str,
    queue: &str,
    messages: u64,
    window: usize,
    prefetch: u16,
) -> anyhow::Result<Ceiling> {
    let publishing = hookfleet_topology::connect(url, "hookfleet-bench ceiling publisher")
        .await
        .context("connect to RabbitMQ")?;
    let consuming = hookfleet_topology::connect(url, "hookfleet-bench ceiling consumer").await?;
    let machine = hookfleet_tests::fleet::MachineTicks::now();
    let bench = hookfleet_tests::fleet::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let mut result = run(&publishing, &consuming, queue, messages, window, prefetch).await;
    if let Ok(ceiling) = &mut result {
        let split =
            hookfleet_tests::fleet::MachineTicks::now().since(&machine, &[std::process::id()]);
        ceiling.rabbitmq_cpu_s = split.rabbitmq;
        ceiling.bench_cpu_s =
            hookfleet_tests::fleet::cpu_seconds(std::process::id()).unwrap_or(0.0) - bench;
    }
    if let Ok(channel) = publishing.create_channel().await {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = channel.close(200, "bye".into()).await;
    }
    let _ = consuming.close(200, "bye".into()).await;
    let _ = publishing.close(200, "bye".into()).await;
    result
}

async fn run(
    publishing: &Connection,
    consuming: &Connection,
    queue: &str,
    messages: u64,
    window: usize,
    prefetch: u16,
) -> anyhow::Result<Ceiling> {
    let channel = publishing.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .context("declare the ceiling queue")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let consumer_channel = consuming.create_channel().await?;
    consumer_channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "hookfleet-bench-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumed = Arc::new(Consumed::default());
    let done = Arc::new(tokio::sync::Notify::new());
    {
        let consumed = consumed.clone();
        let done = done.clone();
        consumer.set_delegate(move |delivery: lapin::message::DeliveryResult| {
            let consumed = consumed.clone();
            let done = done.clone();
            async move {
                let Ok(Some(delivery)) = delivery else {
                    return;
                };
                if delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .is_err()
                {
                    return;
                }
                let now = Instant::now();
                if let Ok(mut first) = consumed.first.lock() {
                    first.get_or_insert(now);
                }
                if let Ok(mut last) = consumed.last.lock() {
                    *last = Some(now);
                }
                if consumed.count.fetch_add(1, Ordering::Relaxed) + 1 >= messages {
                    done.notify_one();
                }
            }
        });
    }

    let body = vec![b'x'; 1024];
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/octet-stream".into());
    let mut outstanding = VecDeque::with_capacity(window);
    let started = Instant::now();
    for _ in 0..messages {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await?;
        outstanding.push_back(confirm);
        if outstanding.len() >= window
            && let Some(oldest) = outstanding.pop_front()
            && !oldest.await?.is_ack()
        {
            bail!("the broker refused a message (nack)");
        }
    }
    while let Some(confirm) = outstanding.pop_front() {
        if !confirm.await?.is_ack() {
            bail!("the broker refused a message (nack)");
        }
    }
    let published = started.elapsed();
    if consumed.count.load(Ordering::Relaxed) < messages
        && tokio::time::timeout(Duration::from_secs(300), done.notified())
            .await
            .is_err()
    {
        bail!(
            "only {} of {messages} messages came back",
            consumed.count.load(Ordering::Relaxed)
        );
    }
    let first = consumed.first.lock().ok().and_then(|f| *f);
    let last = consumed.last.lock().ok().and_then(|l| *l);
    let (Some(first), Some(last)) = (first, last) else {
        bail!("nothing was consumed");
    };
    let _ = consumer_channel.close(200, "bye".into()).await;
    let _ = channel.close(200, "bye".into()).await;
    let elapsed = last.duration_since(started).as_secs_f64();
    Ok(Ceiling {
        queue_type: "quorum",
        messages,
        message_bytes: body.len(),
        confirm_window: window,
        prefetch,
        msgs_per_s: messages as f64 / elapsed,
        publish_msgs_per_s: messages as f64 / published.as_secs_f64(),
        consume_msgs_per_s: (messages - 1) as f64
            / last.duration_since(first).as_secs_f64().max(1e-9),
        elapsed_s: elapsed,
        rabbitmq_cpu_s: 0.0,
        bench_cpu_s: 0.0,
    })
}
