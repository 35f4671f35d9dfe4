//! The steady stream of events: one every 1/rate seconds, each with an id
//! of its own, retried with the same id (so the producer's idempotency
//! makes the retry safe) while the producer answers 503 or cannot be
//! reached, as it does while the broker is down. Most are `POST
//! /v1/events` and count as accepted once they got a 202; every
//! `inbound_every`-th comes through the inbound source instead, as GitHub
//! sends it ([`crate::inbound`]), and counts once it got a 200.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The event types of the run; every endpoint subscribes to one or both,
/// so every event goes to at least two endpoints.
pub const EVENT_TYPES: [&str; 2] = ["chaos.a", "chaos.b"];

#[derive(Debug, Default)]
pub struct Load {
    /// Accepted event id → its type.
    pub accepted: Mutex<BTreeMap<String, &'static str>>,
    /// Events created (each gets retried until accepted or given up).
    pub sent: AtomicU64,
    /// HTTP calls answered other than 202, or not answered.
    pub retries: AtomicU64,
    /// Events given up on: refused for good (a 4xx), or never accepted
    /// before the load stopped. Either may still have been published (a
    /// 202 lost on the way back), which the check tells apart.
    pub given_up: AtomicU64,
    /// The answers other than 202, by status (0: no answer).
    pub refusals: Mutex<BTreeMap<u16, u64>>,
    /// The seconds of the run (since its origin) in which ingest answered
    /// at least one 503: how long the front door was shut.
    pub seconds_with_503: Mutex<BTreeSet<u64>>,
    /// Accepted event id → when its 202 came, in seconds since the origin.
    pub accepted_at: Mutex<HashMap<String, f64>>,
    /// Accepted event id → (its ordering key, first sent, accepted).
    pub keyed: Mutex<BTreeMap<String, (String, Instant, Instant)>>,
    /// The part of the load that came through the inbound source.
    pub inbound: crate::inbound::InboundLoad,
}

/// The ordering keys of the run: the ordered endpoint gets each key's
/// events in order.
pub const ORDERING_KEYS: u64 = 40;

impl Load {
    pub fn accepted_count(&self) -> usize {
        self.accepted.lock().map(|a| a.len()).unwrap_or(0)
    }
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// A client with the tenant's token.
    pub api: reqwest::Client,
    pub producer: String,
    /// The source every `inbound_every`-th event comes through (0: none).
    pub inbound: Option<crate::inbound::Source>,
    pub inbound_every: u64,
}

impl Target {
    /// The source, if event `seq` comes through it.
    fn inbound_for(&self, seq: u64) -> Option<&crate::inbound::Source> {
        let every = self.inbound_every;
        self.inbound
            .as_ref()
            .filter(|_| every > 0 && seq % every == every - 1)
    }
}

/// Sends `rate` events per second until `stop` is cancelled; then gives
/// events still being retried `grace` to be accepted.
pub async fn run(
    load: Arc<Load>,
    origin: Instant,
    target: Target,
    run_id: String,
    rate: f64,
    stop: CancellationToken,
    grace: Duration,
) {
    let give_up = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(source) = target.inbound_for(seq) {
            tasks.spawn(crate::inbound::send(
                load.clone(),
                origin,
                source.clone(),
                seq,
                give_up.clone(),
            ));
        } else {
            load.sent.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(send(
                load.clone(),
                origin,
                target.api.clone(),
                target.producer.clone(),
                format!("{run_id}-{seq:07}"),
                EVENT_TYPES[(seq % 2) as usize],
                seq + 1,
                give_up.clone(),
            ));
        }
        seq += 1;
        // Reap finished sends as we go.
        while tasks.try_join_next().is_some() {}
    }
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                give_up.cancel();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    load: Arc<Load>,
    origin: Instant,
    api: reqwest::Client,
    producer: String,
    id: String,
    event_type: &'static str,
    seq: u64,
    give_up: CancellationToken,
) {
    let key = format!("key-{}", seq % ORDERING_KEYS);
    let body = serde_json::json!({
        "id": id,
        "type": event_type,
        "ordering_key": key,
        "payload": { "seq": seq, "note": "hookfleet-chaos" },
    });
    let sent_at = Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        let answer = api
            .post(format!("{producer}/v1/events"))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        let status = answer.as_ref().map_or(0, |r| r.status().as_u16());
        let at = origin.elapsed().as_secs_f64();
        if status == 202 {
            if let Ok(mut accepted_at) = load.accepted_at.lock() {
                accepted_at.insert(id.clone(), at);
            }
            if let Ok(mut keyed) = load.keyed.lock() {
                keyed.insert(id.clone(), (key, sent_at, Instant::now()));
            }
            if let Ok(mut accepted) = load.accepted.lock() {
                accepted.insert(id, event_type);
            }
            return;
        }
        if status == 503
            && let Ok(mut seconds) = load.seconds_with_503.lock()
        {
            seconds.insert(at as u64);
        }
        load.retries.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut refusals) = load.refusals.lock() {
            *refusals.entry(status).or_default() += 1;
        }
        // A 4xx other than 429 will not change with a retry.
        if (400..500).contains(&status) && status != 429 {
            load.given_up.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tokio::select! {
            _ = give_up.cancelled() => {
                load.given_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
