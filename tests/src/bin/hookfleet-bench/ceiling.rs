//! The broker's raw ceiling on this machine: persistent 1 KiB messages
//! through one throwaway quorum queue, one publisher with confirms (a
//! window of outstanding confirms) and one consumer with manual acks, both
//! at once.
//!
//! It is the broker at its best, so that a scenario's ratio to it is
//! honest: the consumer acks with `multiple` once every `ack_every`
//! deliveries (and the last), as a tuned consumer would, rather than one
//! ack per message. The defaults are the best of a grid measured with
//! `scripts/bench --ceiling --ack-every 1,64` on the 2-core VM on
//! 2026-12-02 (20,000 messages per setting, the machine busy with other
//! builds): acking every 64 gave 14,800-19,000 msg/s against
//! 11,400-13,100 acking each; confirm window 256 / 1024 by prefetch
//! 256 / 1024 were within the noise of each other (256 / 256 best, 18,987).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;

/// Unconfirmed publishes of the ceiling's publisher, by default.
pub const DEFAULT_CONFIRM_WINDOW: usize = 256;
/// Prefetch of the ceiling's consumer, by default.
pub const DEFAULT_PREFETCH: u16 = 256;
/// Deliveries per multiple-ack of the ceiling's consumer, by default.
pub const DEFAULT_ACK_EVERY: u16 = 64;
/// Size of every ceiling message.
const MESSAGE_BYTES: usize = 1024;

/// How the ceiling is measured.
#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    /// Messages for the broker ceiling (default 50000; --quick 5000).
    #[arg(id = "ceiling_messages", value_name = "N", long = "ceiling-messages")]
    pub messages: Option<u64>,
    /// Unconfirmed publishes allowed at once by the ceiling's publisher.
    #[arg(id = "ceiling_confirm_window", value_name = "N", long = "ceiling-confirm-window", default_value_t = DEFAULT_CONFIRM_WINDOW)]
    pub confirm_window: usize,
    /// Prefetch of the ceiling's consumer.
    #[arg(id = "ceiling_prefetch", value_name = "N", long = "ceiling-prefetch", default_value_t = DEFAULT_PREFETCH)]
    pub prefetch: u16,
    /// The ceiling's consumer acks with `multiple` every this many
    /// deliveries (at most the prefetch), and the last one.
    #[arg(id = "ceiling_ack_every", value_name = "N", long = "ceiling-ack-every", default_value_t = DEFAULT_ACK_EVERY)]
    pub ack_every: u16,
}

/// `hookfleet-bench ceiling`: the ceiling under several settings, to choose
/// the defaults.
#[derive(Debug, Clone, Args)]
pub struct GridArgs {
    #[command(flatten)]
    pub common: crate::Common,
    /// Messages per setting.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Confirm windows to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 1024])]
    pub confirm_windows: Vec<usize>,
    /// Prefetches to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 1024])]
    pub prefetches: Vec<u16>,
    /// Deliveries per multiple-ack, comma-separated (1: every message on
    /// its own).
    #[arg(long, value_delimiter = ',', default_values_t = [DEFAULT_ACK_EVERY])]
    pub ack_every: Vec<u16>,
}

/// Measures every combination of the grid once, prints a line for each
/// and the best.
pub async fn grid(args: GridArgs) -> anyhow::Result<()> {
    let run_id = hookfleet_tests::fleet::run_id_or_new(args.common.run_id.as_deref(), "hfceil")?;
    let queue = format!("{run_id}_ceiling");
    // An interrupted measurement leaves its queue; it goes here.
    let measured = tokio::select! {
        result = measure_grid(&args, &queue) => result,
        signal = hookfleet_tests::fleet::interrupted() => {
            crate::scenario::delete_all(&args.common.amqp_url, &[queue], &[]).await;
            Err(anyhow::anyhow!("interrupted by {signal}"))
        }
    };
    if let Some(best) = measured? {
        println!("best: {}", best.method);
    }
    Ok(())
}

/// The grid's measurements, one after the other; the best.
async fn measure_grid(args: &GridArgs, queue: &str) -> anyhow::Result<Option<Ceiling>> {
    let mut best: Option<Ceiling> = None;
    for &window in &args.confirm_windows {
        for &prefetch in &args.prefetches {
            for &ack_every in &args.ack_every {
                let settings = CeilingArgs {
                    messages: Some(args.messages),
                    confirm_window: window,
                    prefetch,
                    ack_every,
                };
                let c = measure(&args.common.amqp_url, queue, &settings, args.messages).await?;
                println!(
                    "confirm window {window:>5}  prefetch {prefetch:>5}  ack every {:>4}  \
                     {:>7.0} msg/s  (publish {:.0}/s, consume {:.0}/s; RabbitMQ {:.1} CPU s)",
                    c.ack_every,
                    c.msgs_per_s,
                    c.publish_msgs_per_s,
                    c.consume_msgs_per_s,
                    c.rabbitmq_cpu_s
                );
                if best.as_ref().is_none_or(|b| c.msgs_per_s > b.msgs_per_s) {
                    best = Some(c);
                }
            }
        }
    }
    Ok(best)
}

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// How it was measured, in a sentence.
    pub method: String,
    pub queue_type: &'static str,
    pub messages: u64,
    pub message_bytes: usize,
    pub publishers: u32,
    pub consumers: u32,
    pub confirm_window: usize,
    pub prefetch: u16,
    /// Deliveries per multiple-ack of the consumer.
    pub ack_every: u16,
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

/// The consumer's progress. Lapin runs each delivery's callback as its own
/// task, so they may finish out of order: a multiple-ack names the highest
/// tag seen, and acks go out one at a time in that order (a multiple-ack
/// of a tag already covered would close the channel).
#[derive(Debug, Default)]
struct Consumed {
    count: u64,
    highest_tag: u64,
    acked_tag: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Consumed {
    /// Counts the delivery of `tag`; the tag to multiple-ack now, if any:
    /// the highest seen, every `ack_every` deliveries and at the last of
    /// `messages`, never one already covered.
    fn arrived(&mut self, tag: u64, ack_every: u16, messages: u64) -> Option<u64> {
        self.count += 1;
        self.highest_tag = self.highest_tag.max(tag);
        let due = self.count.is_multiple_of(u64::from(ack_every.max(1))) || self.count >= messages;
        (due && self.highest_tag > self.acked_tag).then_some(self.highest_tag)
    }
}

/// Measures the ceiling with `settings`, sending `messages`, through a
/// queue named `queue` that it declares and deletes.
pub async fn measure(
    url: &str,
    queue: &str,
    settings: &CeilingArgs,
    messages: u64,
) -> anyhow::Result<Ceiling> {
    let publishing = hookfleet_topology::connect(url, "hookfleet-bench ceiling publisher")
        .await
        .context("connect to RabbitMQ")?;
    let consuming = hookfleet_topology::connect(url, "hookfleet-bench ceiling consumer").await?;
    let machine = hookfleet_tests::fleet::MachineTicks::now();
    let bench = hookfleet_tests::fleet::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let mut result = run(&publishing, &consuming, queue, settings, messages).await;
    if let Ok(ceiling) = &mut result {
        let split =
            hookfleet_tests::fleet::MachineTicks::now().since(&machine, &[std::process::id()]);
        ceiling.rabbitmq_cpu_s = hookfleet_tests::fleet::round3(split.rabbitmq);
        ceiling.bench_cpu_s = hookfleet_tests::fleet::round3(
            hookfleet_tests::fleet::cpu_seconds(std::process::id()).unwrap_or(0.0) - bench,
        );
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
    settings: &CeilingArgs,
    messages: u64,
) -> anyhow::Result<Ceiling> {
    let window = settings.confirm_window.max(1);
    let prefetch = settings.prefetch.max(1);
    // More per ack than the prefetch lets through would never come.
    let ack_every = settings.ack_every.clamp(1, prefetch);
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
    let (consumed, done) = consume(&consumer_channel, queue, prefetch, ack_every, messages).await?;

    let body = vec![b'x'; MESSAGE_BYTES];
    let started = Instant::now();
    publish(&channel, queue, &body, window, messages).await?;
    let published = started.elapsed();
    let finished = tokio::time::timeout(Duration::from_secs(300), done.notified()).await;
    let state = consumed.lock().await;
    if finished.is_err() && state.count < messages {
        bail!("only {} of {messages} messages came back", state.count);
    }
    let (Some(first), Some(last)) = (state.first, state.last) else {
        bail!("nothing was consumed");
    };
    drop(state);
    let _ = consumer_channel.close(200, "bye".into()).await;
    let _ = channel.close(200, "bye".into()).await;
    let elapsed = last.duration_since(started).as_secs_f64();
    Ok(Ceiling {
        method: format!(
            "{messages} persistent {MESSAGE_BYTES} B messages through one quorum queue; \
             1 publisher (confirms, window {window}) and 1 consumer (manual acks, prefetch \
             {prefetch}, one multiple-ack every {ack_every} deliveries and the last) at once"
        ),
        queue_type: "quorum",
        messages,
        message_bytes: body.len(),
        publishers: 1,
        consumers: 1,
        confirm_window: window,
        prefetch,
        ack_every,
        msgs_per_s: messages as f64 / elapsed,
        publish_msgs_per_s: messages as f64 / published.as_secs_f64(),
        consume_msgs_per_s: (messages - 1) as f64
            / last.duration_since(first).as_secs_f64().max(1e-9),
        elapsed_s: elapsed,
        rabbitmq_cpu_s: 0.0,
        bench_cpu_s: 0.0,
    })
}

/// Starts consuming `queue`; the progress, and a signal once `messages`
/// were acked.
async fn consume(
    channel: &Channel,
    queue: &str,
    prefetch: u16,
    ack_every: u16,
    messages: u64,
) -> anyhow::Result<(Arc<tokio::sync::Mutex<Consumed>>, Arc<tokio::sync::Notify>)> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "hookfleet-bench-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumed = Arc::new(tokio::sync::Mutex::new(Consumed::default()));
    let done = Arc::new(tokio::sync::Notify::new());
    // Lapin runs each callback as its own task; they only pass the tag on,
    // and one task counts and acks, so acks leave in order.
    let (tags, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |delivery: lapin::message::DeliveryResult| {
        if let Ok(Some(delivery)) = delivery {
            let _ = tags.send(delivery.delivery_tag);
        }
        std::future::ready(())
    });
    let (state, signal, channel) = (consumed.clone(), done.clone(), channel.clone());
    tokio::spawn(async move {
        while let Some(tag) = arrived.recv().await {
            let mut state = state.lock().await;
            state.first.get_or_insert_with(Instant::now);
            let Some(tag) = state.arrived(tag, ack_every, messages) else {
                continue;
            };
            if channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .is_err()
            {
                return;
            }
            state.acked_tag = tag;
            state.last = Some(Instant::now());
            if state.count >= messages {
                signal.notify_one();
                return;
            }
        }
    });
    Ok((consumed, done))
}

/// Publishes `messages` copies of `body` to `queue`, persistent, with up
/// to `window` unconfirmed; returns once all are confirmed.
async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    window: usize,
    messages: u64,
) -> anyhow::Result<()> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/octet-stream".into());
    let mut outstanding = VecDeque::with_capacity(window);
    for _ in 0..messages {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Consumed;

    /// Feeds `tags` in that order; the acks sent, each marked done.
    fn acks(tags: &[u64], ack_every: u16) -> Vec<u64> {
        let mut consumed = Consumed::default();
        let mut sent = Vec::new();
        for &tag in tags {
            if let Some(ack) = consumed.arrived(tag, ack_every, tags.len() as u64) {
                consumed.acked_tag = ack;
                sent.push(ack);
            }
        }
        sent
    }

    #[test]
    fn acks_every_n_deliveries_and_the_last() {
        let tags: Vec<u64> = (1..=10).collect();
        assert_eq!(acks(&tags, 4), vec![4, 8, 10]);
        assert_eq!(acks(&tags, 1), tags);
    }

    #[test]
    fn out_of_order_deliveries_never_ack_a_covered_tag() {
        // The callbacks of 3 and 4 ran before that of 2.
        assert_eq!(acks(&[1, 3, 4, 2, 5, 6], 2), vec![3, 4, 6]);
        // The last ack covers every tag however they arrived.
        assert_eq!(acks(&[2, 1, 4, 3], 3).last(), Some(&4));
    }
}
