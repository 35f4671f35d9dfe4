//! Retry queues: where a fast-path task's retries come back to, so that a
//! retry made twice is sent once.
//!
//! A retry chain can fork: the broker keeps its promises at least once,
//! so under a node loss one retry can become two copies. Every way seen in
//! the cluster chaos runs ends the same: two copies of one attempt of one
//! delivery come out of the delay levels. A worker whose connection (or
//! node) goes after it scheduled the retry but before its ack arrived gets
//! the task redelivered, attempted and retried again; a router whose
//! confirm was lost routes an event twice; a delay level's at-least-once
//! dead-lettering publishes again when the confirm from the next queue
//! does not come in time. Left alone, both copies run to the end of the
//! chain, and once the endpoint answers, it gets the event twice.
//!
//! So a retry goes to one of a fixed number of retry queues (hash of the
//! delivery id: both copies reach the same one), each with a single
//! active consumer, and the worker holding it remembers which attempts it
//! has carried out (their follow-up confirmed): a copy of one of them is
//! acked without being sent. First attempts, the hot path, never come
//! here. A copy that arrives after the queue changed hands is not caught,
//! nor is a retry sent again because the attempt before it came twice
//! and succeeded the second time.
//!
//! Deferred tasks (breaker, in-flight cap) go back to the deliver queue:
//! they are the same attempt again, which this memory would drop.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookfleet_contract::headers;
use hookfleet_topology::{Publisher, Settle, header_str};
use lapin::Connection;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Deliverer, Handled};

/// How long an attempt is remembered. The two copies of a fork come out
/// of the delay levels within the retry's jitter of each other, or
/// together; an hour covers the schedule's steps up to 2 h.
const REMEMBER_FOR: Duration = Duration::from_secs(3600);
/// The most attempts remembered (about 100 bytes each); the oldest go
/// first beyond it.
const REMEMBER_AT_MOST: usize = 200_000;
/// How often a copy that arrived while another copy of its attempt is in
/// progress looks again whether that one has ended.
const BUSY_POLL: Duration = Duration::from_millis(50);

/// One attempt of one delivery.
type AttemptKey = (String, u32);

/// The attempts this worker has carried out from its retry queues, and
/// those in progress. One per worker, shared by its retry queues (a
/// delivery is always in the same one).
#[derive(Debug, Default)]
pub struct Carried {
    memory: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    done: HashSet<AttemptKey>,
    /// `done` in the order it was filled, to forget the oldest first.
    order: VecDeque<(Instant, AttemptKey)>,
    in_progress: HashSet<AttemptKey>,
}

/// What a copy of an attempt finds.
#[derive(Debug)]
enum Claim<'a> {
    /// No copy was carried out or is in progress: this one goes.
    Mine(Guard<'a>),
    /// Another copy was carried out: this one is dropped.
    Done,
    /// Another copy is in progress: wait for its end.
    Busy,
}

impl Carried {
    fn claim(&self, key: &AttemptKey, now: Instant) -> Claim<'_> {
        let Ok(mut memory) = self.memory.lock() else {
            // A poisoned memory remembers nothing: at least once.
            return Claim::Mine(Guard {
                carried: self,
                key: None,
            });
        };
        memory.forget_before(now);
        if memory.done.contains(key) {
            Claim::Done
        } else if memory.in_progress.contains(key) {
            Claim::Busy
        } else {
            memory.in_progress.insert(key.clone());
            Claim::Mine(Guard {
                carried: self,
                key: Some(key.clone()),
            })
        }
    }
}

impl Memory {
    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if self.order.len() <= REMEMBER_AT_MOST && now.duration_since(*at) < REMEMBER_FOR {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.done.remove(&key);
            }
        }
    }
}

/// A copy's claim on its attempt: [`Guard::carried_out`] once everything
/// the attempt caused is confirmed; dropped otherwise (requeued, or the
/// session went), which lets another copy go.
#[derive(Debug)]
struct Guard<'a> {
    carried: &'a Carried,
    key: Option<AttemptKey>,
}

impl Guard<'_> {
    fn carried_out(mut self, now: Instant) {
        let Some(key) = self.key.take() else { return };
        if let Ok(mut memory) = self.carried.memory.lock() {
            memory.in_progress.remove(&key);
            if memory.done.insert(key.clone()) {
                memory.order.push_back((now, key));
            }
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && let Ok(mut memory) = self.carried.memory.lock()
        {
            memory.in_progress.remove(&key);
        }
    }
}

/// The delivery id and attempt number of a task, read from its metadata
/// alone.
fn attempt_key(delivery: &Delivery) -> Option<AttemptKey> {
    #[derive(serde::Deserialize)]
    struct Ids {
        delivery_id: String,
        attempt: u32,
    }
    let meta = header_str(&delivery.properties, headers::META)?;
    let ids: Ids = serde_json::from_str(meta).ok()?;
    Some((ids.delivery_id, ids.attempt))
}

/// Handles one task off a retry queue: a copy of an attempt this worker
/// carried out is acked and dropped; any other is handled as on the
/// deliver queue.
async fn handle(
    deliverer: Arc<Deliverer>,
    carried: Arc<Carried>,
    publisher: Publisher,
    delivery: Delivery,
    settle: Settle,
) {
    // Unreadable metadata: the deliverer parks it.
    let Some(key) = attempt_key(&delivery) else {
        return deliverer.handle(publisher, delivery, settle).await;
    };
    let guard = loop {
        match carried.claim(&key, Instant::now()) {
            Claim::Mine(guard) => break guard,
            Claim::Done => {
                tracing::debug!(delivery_id = %key.0, attempt = key.1, "copy of a retry already carried out; dropped");
                metrics::counter!("hookfleet_retry_copies_dropped_total").increment(1);
                settle.ack();
                return;
            }
            Claim::Busy => tokio::time::sleep(BUSY_POLL).await,
        }
    };
    match deliverer.process(&publisher, &delivery).await {
        Handled::Requeue => settle.requeue(),
        Handled::Ended | Handled::Rescheduled { .. } => {
            guard.carried_out(Instant::now());
            settle.ack();
        }
    }
}

/// A worker's retry queues: what holding one of them needs.
#[derive(Debug, Clone)]
pub struct RetryQueues {
    deliverer: Arc<Deliverer>,
    carried: Arc<Carried>,
    prefetch: u16,
    drain: Duration,
}

impl RetryQueues {
    /// `prefetch` is the worker's (`amqp.prefetch`): a worker holding
    /// every retry queue has at most that many retries in hand, as many
    /// as it takes from the deliver queue. Each queue gets its share, at
    /// least one: one worker often holds them all (the first to
    /// subscribe), and it must not take in the whole backlog that a node
    /// loss releases from the delay levels at once (measured: a worker
    /// with 16 × 64 retries in hand timed out on hundreds of them).
    pub fn new(deliverer: Arc<Deliverer>, prefetch: u16, drain: Duration) -> Self {
        Self {
            deliverer,
            carried: Arc::default(),
            prefetch: prefetch.div_ceil(hookfleet_contract::RETRY_QUEUES).max(1),
            drain,
        }
    }

    /// Consumes retry queue `queue` for as long as this session lasts;
    /// the broker makes one worker of the fleet its active consumer.
    pub async fn hold(
        self,
        connection: Arc<Connection>,
        publisher: Publisher,
        queue: u16,
        cancel: CancellationToken,
    ) -> lapin::Result<()> {
        let name = self.deliverer.topology.retry_queue(queue);
        let Self {
            deliverer,
            carried,
            prefetch,
            drain,
        } = self;
        hookfleet_topology::consume(
            &connection,
            &name,
            prefetch,
            &cancel,
            drain,
            move |delivery, settle| {
                handle(
                    deliverer.clone(),
                    carried.clone(),
                    publisher.clone(),
                    delivery,
                    settle,
                )
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> AttemptKey {
        ("dlv_1".to_owned(), n)
    }

    #[test]
    fn a_copy_of_an_attempt_carried_out_is_dropped() {
        let carried = Carried::default();
        let now = Instant::now();
        let Claim::Mine(guard) = carried.claim(&key(2), now) else {
            panic!("the first copy goes");
        };
        assert!(matches!(carried.claim(&key(2), now), Claim::Busy));
        // Another attempt of the same delivery is not a copy.
        assert!(matches!(carried.claim(&key(3), now), Claim::Mine(_)));
        guard.carried_out(now);
        assert!(matches!(carried.claim(&key(2), now), Claim::Done));
    }

    #[test]
    fn an_attempt_not_carried_out_lets_the_next_copy_go() {
        let carried = Carried::default();
        let now = Instant::now();
        let Claim::Mine(guard) = carried.claim(&key(2), now) else {
            panic!("the first copy goes");
        };
        // Requeued, or its session went: nothing it caused is confirmed.
        drop(guard);
        assert!(matches!(carried.claim(&key(2), now), Claim::Mine(_)));
    }

    #[test]
    fn attempts_are_forgotten_after_a_while() {
        let carried = Carried::default();
        let now = Instant::now();
        let Claim::Mine(guard) = carried.claim(&key(2), now) else {
            panic!("the first copy goes");
        };
        guard.carried_out(now);
        assert!(matches!(
            carried.claim(&key(2), now + REMEMBER_FOR),
            Claim::Mine(_)
        ));
    }
}
