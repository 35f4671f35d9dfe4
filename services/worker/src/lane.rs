//! Lanes (issue 17): the tasks one owner must decide. A lane queue has a
//! single active consumer, so exactly one worker in the fleet holds it;
//! when that worker dies, the broker hands the lane (and every task the
//! dead holder had not acked) to the next.
//!
//! The holder keeps two promises:
//!
//! - **Order per key.** A task of an ordered endpoint whose key has a
//!   delivery in progress is held back (unacked, in memory) until that
//!   delivery ends: delivered, or exhausted and parked. A retry goes
//!   through the delay levels back to its lane, and its key stays blocked
//!   on it meanwhile; the blocked keys whose head is out in the delay
//!   levels are written to the lane's state queue before the head is
//!   acked, so a holder that takes over knows them before it hands out a
//!   later task of their key. Tasks held back stay unacked, so they come
//!   back to the next holder in queue order.
//! - **Bounded memory.** A holder keeps at most `lane_hold_limit` tasks
//!   held back for keys whose head is out in the delay levels (a key
//!   whose head is being attempted drains on its own, and its tasks are
//!   held within the prefetch). Past it, such a blocked key *overflows*:
//!   its held tasks, and every later one, are set aside through the delay levels, each with
//!   its place in the key's line (the `x-hookfleet-aside` header), and
//!   acked once the copy and the key's line (in the state queue) are
//!   confirmed. So the lane's prefetch never fills with one key, its
//!   head's retries still get through, and other keys flow on. Set-aside
//!   tasks come back in any order; one whose turn is near is kept (at
//!   most [`WINDOW`] a key), one whose turn is far goes round again, and
//!   once the key is free they go in their places' order.
//! - **The rate limit.** Every task of a rate-limited endpoint is in one
//!   lane, so one token bucket (a GCRA) spaces its attempts, fleet-wide.
//!   A task waiting for its turn is not an attempt and holds no slot of
//!   the deliver queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hookfleet_contract::{DeliveryTask, headers};
use hookfleet_topology::{PublishError, Publisher, Settle, Settler, header_str, persistent_json};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Deliverer, Handled};

/// A key's head that went to the delay levels and has not ended comes
/// back at the latest this long after it was due, or its key is let go
/// (it was lost to the dead-letter queue by the broker, say): a key is
/// never blocked forever.
const OVERDUE: Duration = Duration::from_secs(120);

/// How many tasks a lane holder takes in hand at most by default
/// (`delivery.lane_prefetch`: held back, waiting for a token, or in
/// progress). Held tasks count against it; a head that went to the delay
/// levels comes back behind whatever the lane held, so the lane must take
/// more than it holds back (`delivery.lane_hold_limit`, half of this by
/// default), or it would wait for the head until [`OVERDUE`].
pub const LANE_PREFETCH: u16 = 1000;

/// How many of a key's set-aside tasks a holder keeps when they come back
/// ahead of their turn; the others go round the delay levels again.
pub const WINDOW: u64 = 64;

/// How long a set-aside task stays out at least, and at most (it comes
/// back about when its key's head is due, within these).
const ASIDE_MIN: Duration = Duration::from_secs(2);
const ASIDE_MAX: Duration = Duration::from_secs(300);

/// How much a lane holder takes in hand, and holds back in memory.
#[derive(Debug, Clone, Copy)]
pub struct LaneLimits {
    /// The lane channel's prefetch (`delivery.lane_prefetch`).
    pub prefetch: u16,
    /// Tasks held back in memory, over all keys, before a blocked key
    /// overflows to the delay levels (`delivery.lane_hold_limit`).
    pub hold: usize,
}

/// What the lane's state queue holds: every key whose head is out in the
/// delay levels, with that head's delivery id and when it is due back
/// (milliseconds since the epoch), and every key with tasks set aside.
type Persisted = BTreeMap<String, PersistedKey>;

/// One key in the lane's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum PersistedKey {
    /// As written before tasks could be set aside: the head only.
    Head(String, i64),
    Full {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        head: Option<(String, i64)>,
        /// The key's line of set-aside tasks: the place of the first not
        /// ended, of the last, and whether the head is the first's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aside: Option<(u64, u64, bool)>,
    },
}

/// A key's tasks out in the delay levels, set aside in its line.
#[derive(Debug, Default)]
struct Aside {
    /// The place of the first one whose delivery has not ended.
    next: u64,
    /// The place given to the last one set aside.
    last: u64,
    /// The place of the one being delivered (in flight, or its head out
    /// in the delay levels): always `next` when set.
    in_progress: Option<u64>,
    /// Ones back ahead of their turn (within [`WINDOW`]), by place.
    back: BTreeMap<u64, (Delivery, Settle)>,
    /// Since when the key has waited for its next one to come back.
    waiting_since: Option<Instant>,
}

impl Aside {
    /// Whether every task set aside has been delivered or has ended.
    fn is_done(&self) -> bool {
        self.next > self.last
    }
}

/// A key with a delivery that has not ended.
#[derive(Debug)]
struct Blocked {
    /// The delivery in progress or out in the delay levels.
    head: Head,
    /// Later tasks of the key, in arrival order, unacked.
    held: VecDeque<(Delivery, Settle)>,
    /// The head as the lane's state queue lists it (from when it first
    /// went away until its delivery ends).
    listed: Option<(String, i64)>,
    /// Tasks of the key set aside (it overflowed); while there are any,
    /// `held` is empty and later tasks are set aside too.
    aside: Option<Aside>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Head {
    /// No delivery in progress: the key waits for its next set-aside task
    /// to come back.
    Idle,
    /// Being attempted now (or waiting for a token).
    InFlight,
    /// Out in the delay levels: this delivery id, due back by then.
    Away { delivery_id: String, due_at: i64 },
}

/// An attempt's end, reported back to the lane's loop.
struct Done {
    key: Option<String>,
    delivery_id: String,
    handled: Handled,
    /// When it is due back, for a rescheduled task.
    due_at: i64,
    settle: Settle,
}

/// One endpoint's token bucket, as a generic cell rate algorithm: the
/// theoretical arrival time of the next attempt, and a burst tolerance of
/// a tenth of a second's worth (so that any 10 s window holds at most
/// 10.1 s worth of attempts).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    next: Instant,
}

impl Bucket {
    /// When the next attempt at `per_second` may start, reserving it.
    pub fn reserve(&mut self, per_second: u32, now: Instant) -> Instant {
        let per_second = per_second.max(1);
        let interval = Duration::from_secs(1) / per_second;
        let tolerance = interval * (per_second / 10).saturating_sub(1);
        let at = self.next.checked_sub(tolerance).unwrap_or(now).max(now);
        self.next = self.next.max(now) + interval;
        at
    }

    pub fn new(now: Instant) -> Self {
        Self { next: now }
    }
}

/// Holds lane `lane` for as long as this session lasts.
pub async fn hold(
    deliverer: Arc<Deliverer>,
    connection: Arc<Connection>,
    publisher: Publisher,
    lane: u16,
    limits: LaneLimits,
    cancel: CancellationToken,
    drain: Duration,
) -> lapin::Result<()> {
    let queue = deliverer.topology.lane_queue(lane);
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(limits.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let settler = Settler::start(channel.clone());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut holder = Holder {
        state_queue: deliverer.topology.lane_state_queue(lane),
        lane,
        limits,
        deliverer,
        publisher,
        loaded: false,
        blocked: HashMap::new(),
        buckets: HashMap::new(),
        done: done_tx,
        in_flight: 0,
        held: 0,
        draining: false,
    };
    let mut overdue = tokio::time::interval(Duration::from_secs(1));
    let mut failed = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let settle = settler.track(delivery.delivery_tag);
                    if !holder.loaded {
                        holder.load(&channel).await?;
                    }
                    if let Err(error) = holder.arrived(delivery, settle).await {
                        failed = Some(error);
                        break;
                    }
                }
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            Some(done) = done_rx.recv() => holder.ended(done).await,
            _ = overdue.tick() => holder.let_go_overdue().await,
        }
    }
    // Attempts in progress finish and are settled; whatever is held goes
    // back to the lane with the channel, in queue order, for the next
    // holder. The consumer is not cancelled first: with a single active
    // consumer that would hand the lane over at once, and the next holder
    // would send a key's later task while this one still has the key's
    // head in flight (the short chaos run saw it at a worker's SIGTERM).
    // Tasks that arrive meanwhile are kept, unsettled, and go back too.
    holder.draining = true;
    let mut arriving = Vec::new();
    let _ = tokio::time::timeout(drain, async {
        let mut consuming = true;
        while holder.in_flight > 0 {
            tokio::select! {
                done = done_rx.recv() => match done {
                    Some(done) => holder.ended(done).await,
                    None => break,
                },
                next = consumer.next(), if consuming => match next {
                    Some(Ok(delivery)) => {
                        let settle = settler.track(delivery.delivery_tag);
                        arriving.push((delivery, settle));
                    }
                    _ => consuming = false,
                },
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), settler.idle()).await;
    let _ = channel.close(200, "done".into()).await;
    // Only now: dropped unsettled before the close, they would be
    // requeued to this same consumer.
    drop(arriving);
    match failed {
        // Setting tasks aside failed: the session starts again, and what
        // this holder had in hand goes back to the lane in order.
        Some(error) => Err(lapin::Error::from(std::io::Error::other(format!(
            "lane {lane}: setting tasks aside failed: {error}"
        )))),
        None => Ok(()),
    }
}

struct Holder {
    deliverer: Arc<Deliverer>,
    publisher: Publisher,
    state_queue: String,
    lane: u16,
    limits: LaneLimits,
    /// Whether the blocked keys of the previous holder were read: done
    /// at the first delivery, when this consumer has become the active one.
    loaded: bool,
    blocked: HashMap<String, Blocked>,
    buckets: HashMap<String, Bucket>,
    done: mpsc::UnboundedSender<Done>,
    /// Attempts started and not yet reported back.
    in_flight: usize,
    /// Tasks held back in memory, over all keys (set-aside ones back
    /// ahead of their turn included).
    held: usize,
    /// Shutting down: held tasks stay held (and go back to the lane).
    draining: bool,
}

impl Holder {
    /// Reads the blocked keys the previous holder left (the state message
    /// stays in its queue for the next).
    async fn load(&mut self, channel: &lapin::Channel) -> lapin::Result<()> {
        let got = channel
            .basic_get(self.state_queue.as_str().into(), BasicGetOptions::default())
            .await?;
        if let Some(message) = got {
            let persisted: Persisted = serde_json::from_slice(&message.delivery.data)
                .unwrap_or_else(|error| {
                    tracing::error!(%error, queue = %self.state_queue, "a lane state does not parse; starting without it");
                    Persisted::new()
                });
            channel
                .basic_reject(
                    message.delivery.delivery_tag,
                    BasicRejectOptions { requeue: true },
                )
                .await?;
            for (key, state) in persisted {
                let (head, line) = match state {
                    PersistedKey::Head(delivery_id, due_at) => (Some((delivery_id, due_at)), None),
                    PersistedKey::Full { head, aside } => (head, aside),
                };
                tracing::info!(key = %key, ?head, ?line, "lane taken over with a blocked key");
                let aside = line.map(|(next, last, head_in_line)| Aside {
                    next,
                    last,
                    in_progress: (head_in_line && head.is_some()).then_some(next),
                    back: BTreeMap::new(),
                    waiting_since: head.is_none().then(Instant::now),
                });
                self.blocked.insert(
                    key,
                    Blocked {
                        head: match &head {
                            Some((delivery_id, due_at)) => Head::Away {
                                delivery_id: delivery_id.clone(),
                                due_at: *due_at,
                            },
                            None => Head::Idle,
                        },
                        held: VecDeque::new(),
                        listed: head,
                        aside,
                    },
                );
            }
        }
        self.loaded = true;
        Ok(())
    }

    async fn arrived(&mut self, delivery: Delivery, settle: Settle) -> Result<(), PublishError> {
        let task = header_str(&delivery.properties, headers::META)
            .and_then(|meta| DeliveryTask::from_meta_json(meta).ok());
        let Some(task) = task else {
            // Malformed: the deliverer parks it.
            self.start(delivery, settle, None, None);
            return Ok(());
        };
        // A task without lane details (published by hand) is decided
        // here all the same, unordered and unlimited.
        let (ordering_key, rate_limit) = task
            .lane
            .clone()
            .map(|lane| (lane.ordering_key, lane.rate_limit))
            .unwrap_or_default();
        let Some(ordering_key) = ordering_key else {
            self.start(delivery, settle, None, Some((&task, rate_limit)));
            return Ok(());
        };
        let key = format!("{}\0{}", task.endpoint_id, ordering_key);
        let place = header_str(&delivery.properties, headers::ASIDE)
            .and_then(|place| place.parse::<u64>().ok());
        let Some(blocked) = self.blocked.get_mut(&key) else {
            if place.is_some() {
                tracing::warn!(key = %key, "a set-aside task came back to a key without a line (its state was lost); sending it");
            }
            self.blocked.insert(
                key.clone(),
                Blocked {
                    head: Head::InFlight,
                    held: VecDeque::new(),
                    listed: None,
                    aside: None,
                },
            );
            self.start(delivery, settle, Some(key), Some((&task, rate_limit)));
            return Ok(());
        };
        // The head, back from the delay levels (or requeued).
        if matches!(&blocked.head, Head::Away { delivery_id, .. } if *delivery_id == task.delivery_id.as_str())
        {
            blocked.head = Head::InFlight;
            self.start(delivery, settle, Some(key), Some((&task, rate_limit)));
            return Ok(());
        }
        if let Some(aside) = &mut blocked.aside {
            match place {
                // A copy of one that ended or is in progress (the delay
                // levels dead-letter at least once).
                Some(place)
                    if place < aside.next
                        || aside.in_progress == Some(place)
                        || aside.back.contains_key(&place) =>
                {
                    metrics::counter!("hookfleet_lane_aside_repeats_total").increment(1);
                    settle.ack();
                }
                // The next to go (one a key, over the limit), or near and
                // there is room.
                Some(place)
                    if place == aside.next + u64::from(aside.in_progress.is_some())
                        || (place < aside.next + WINDOW && self.held < self.limits.hold) =>
                {
                    aside.back.insert(place, (delivery, settle));
                    self.held += 1;
                    self.advance(&key);
                }
                // Its turn is far: round again, in the same place.
                Some(place) => {
                    self.set_aside(&key, vec![(delivery, settle, Some(place))])
                        .await?
                }
                None => self.set_aside(&key, vec![(delivery, settle, None)]).await?,
            }
            return Ok(());
        }
        // A key whose head is being attempted is busy, not blocked: its
        // next tasks are held whatever the count (the prefetch bounds
        // them), since it drains on its own. A key whose head is out in
        // the delay levels overflows past the limit.
        let away = matches!(blocked.head, Head::Away { .. });
        metrics::counter!("hookfleet_lane_tasks_held_total").increment(1);
        blocked.held.push_back((delivery, settle));
        self.held += 1;
        if away && self.held > self.limits.hold {
            self.overflow(&key).await?;
        }
        Ok(())
    }

    /// Sets a blocked key's held tasks, and from now on its later ones,
    /// aside through the delay levels (it went over the hold limit).
    async fn overflow(&mut self, key: &str) -> Result<(), PublishError> {
        let Some(blocked) = self.blocked.get_mut(key) else {
            return Ok(());
        };
        if blocked.held.is_empty() || blocked.aside.is_some() {
            return Ok(());
        }
        metrics::counter!("hookfleet_lane_overflows_total").increment(1);
        let line: Vec<_> = std::mem::take(&mut blocked.held)
            .into_iter()
            .map(|(delivery, settle)| (delivery, settle, None))
            .collect();
        self.held -= line.len();
        tracing::info!(key = %key, tasks = line.len(), "a blocked key overflows: setting its tasks aside");
        blocked.aside = Some(Aside {
            next: 1,
            last: 0,
            ..Aside::default()
        });
        self.set_aside(key, line).await
    }

    /// Sends tasks of `key` round the delay levels, in this order, each
    /// in its place (a new one at the end of the line when `None`), and
    /// acks them once the copies and the key's line are confirmed.
    async fn set_aside(
        &mut self,
        key: &str,
        tasks: Vec<(Delivery, Settle, Option<u64>)>,
    ) -> Result<(), PublishError> {
        let Some(blocked) = self.blocked.get_mut(key) else {
            return Ok(());
        };
        let Some(aside) = &mut blocked.aside else {
            return Ok(());
        };
        let head_back_in = match &blocked.head {
            Head::Away { due_at, .. } => {
                let due = due_at - OVERDUE.as_millis() as i64 - hookfleet_contract::now_millis();
                Duration::from_millis(due.max(0) as u64)
            }
            Head::InFlight | Head::Idle => ASIDE_MIN,
        };
        let routing_key = hookfleet_contract::lane_routing_key(self.lane);
        let mut settles = Vec::with_capacity(tasks.len());
        let mut new_places = false;
        for (delivery, settle, place) in tasks {
            let place = place.unwrap_or_else(|| {
                new_places = true;
                aside.last += 1;
                aside.last
            });
            // Far places come back later: fewer rounds while they wait.
            let behind = Duration::from_secs(place.saturating_sub(aside.next) / WINDOW);
            let wait = (head_back_in + behind).clamp(ASIDE_MIN, ASIDE_MAX);
            let route = self
                .deliverer
                .topology
                .delay_route(wait.as_secs(), &routing_key);
            // Without the broker's record of earlier trips: a message
            // dead-lettered by the same queue twice with no rejection in
            // between is taken for a cycle and dropped (RabbitMQ's
            // dead-letter cycle detection), and every round goes through
            // the same delay queues.
            let mut table = FieldTable::default();
            for (name, value) in delivery
                .properties
                .headers()
                .as_ref()
                .map(|headers| headers.inner().iter())
                .into_iter()
                .flatten()
            {
                if !name.as_str().starts_with("x-death")
                    && !name.as_str().starts_with("x-first-death")
                    && !name.as_str().starts_with("x-last-death")
                {
                    table.insert(name.clone(), value.clone());
                }
            }
            table.insert(
                headers::ASIDE.into(),
                AMQPValue::LongString(LongString::from(place.to_string())),
            );
            let properties = delivery.properties.clone().with_headers(table);
            self.publisher
                .publish(
                    &route.exchange,
                    &route.routing_key,
                    &delivery.data,
                    properties,
                )
                .await?;
            metrics::counter!("hookfleet_lane_tasks_set_aside_total").increment(1);
            settles.push(settle);
        }
        if new_places && !self.persist().await {
            return Err(PublishError::Nacked {
                exchange: self.state_queue.clone(),
            });
        }
        for settle in settles {
            settle.ack();
        }
        Ok(())
    }

    /// Starts the key's next set-aside task if the key is free and the
    /// task is back.
    fn advance(&mut self, key: &str) {
        if self.draining {
            return;
        }
        let Some(blocked) = self.blocked.get_mut(key) else {
            return;
        };
        let Some(aside) = &mut blocked.aside else {
            return;
        };
        if blocked.head != Head::Idle || aside.in_progress.is_some() {
            return;
        }
        match aside.back.remove(&aside.next) {
            Some((delivery, settle)) => {
                self.held -= 1;
                aside.in_progress = Some(aside.next);
                aside.waiting_since = None;
                blocked.head = Head::InFlight;
                self.resume(key.to_owned(), delivery, settle);
            }
            None => {
                aside.waiting_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Attempts a task (after its turn in its endpoint's bucket), and
    /// reports back to the loop.
    fn start(
        &mut self,
        delivery: Delivery,
        settle: Settle,
        key: Option<String>,
        task: Option<(&DeliveryTask, Option<u32>)>,
    ) {
        let now = Instant::now();
        let at = match task {
            Some((task, Some(limit))) => self
                .buckets
                .entry(task.endpoint_id.as_str().to_owned())
                .or_insert_with(|| Bucket::new(now))
                .reserve(limit, now),
            _ => now,
        };
        let delivery_id = task
            .map(|(t, _)| t.delivery_id.as_str().to_owned())
            .unwrap_or_default();
        let deliverer = self.deliverer.clone();
        let publisher = self.publisher.clone();
        let done = self.done.clone();
        self.in_flight += 1;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let handled = deliverer.process(&publisher, &delivery).await;
            let back_in = match handled {
                Handled::Rescheduled { seconds } => seconds * 1000,
                Handled::Ended | Handled::Requeue => 0,
            };
            let due_at =
                hookfleet_contract::now_millis() + back_in as i64 + OVERDUE.as_millis() as i64;
            let _ = done.send(Done {
                key,
                delivery_id,
                handled,
                due_at,
                settle,
            });
        });
    }

    /// A task's attempt is over: settle it, and let its key's next task go
    /// if its delivery ended.
    async fn ended(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(key) = done.key else {
            settle(done.settle, done.handled);
            return;
        };
        let Some(blocked) = self.blocked.get_mut(&key) else {
            settle(done.settle, done.handled);
            return;
        };
        match done.handled {
            Handled::Requeue => {
                // Back to the lane as it is; the key waits for it.
                blocked.head = Head::Away {
                    delivery_id: done.delivery_id,
                    due_at: done.due_at,
                };
                done.settle.requeue();
            }
            Handled::Rescheduled { .. } => {
                blocked.head = Head::Away {
                    delivery_id: done.delivery_id.clone(),
                    due_at: done.due_at,
                };
                blocked.listed = Some((done.delivery_id, done.due_at));
                // The next holder must know before the head is acked.
                if self.persist().await {
                    done.settle.ack();
                } else {
                    done.settle.requeue();
                }
                // Its key is blocked now: over the limit, what it holds
                // goes aside, so the head's retry finds room in the lane.
                if self.held > self.limits.hold
                    && !self.draining
                    && let Err(error) = self.overflow(&key).await
                {
                    // Still held: they go back with the lane if the
                    // session ends, and the next arrival tries again.
                    tracing::warn!(%error, key = %key, "setting a blocked key's tasks aside failed");
                }
            }
            Handled::Ended if blocked.aside.is_some() => {
                blocked.listed = None;
                blocked.head = Head::Idle;
                let line_done = blocked.aside.as_mut().is_some_and(|aside| {
                    if aside.in_progress.take().is_some() {
                        aside.next += 1;
                    }
                    aside.is_done()
                });
                if line_done {
                    tracing::info!(key = %key, "a key's set-aside tasks are all delivered");
                    self.blocked.remove(&key);
                }
                // The next holder must not wait for the one that ended.
                if !self.persist().await {
                    tracing::warn!(key = %key, "the lane state was not written; the next holder waits for this key until it is overdue");
                }
                done.settle.ack();
                self.advance(&key);
            }
            Handled::Ended => {
                let was_away = blocked.listed.take().is_some();
                blocked.head = Head::InFlight;
                let next = if self.draining {
                    None
                } else {
                    blocked.held.pop_front()
                };
                if next.is_some() {
                    self.held -= 1;
                }
                if next.is_none() && blocked.held.is_empty() {
                    self.blocked.remove(&key);
                }
                if was_away && !self.persist().await {
                    tracing::warn!(key = %key, "the lane state was not written; the next holder waits for this key until it is overdue");
                }
                done.settle.ack();
                if let Some((delivery, settle)) = next {
                    self.resume(key, delivery, settle);
                }
            }
        }
    }

    /// Starts a held task now that its key is free.
    fn resume(&mut self, key: String, delivery: Delivery, settle: Settle) {
        let task = header_str(&delivery.properties, headers::META)
            .and_then(|meta| DeliveryTask::from_meta_json(meta).ok());
        let limit = task
            .as_ref()
            .and_then(|t| t.lane.as_ref())
            .and_then(|l| l.rate_limit);
        match &task {
            Some(task) => self.start(delivery, settle, Some(key), Some((task, limit))),
            None => self.start(delivery, settle, Some(key), None),
        }
    }

    /// Lets go of keys whose head has not come back long after it was due,
    /// and of set-aside places that did not come back.
    async fn let_go_overdue(&mut self) {
        let now = hookfleet_contract::now_millis();
        let overdue: Vec<String> = self
            .blocked
            .iter()
            .filter(|(_, b)| matches!(b.head, Head::Away { due_at, .. } if due_at < now))
            .map(|(key, _)| key.clone())
            .collect();
        let missing: Vec<String> = self
            .blocked
            .iter()
            .filter(|(_, b)| {
                b.aside.as_ref().is_some_and(|aside| {
                    aside
                        .waiting_since
                        .is_some_and(|since| since.elapsed() > ASIDE_MAX + OVERDUE)
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        if overdue.is_empty() && missing.is_empty() {
            return;
        }
        for key in missing {
            // Its copy was lost (or ended with a holder that did not write
            // it down): the line goes on from the next place back.
            let Some(aside) = self.blocked.get_mut(&key).and_then(|b| b.aside.as_mut()) else {
                continue;
            };
            let skip_to = aside.back.keys().next().copied().unwrap_or(aside.next + 1);
            tracing::warn!(key = %key, from = aside.next, to = skip_to, "set-aside places did not come back in time; skipping them");
            aside.next = skip_to;
            aside.waiting_since = None;
            if aside.is_done() {
                self.blocked.remove(&key);
            } else {
                self.advance(&key);
            }
        }
        for key in overdue {
            tracing::warn!(key = %key, "a blocked key's head did not come back in time; letting its next task go");
            let Some(blocked) = self.blocked.get_mut(&key) else {
                continue;
            };
            blocked.listed = None;
            if let Some(aside) = &mut blocked.aside {
                if aside.in_progress.take().is_some() {
                    aside.next += 1;
                }
                blocked.head = Head::Idle;
                self.advance(&key);
                continue;
            }
            match blocked.held.pop_front() {
                Some((delivery, settle)) => {
                    self.held -= 1;
                    blocked.head = Head::InFlight;
                    self.resume(key, delivery, settle);
                }
                None => {
                    self.blocked.remove(&key);
                }
            }
        }
        self.persist().await;
    }

    fn persisted(&self) -> Persisted {
        self.blocked
            .iter()
            .filter_map(|(key, blocked)| {
                let head = match &blocked.head {
                    Head::Away {
                        delivery_id,
                        due_at,
                    } => Some((delivery_id.clone(), *due_at)),
                    Head::InFlight | Head::Idle => blocked.listed.clone(),
                };
                let line = blocked.aside.as_ref().map(|aside| {
                    (
                        aside.next,
                        aside.last,
                        head.is_some() && aside.in_progress.is_some(),
                    )
                });
                match (head, line) {
                    (None, None) => None,
                    (Some((delivery_id, due_at)), None) => {
                        Some((key.clone(), PersistedKey::Head(delivery_id, due_at)))
                    }
                    (head, aside) => Some((key.clone(), PersistedKey::Full { head, aside })),
                }
            })
            .collect()
    }

    /// Writes the keys whose head is away, and the keys' lines of
    /// set-aside tasks, to the lane's state queue (it keeps the last
    /// message only); true once the broker confirmed it.
    async fn persist(&self) -> bool {
        let body = serde_json::to_vec(&self.persisted()).unwrap_or_default();
        match self
            .publisher
            .publish("", &self.state_queue, &body, persistent_json())
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "writing the lane state failed");
                false
            }
        }
    }
}

fn settle(settle: Settle, handled: Handled) {
    match handled {
        Handled::Requeue => settle.requeue(),
        Handled::Ended | Handled::Rescheduled { .. } => settle.ack(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_state_written_before_lines_still_reads() {
        let old: Persisted = serde_json::from_str(r#"{"ep_1\u0000k": ["dlv_1", 42]}"#).unwrap();
        assert_eq!(
            old.get("ep_1\0k"),
            Some(&PersistedKey::Head("dlv_1".into(), 42))
        );
        let line = PersistedKey::Full {
            head: None,
            aside: Some((3, 9, false)),
        };
        let written = serde_json::to_string(&line).unwrap();
        assert_eq!(written, r#"{"aside":[3,9,false]}"#);
        assert_eq!(
            serde_json::from_str::<PersistedKey>(&written).unwrap(),
            line
        );
    }

    #[test]
    fn the_bucket_spaces_attempts_at_the_limit() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        // 50/s: a burst of 5, then one every 20 ms.
        let times: Vec<Duration> = (0..105)
            .map(|_| bucket.reserve(50, start) - start)
            .collect();
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[4], Duration::ZERO);
        assert!(times[5] > Duration::ZERO);
        // In any 10 s, at most 10 s worth and the burst.
        let in_ten = times
            .iter()
            .filter(|t| **t < Duration::from_secs(10))
            .count();
        assert!(in_ten <= 505, "{in_ten}");
        // Reserved 105 in all: the last about 2 s on.
        let last = times[104];
        assert!(
            last >= Duration::from_millis(1900) && last <= Duration::from_millis(2100),
            "{last:?}"
        );
    }

    #[test]
    fn an_idle_bucket_does_not_save_up_more_than_the_burst() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        let later = start + Duration::from_secs(60);
        let times: Vec<Instant> = (0..20).map(|_| bucket.reserve(10, later)).collect();
        // 10/s: a burst of 1, then every 100 ms.
        assert_eq!(times[0], later);
        assert_eq!(times[1], later + Duration::from_millis(100));
    }
}
