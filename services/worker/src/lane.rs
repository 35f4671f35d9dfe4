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
//! - **The rate limit.** Every task of a rate-limited endpoint is in one
//!   lane, so one token bucket (a GCRA) spaces its attempts, fleet-wide.
//!   A task waiting for its turn is not an attempt and holds no slot of
//!   the deliver queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hookfleet_contract::{DeliveryTask, headers};
use hookfleet_topology::{Publisher, Settle, Settler, header_str, persistent_json};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Deliverer, Handled};

/// A key's head that went to the delay levels and has not ended comes
/// back at the latest this long after it was due, or its key is let go
/// (it was lost to the dead-letter queue by the broker, say): a key is
/// never blocked forever.
const OVERDUE: Duration = Duration::from_secs(120);

/// How many tasks a lane holder takes in hand at most (held back, waiting
/// for a token, or in progress). Held tasks count against it; a head that
/// went to the delay levels comes back behind whatever the lane held, so
/// the lane must take more than it holds back or it waits for the head
/// until [`OVERDUE`]. See the README on this bound.
pub const LANE_PREFETCH: u16 = 1000;

/// What the lane's state queue holds: every key whose head is out in the
/// delay levels, with that head's delivery id and when it is due back
/// (milliseconds since the epoch).
type Persisted = BTreeMap<String, (String, i64)>;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Head {
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
    cancel: CancellationToken,
    drain: Duration,
) -> lapin::Result<()> {
    let queue = deliverer.topology.lane_queue(lane);
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(LANE_PREFETCH, BasicQosOptions::default())
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
        deliverer,
        publisher,
        state_queue: String::new(),
        loaded: false,
        blocked: HashMap::new(),
        buckets: HashMap::new(),
        done: done_tx,
        in_flight: 0,
        draining: false,
    };
    holder.state_queue = holder.deliverer.topology.lane_state_queue(lane);
    let mut overdue = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let settle = settler.track(delivery.delivery_tag);
                    if !holder.loaded {
                        holder.load(&channel).await?;
                    }
                    holder.arrived(delivery, settle);
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
    Ok(())
}

struct Holder {
    deliverer: Arc<Deliverer>,
    publisher: Publisher,
    state_queue: String,
    /// Whether the blocked keys of the previous holder were read: done
    /// at the first delivery, when this consumer has become the active one.
    loaded: bool,
    blocked: HashMap<String, Blocked>,
    buckets: HashMap<String, Bucket>,
    done: mpsc::UnboundedSender<Done>,
    /// Attempts started and not yet reported back.
    in_flight: usize,
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
            for (key, (delivery_id, due_at)) in persisted {
                tracing::info!(key = %key, %delivery_id, "lane taken over with a blocked key");
                self.blocked.insert(
                    key,
                    Blocked {
                        head: Head::Away {
                            delivery_id: delivery_id.clone(),
                            due_at,
                        },
                        held: VecDeque::new(),
                        listed: Some((delivery_id, due_at)),
                    },
                );
            }
        }
        self.loaded = true;
        Ok(())
    }

    fn arrived(&mut self, delivery: Delivery, settle: Settle) {
        let task = header_str(&delivery.properties, headers::META)
            .and_then(|meta| DeliveryTask::from_meta_json(meta).ok());
        let Some(task) = task else {
            // Malformed: the deliverer parks it.
            self.start(delivery, settle, None, None);
            return;
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
            return;
        };
        let key = format!("{}\0{}", task.endpoint_id, ordering_key);
        match self.blocked.get_mut(&key) {
            None => {
                self.blocked.insert(
                    key.clone(),
                    Blocked {
                        head: Head::InFlight,
                        held: VecDeque::new(),
                        listed: None,
                    },
                );
                self.start(delivery, settle, Some(key), Some((&task, rate_limit)));
            }
            Some(blocked) => match &blocked.head {
                Head::Away { delivery_id, .. } if *delivery_id == task.delivery_id.as_str() => {
                    blocked.head = Head::InFlight;
                    self.start(delivery, settle, Some(key), Some((&task, rate_limit)));
                }
                _ => {
                    metrics::counter!("hookfleet_lane_tasks_held_total").increment(1);
                    blocked.held.push_back((delivery, settle));
                }
            },
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
            }
            Handled::Ended => {
                let was_away = blocked.listed.take().is_some();
                blocked.head = Head::InFlight;
                let next = if self.draining {
                    None
                } else {
                    blocked.held.pop_front()
                };
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

    /// Lets go of keys whose head has not come back long after it was due.
    async fn let_go_overdue(&mut self) {
        let now = hookfleet_contract::now_millis();
        let overdue: Vec<String> = self
            .blocked
            .iter()
            .filter(|(_, b)| matches!(b.head, Head::Away { due_at, .. } if due_at < now))
            .map(|(key, _)| key.clone())
            .collect();
        if overdue.is_empty() {
            return;
        }
        for key in overdue {
            tracing::warn!(key = %key, "a blocked key's head did not come back in time; letting its next task go");
            let next = self.blocked.get_mut(&key).and_then(|b| {
                b.listed = None;
                b.held.pop_front()
            });
            match next {
                Some((delivery, settle)) => {
                    if let Some(blocked) = self.blocked.get_mut(&key) {
                        blocked.head = Head::InFlight;
                    }
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
            .filter_map(|(key, blocked)| match &blocked.head {
                Head::Away {
                    delivery_id,
                    due_at,
                } => Some((key.clone(), (delivery_id.clone(), *due_at))),
                Head::InFlight => blocked.listed.clone().map(|listed| (key.clone(), listed)),
            })
            .collect()
    }

    /// Writes the keys whose head is away to the lane's state queue (it
    /// keeps the last message only); true once the broker confirmed it.
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
