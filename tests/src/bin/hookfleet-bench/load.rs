//! The load generators: HTTP batches (with or without ordering keys), raw
//! AMQP messages, and paced single HTTP events. Each writes its send time
//! into every payload; the receiver takes latencies from it.
//!
//! The unpaced generators keep at most `window` healthy deliveries to
//! endpoints without a rate limit outstanding (sent but not yet arrived),
//! so the pipeline always has work queued but the queues stay short: what
//! is measured is the pipeline's sustained rate, not how fast a backlog
//! drains. A rate-limited endpoint's backlog is meant to build up, so it
//! does not count.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::receiver::{Sink, payload};

/// The event type every scenario sends and its endpoints subscribe to.
pub const EVENT_TYPE: &str = "bench.a";
/// Payload size, bytes.
pub const PAYLOAD_BYTES: usize = 1024;
/// Tries per HTTP call before an event is given up.
const HTTP_TRIES: u32 = 5;
/// Ordering keys the keyed load draws from (scenario h).
pub const ORDERING_KEYS: u64 = 1000;

/// The ordering key of event `seq`, drawn from [`ORDERING_KEYS`] keys by a
/// fixed hash (splitmix64), so the receiver knows it from `seq` alone and
/// a key's events are spread irregularly over the run.
pub fn ordering_key(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % ORDERING_KEYS
}

/// What the generators share with the progress display.
#[derive(Debug)]
pub struct Load {
    pub origin: Instant,
    pub sink: Arc<Sink>,
    /// Healthy endpoints without a rate limit each event goes to: the
    /// deliveries the window counts.
    pub windowed_per_event: u64,
    /// Most healthy deliveries outstanding at once (unpaced generators).
    pub window: u64,
    /// Events handed to the producer or the broker so far.
    pub sent: AtomicU64,
    /// Events given up after repeated errors.
    pub failed: AtomicU64,
    /// When the first and last event were handed over.
    pub first_send: std::sync::Mutex<Option<Instant>>,
    pub last_send: std::sync::Mutex<Option<Instant>>,
}

impl Load {
    pub fn new(origin: Instant, sink: Arc<Sink>, windowed_per_event: u64, window: u64) -> Self {
        Self {
            origin,
            sink,
            windowed_per_event,
            window,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_send: Default::default(),
            last_send: Default::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn mark_sent(&self, events: u64) {
        let now = Instant::now();
        if let Ok(mut first) = self.first_send.lock() {
            first.get_or_insert(now);
        }
        if let Ok(mut last) = self.last_send.lock() {
            *last = Some(now);
        }
        self.sent.fetch_add(events, Ordering::Relaxed);
    }

    /// Waits until `upcoming` more events fit in the window.
    async fn room_for(&self, upcoming: u64) {
        loop {
            let sent = self.sent.load(Ordering::Relaxed) + upcoming;
            let arrived = self.sink.unlimited();
            let outstanding = (sent * self.windowed_per_event).saturating_sub(arrived);
            if outstanding <= self.window.max(self.windowed_per_event * upcoming) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// When the first event was handed over.
    pub fn first_sent(&self) -> Option<Instant> {
        *self.first_send.lock().ok()?
    }

    /// Events sent per second, first to last send.
    pub fn send_rate(&self) -> Option<f64> {
        let first = (*self.first_send.lock().ok()?)?;
        let last = (*self.last_send.lock().ok()?)?;
        let span = last.duration_since(first).as_secs_f64();
        (span > 0.0).then(|| self.sent.load(Ordering::Relaxed) as f64 / span)
    }
}

/// POSTs `body` to `url` until it is accepted (202) or the tries run out.
async fn post(client: &reqwest::Client, url: &str, body: String) -> bool {
    for attempt in 1..=HTTP_TRIES {
        match client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => return true,
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                eprintln!("\nwarning: {url} answered {status} (try {attempt}): {text}");
            }
            Err(error) => eprintln!("\nwarning: {url}: {error} (try {attempt})"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    false
}

/// Scenarios (a), (c), (d), (e): `POST /v1/events/batch` with `batch`
/// events each (`POST /v1/events` if 1), from `concurrency` concurrent
/// clients.
pub async fn http_batches(
    load: Arc<Load>,
    client: reqwest::Client,
    producer: String,
    events: u64,
    batch: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let batch = batch.clamp(1, 100);
    let url = events_url(&producer, batch);
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut calls = JoinSet::new();
    let mut seq = 0;
    while seq < events {
        let n = batch.min(events - seq);
        let slot = slots.clone().acquire_owned().await?;
        load.room_for(n).await;
        let body = call_body(batch, seq, n, load.now_ns());
        spawn_post(&mut calls, slot, &load, &client, &url, body, n);
        seq += n;
    }
    while calls.join_next().await.is_some() {}
    Ok(())
}

/// Scenario (h): `POST /v1/events/batch` with `batch` events each (`POST
/// /v1/events` if 1), each event with the ordering key
/// [`ordering_key`]`(seq)`, from `streams` concurrent streams. Stream `s`
/// owns the keys `k` with `k % streams == s` and sends its events in
/// `seq` order, each call only after the previous one's 202: so every
/// event of a key was accepted after the key's earlier ones, and an
/// ordered endpoint must receive each key's events in `seq` order.
pub async fn http_keyed_batches(
    load: Arc<Load>,
    client: reqwest::Client,
    producer: String,
    events: u64,
    batch: u64,
    streams: usize,
) -> anyhow::Result<()> {
    let batch = batch.clamp(1, 100) as usize;
    let streams = streams.max(1) as u64;
    let url = events_url(&producer, batch as u64);
    let mut running = JoinSet::new();
    for stream in 0..streams {
        let (load, client, url) = (load.clone(), client.clone(), url.clone());
        running.spawn(async move {
            let mut mine = (0..events).filter(|seq| ordering_key(*seq) % streams == stream);
            loop {
                let seqs: Vec<u64> = mine.by_ref().take(batch).collect();
                if seqs.is_empty() {
                    return;
                }
                let n = seqs.len() as u64;
                load.room_for(n).await;
                let body = keyed_call_body(batch, &seqs, load.now_ns());
                load.mark_sent(n);
                if !post(&client, &url, body).await {
                    load.failed.fetch_add(n, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(ended) = running.join_next().await {
        ended?;
    }
    Ok(())
}

/// Scenario (b): raw messages on the events exchange, as the AMQP ingest
/// contract describes them, with up to `confirm_window` unconfirmed.
pub async fn amqp_messages(
    load: Arc<Load>,
    channel: Channel,
    exchange: String,
    tenant: String,
    id_prefix: String,
    events: u64,
    confirm_window: usize,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(tenant.as_str())),
    );
    let base = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let mut outstanding = VecDeque::with_capacity(confirm_window);
    for seq in 0..events {
        load.room_for(1).await;
        let body = payload(seq, load.now_ns(), PAYLOAD_BYTES);
        let properties = base
            .clone()
            .with_message_id(format!("{id_prefix}{seq}").as_str().into());
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                EVENT_TYPE.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await?;
        load.mark_sent(1);
        outstanding.push_back(confirm);
        if outstanding.len() >= confirm_window
            && let Some(oldest) = outstanding.pop_front()
            && !oldest.await?.is_ack()
        {
            bail!("the broker refused an event (nack)");
        }
    }
    while let Some(confirm) = outstanding.pop_front() {
        if !confirm.await?.is_ack() {
            bail!("the broker refused an event (nack)");
        }
    }
    Ok(())
}

/// Scenarios (f), (g): events at a steady `rate` per second, `batch` per call
/// (1: `POST /v1/events`, more: `POST /v1/events/batch`), each call on its
/// own (at most `concurrency` at once).
pub async fn http_paced(
    load: Arc<Load>,
    client: reqwest::Client,
    producer: String,
    events: u64,
    rate: f64,
    batch: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let batch = batch.clamp(1, 100);
    let url = events_url(&producer, batch);
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut calls = JoinSet::new();
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut seq = 0;
    while seq < events {
        let n = batch.min(events - seq);
        let due = start + interval.mul_f64(seq as f64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let slot = slots.clone().acquire_owned().await?;
        let body = call_body(batch, seq, n, load.now_ns());
        spawn_post(&mut calls, slot, &load, &client, &url, body, n);
        seq += n;
    }
    while calls.join_next().await.is_some() {}
    Ok(())
}

/// Counts `n` events as sent and POSTs `body` in the background, holding
/// `slot` until the answer; reaps the calls that have ended.
fn spawn_post(
    calls: &mut JoinSet<()>,
    slot: tokio::sync::OwnedSemaphorePermit,
    load: &Arc<Load>,
    client: &reqwest::Client,
    url: &str,
    body: String,
    n: u64,
) {
    load.mark_sent(n);
    let (load, client, url) = (load.clone(), client.clone(), url.to_owned());
    calls.spawn(async move {
        if !post(&client, &url, body).await {
            load.failed.fetch_add(n, Ordering::Relaxed);
        }
        drop(slot);
    });
    while calls.try_join_next().is_some() {}
}

/// Where calls of `batch` events go: the single-event endpoint for 1.
fn events_url(producer: &str, batch: u64) -> String {
    if batch == 1 {
        format!("{producer}/v1/events")
    } else {
        format!("{producer}/v1/events/batch")
    }
}

/// The body of a call of `batch` events carrying events `seq..seq + n`:
/// one event for the single-event endpoint, else a batch.
fn call_body(batch: u64, seq: u64, n: u64, sent_ns: u64) -> String {
    if batch == 1 {
        format!(
            "{{\"type\":\"{EVENT_TYPE}\",\"payload\":{}}}",
            payload(seq, sent_ns, PAYLOAD_BYTES)
        )
    } else {
        batch_body(seq, n, sent_ns)
    }
}

/// The body of a call carrying events `seqs`, each with its ordering key:
/// one event for the single-event endpoint (`batch` 1), else a batch.
fn keyed_call_body(batch: usize, seqs: &[u64], sent_ns: u64) -> String {
    let event = |seq: u64| {
        format!(
            "{{\"type\":\"{EVENT_TYPE}\",\"ordering_key\":\"k{}\",\"payload\":{}}}",
            ordering_key(seq),
            payload(seq, sent_ns, PAYLOAD_BYTES)
        )
    };
    if batch == 1 {
        return seqs.first().map(|seq| event(*seq)).unwrap_or_default();
    }
    let events: Vec<String> = seqs.iter().map(|seq| event(*seq)).collect();
    format!("{{\"events\":[{}]}}", events.join(","))
}

/// The body of a batch call carrying events `seq..seq + n`.
fn batch_body(seq: u64, n: u64, sent_ns: u64) -> String {
    let mut body = String::with_capacity((n as usize) * (PAYLOAD_BYTES + 40) + 16);
    body.push_str("{\"events\":[");
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"type\":\"");
        body.push_str(EVENT_TYPE);
        body.push_str("\",\"payload\":");
        body.push_str(&payload(seq + i, sent_ns, PAYLOAD_BYTES));
        body.push('}');
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_keys_spread_over_all_keys() {
        let mut counts = vec![0u32; ORDERING_KEYS as usize];
        for seq in 0..100_000 {
            counts[ordering_key(seq) as usize] += 1;
        }
        // 100 per key on average; a fair draw stays well within this.
        assert!(counts.iter().all(|c| (50..=150).contains(c)), "{counts:?}");
    }

    #[test]
    fn keyed_bodies_carry_each_events_key() {
        let body: serde_json::Value =
            serde_json::from_str(&keyed_call_body(100, &[3, 9], 1)).unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["ordering_key"], format!("k{}", ordering_key(9)));
        assert_eq!(events[1]["payload"]["seq"], 9);
        let single: serde_json::Value = serde_json::from_str(&keyed_call_body(1, &[5], 1)).unwrap();
        assert_eq!(single["ordering_key"], format!("k{}", ordering_key(5)));
    }
}
