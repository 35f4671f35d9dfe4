//! Settling deliveries with as few frames as possible: the acks of
//! deliveries that finished in a row go out as one multiple-ack.
//!
//! Handlers finish out of order (one webhook answers in 2 ms, the next in
//! 2 s), so a multiple-ack may only cover a tag once every tag below it on
//! the channel has finished; a requeue goes out alone, and always before
//! any multiple-ack that would otherwise cover its tag. A finished delivery
//! held back by a slow one below it is acked on its own once too many are
//! held or it has waited 50 ms, however busy the channel: the broker counts unacked deliveries
//! against the prefetch, so one hanging webhook must not stall the
//! channel, and a finished delivery should not stay unacked (and be
//! redelivered after a crash) for the length of a timeout. [`Ledger`] is that
//! rule as a pure state machine (property-tested below); [`Settler`] runs it
//! for one channel, sending frames in the order the ledger emits them from
//! one task, so the broker sees them in that order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{Notify, mpsc};

/// A frame to send to the broker, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `basic.ack` with `multiple`: every outstanding tag up to this one.
    AckUpTo(u64),
    /// `basic.ack` of this tag alone.
    Ack(u64),
    /// `basic.nack` with `requeue`, for this tag alone.
    Requeue(u64),
}

/// Finished deliveries held back by an unfinished one below them that are
/// acked one by one rather than waiting longer.
const HELD_LIMIT: usize = 64;
/// How long a finished delivery waits for the ones below it at most.
const HELD_FOR: Duration = Duration::from_millis(50);

/// The outstanding deliveries of one channel and which have finished.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Tag → finished. Only tags not yet covered by a frame.
    outstanding: BTreeMap<u64, bool>,
    /// Finished tags in `outstanding` (all above an unfinished one).
    held: usize,
    /// Since when some finished tag has been held back.
    held_since: Option<Instant>,
}

impl Ledger {
    /// A delivery arrived. Tags grow on a channel, so it is the highest.
    pub fn delivered(&mut self, tag: u64) {
        self.outstanding.insert(tag, false);
    }

    /// The handler of `tag` is done with it at `now`: the ack to send now,
    /// if the finished tags at the bottom of the channel grew.
    pub fn finished(&mut self, tag: u64, now: Instant) -> Vec<Frame> {
        if let Some(done) = self.outstanding.get_mut(&tag)
            && !*done
        {
            *done = true;
            self.held += 1;
            self.held_since.get_or_insert(now);
        }
        let mut frames = self.ack_bottom().into_iter().collect::<Vec<_>>();
        if self.held > HELD_LIMIT {
            frames.extend(self.release_held());
        }
        frames
    }

    /// The multiple-ack of the finished tags at the bottom, if any.
    fn ack_bottom(&mut self) -> Option<Frame> {
        let mut upto = None;
        while let Some(entry) = self.outstanding.first_entry() {
            if !*entry.get() {
                break;
            }
            upto = Some(*entry.key());
            entry.remove();
            self.held -= 1;
        }
        if self.held == 0 {
            self.held_since = None;
        }
        upto.map(Frame::AckUpTo)
    }

    /// Acks every finished tag that an unfinished one below holds back,
    /// each on its own.
    pub fn release_held(&mut self) -> Vec<Frame> {
        if self.held == 0 {
            return Vec::new();
        }
        let finished: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, done)| **done)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in &finished {
            self.outstanding.remove(tag);
        }
        self.held = 0;
        self.held_since = None;
        finished.into_iter().map(Frame::Ack).collect()
    }

    /// `tag` goes back to the queue. Removing it may let finished tags
    /// above it be acked too; the requeue comes first.
    pub fn requeue(&mut self, tag: u64) -> Vec<Frame> {
        match self.outstanding.remove(&tag) {
            None => return Vec::new(),
            Some(true) => {
                self.held -= 1;
                if self.held == 0 {
                    self.held_since = None;
                }
            }
            Some(false) => {}
        }
        let mut frames = vec![Frame::Requeue(tag)];
        frames.extend(self.ack_bottom());
        frames
    }

    /// Whether, at `now`, a finished delivery has been held back for
    /// `at_least`.
    pub fn held_for(&self, at_least: Duration, now: Instant) -> bool {
        self.held_since
            .is_some_and(|since| now.saturating_duration_since(since) >= at_least)
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }
}

#[derive(Debug)]
struct Shared {
    ledger: Arc<Mutex<Ledger>>,
    frames: mpsc::UnboundedSender<Frame>,
    progress: Arc<Progress>,
}

/// How far the sending task has got, for the drain at shutdown.
#[derive(Debug, Default)]
struct Progress {
    queued: AtomicU64,
    sent: AtomicU64,
    /// Woken whenever frames were sent or the ledger emptied.
    changed: Notify,
}

/// Settles one channel's deliveries through a [`Ledger`], sending its
/// frames from one task in order and folding consecutive acks into the
/// last. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Settler {
    shared: Arc<Shared>,
}

impl Settler {
    /// Starts the task that sends `channel`'s settlement frames. It ends
    /// when every `Settler` and [`Settle`] of the channel is gone.
    pub fn start(channel: Channel) -> Self {
        let (frames, receiver) = mpsc::unbounded_channel::<Frame>();
        let progress = Arc::new(Progress::default());
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        tokio::spawn(send_frames(
            channel,
            receiver,
            ledger.clone(),
            progress.clone(),
        ));
        Self {
            shared: Arc::new(Shared {
                ledger,
                frames,
                progress,
            }),
        }
    }

    /// Registers a delivery as it arrives; the returned handle settles it.
    pub fn track(&self, tag: u64) -> Settle {
        if let Ok(mut ledger) = self.shared.ledger.lock() {
            ledger.delivered(tag);
        }
        Settle {
            shared: self.shared.clone(),
            tag,
            settled: false,
        }
    }

    /// Waits until every tracked delivery is settled (or its `Settle`
    /// dropped) and every frame that says so has been sent.
    pub async fn idle(&self) {
        let progress = &self.shared.progress;
        loop {
            let notified = progress.changed.notified();
            let empty = self
                .shared
                .ledger
                .lock()
                .map(|l| l.is_empty())
                .unwrap_or(true);
            if empty
                && progress.sent.load(Ordering::SeqCst) >= progress.queued.load(Ordering::SeqCst)
            {
                return;
            }
            notified.await;
        }
    }
}

/// The sending task of a [`Settler`]: sends frames in the order they were
/// queued, consecutive acks folded into one, and after a quiet moment acks
/// the finished deliveries a slow one holds back.
async fn send_frames(
    channel: Channel,
    mut receiver: mpsc::UnboundedReceiver<Frame>,
    ledger: Arc<Mutex<Ledger>>,
    progress: Arc<Progress>,
) {
    let mut pending: Vec<Frame> = Vec::new();
    loop {
        let mut taken = 0;
        match tokio::time::timeout(HELD_FOR, receiver.recv()).await {
            Ok(Some(first)) => {
                pending.push(first);
                taken += 1;
                while let Ok(next) = receiver.try_recv() {
                    pending.push(next);
                    taken += 1;
                }
            }
            Ok(None) => return,
            Err(_) => {}
        }
        // What a slow delivery has held back for a moment is acked now,
        // busy or quiet (a finished delivery left unacked is redelivered,
        // and sent again, if this process dies). Taken under the lock,
        // after every frame queued before.
        match ledger.lock() {
            Ok(mut ledger) if ledger.held_for(HELD_FOR, Instant::now()) => {
                let released = ledger.release_held();
                taken += released.len() as u64;
                progress
                    .queued
                    .fetch_add(released.len() as u64, Ordering::SeqCst);
                pending.extend(released);
            }
            Ok(_) => {}
            Err(_) => return,
        }
        for frame in fold_acks(pending.drain(..)) {
            send(&channel, frame).await;
        }
        if taken > 0 {
            progress.sent.fetch_add(taken, Ordering::SeqCst);
        }
        progress.changed.notify_waiters();
    }
}

/// Sends one frame. A failure means the channel is gone; the broker then
/// requeues every unsettled delivery itself.
async fn send(channel: &Channel, frame: Frame) {
    let result = match frame {
        Frame::AckUpTo(tag) => {
            metrics::counter!("hookfleet_amqp_acks_sent_total").increment(1);
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
        }
        Frame::Ack(tag) => {
            metrics::counter!("hookfleet_amqp_acks_sent_total").increment(1);
            channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await
        }
        Frame::Requeue(tag) => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "settling failed; the broker will redeliver");
    }
}

/// Consecutive acks say the same as the last of them.
fn fold_acks(frames: impl Iterator<Item = Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for frame in frames {
        match (out.last_mut(), frame) {
            (Some(Frame::AckUpTo(last)), Frame::AckUpTo(tag)) => *last = tag.max(*last),
            _ => out.push(frame),
        }
    }
    out
}

/// How one delivery ends: acked or requeued. Dropping it unsettled (a
/// handler that panicked or was aborted) requeues it, so one lost handler
/// never holds back the acks of the deliveries after it.
#[derive(Debug)]
pub struct Settle {
    shared: Arc<Shared>,
    tag: u64,
    settled: bool,
}

impl Settle {
    /// The delivery is done with; everything it caused is durable.
    pub fn ack(mut self) {
        self.settled = true;
        self.apply(|ledger, tag| ledger.finished(tag, Instant::now()));
    }

    /// The delivery goes back to its queue for another try.
    pub fn requeue(mut self) {
        self.settled = true;
        self.apply(|ledger, tag| ledger.requeue(tag));
    }

    fn apply(&self, step: impl FnOnce(&mut Ledger, u64) -> Vec<Frame>) {
        let Ok(mut ledger) = self.shared.ledger.lock() else {
            return;
        };
        // Sent while the lock is held, so frames enter the queue in the
        // order the ledger made them.
        for frame in step(&mut ledger, self.tag) {
            self.shared.progress.queued.fetch_add(1, Ordering::SeqCst);
            let _ = self.shared.frames.send(frame);
        }
        if ledger.is_empty() {
            self.shared.progress.changed.notify_waiters();
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if !self.settled {
            self.apply(|ledger, tag| ledger.requeue(tag));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// What a handler does with its delivery.
    #[derive(Debug, Clone, Copy)]
    enum End {
        Ack,
        Requeue,
    }

    /// The broker's side: which tags are unsettled, and an error for any
    /// frame the broker would refuse or any ack of an unfinished delivery.
    struct Broker {
        unsettled: BTreeSet<u64>,
        acked: BTreeSet<u64>,
        requeued: BTreeSet<u64>,
    }

    impl Broker {
        fn apply(&mut self, frame: Frame, finished: &BTreeSet<u64>) -> Result<(), String> {
            match frame {
                Frame::AckUpTo(upto) => {
                    if !self.unsettled.contains(&upto) {
                        return Err(format!("ack of unknown tag {upto}"));
                    }
                    let covered: Vec<u64> = self.unsettled.range(..=upto).copied().collect();
                    for tag in covered {
                        if !finished.contains(&tag) {
                            return Err(format!("ack up to {upto} covers unfinished {tag}"));
                        }
                        self.unsettled.remove(&tag);
                        self.acked.insert(tag);
                    }
                }
                Frame::Ack(tag) => {
                    if !self.unsettled.remove(&tag) {
                        return Err(format!("ack of settled tag {tag}"));
                    }
                    if !finished.contains(&tag) {
                        return Err(format!("ack of unfinished {tag}"));
                    }
                    self.acked.insert(tag);
                }
                Frame::Requeue(tag) => {
                    if !self.unsettled.remove(&tag) {
                        return Err(format!("requeue of settled tag {tag}"));
                    }
                    self.requeued.insert(tag);
                }
            }
            Ok(())
        }
    }

    proptest! {
        /// Whatever order handlers finish in, an ack never covers an
        /// unfinished or requeued delivery, every requeue reaches the
        /// broker, and once all are done nothing is left unsettled.
        #[test]
        fn acks_cover_only_finished_deliveries(
            ends in prop::collection::vec(prop_oneof![3 => Just(End::Ack), 1 => Just(End::Requeue)], 1..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 60),
            arrivals in 1usize..60,
            quiet in prop::collection::vec(any::<bool>(), 60),
        ) {
            let n = ends.len();
            let mut ledger = Ledger::default();
            let mut broker = Broker {
                unsettled: BTreeSet::new(),
                acked: BTreeSet::new(),
                requeued: BTreeSet::new(),
            };
            // Tags arrive in batches interleaved with finishing.
            let mut arrived = 0usize;
            let mut waiting: Vec<u64> = Vec::new();
            let mut finished = BTreeSet::new();
            let mut frames = Vec::new();
            let mut pick = order.iter().cycle();
            let mut quiet = quiet.iter().cycle();
            while arrived < n || !waiting.is_empty() {
                for _ in 0..arrivals.min(n - arrived) {
                    arrived += 1;
                    let tag = arrived as u64;
                    ledger.delivered(tag);
                    broker.unsettled.insert(tag);
                    waiting.push(tag);
                }
                if waiting.is_empty() {
                    continue;
                }
                let index = pick.next().map(|i| i.index(waiting.len())).unwrap_or(0);
                let tag = waiting.swap_remove(index);
                match ends[tag as usize - 1] {
                    End::Ack => {
                        finished.insert(tag);
                        frames.extend(ledger.finished(tag, Instant::now()));
                    }
                    End::Requeue => frames.extend(ledger.requeue(tag)),
                }
                // Now and then the sender finds the queue quiet.
                if quiet.next().copied().unwrap_or(false) {
                    frames.extend(ledger.release_held());
                }
                // The sender folds whatever queued up meanwhile.
                for frame in fold_acks(frames.drain(..)) {
                    broker.apply(frame, &finished).map_err(TestCaseError::fail)?;
                }
            }
            prop_assert!(broker.unsettled.is_empty(), "left unsettled: {:?}", broker.unsettled);
            prop_assert!(ledger.is_empty());
            for (i, end) in ends.iter().enumerate() {
                let tag = i as u64 + 1;
                match end {
                    End::Ack => prop_assert!(broker.acked.contains(&tag)),
                    End::Requeue => prop_assert!(broker.requeued.contains(&tag)),
                }
            }
        }
    }

    #[test]
    fn an_ack_waits_for_the_slow_delivery_below_it() {
        let mut ledger = Ledger::default();
        for tag in 1..=3 {
            ledger.delivered(tag);
        }
        assert_eq!(ledger.finished(2, Instant::now()), vec![]);
        assert_eq!(ledger.finished(3, Instant::now()), vec![]);
        assert_eq!(ledger.finished(1, Instant::now()), vec![Frame::AckUpTo(3)]);
    }

    #[test]
    fn a_hanging_delivery_does_not_hold_the_finished_ones_for_ever() {
        let mut ledger = Ledger::default();
        for tag in 1..=3 {
            ledger.delivered(tag);
        }
        assert_eq!(ledger.finished(3, Instant::now()), vec![]);
        assert_eq!(ledger.release_held(), vec![Frame::Ack(3)]);
        assert_eq!(ledger.finished(1, Instant::now()), vec![Frame::AckUpTo(1)]);
        assert_eq!(ledger.finished(2, Instant::now()), vec![Frame::AckUpTo(2)]);
        assert!(ledger.is_empty());
    }

    #[test]
    fn too_many_held_are_acked_one_by_one() {
        let mut ledger = Ledger::default();
        let last = HELD_LIMIT as u64 + 2;
        for tag in 1..=last {
            ledger.delivered(tag);
        }
        for tag in 2..last {
            assert_eq!(ledger.finished(tag, Instant::now()), vec![]);
        }
        let frames = ledger.finished(last, Instant::now());
        assert_eq!(frames.len(), HELD_LIMIT + 1);
        assert!(
            frames
                .iter()
                .all(|f| matches!(f, Frame::Ack(tag) if *tag > 1))
        );
    }

    #[test]
    fn a_requeue_goes_before_the_ack_it_unblocks() {
        let mut ledger = Ledger::default();
        for tag in 1..=3 {
            ledger.delivered(tag);
        }
        assert_eq!(ledger.finished(2, Instant::now()), vec![]);
        assert_eq!(
            ledger.requeue(1),
            vec![Frame::Requeue(1), Frame::AckUpTo(2)]
        );
    }

    #[test]
    fn a_held_delivery_counts_as_held_from_when_it_first_finished() {
        let start = Instant::now();
        let mut ledger = Ledger::default();
        for tag in 1..=3 {
            ledger.delivered(tag);
        }
        assert_eq!(ledger.finished(2, start), vec![]);
        // A later finish does not restart the wait.
        assert_eq!(ledger.finished(3, start + HELD_FOR / 2), vec![]);
        assert!(!ledger.held_for(HELD_FOR, start + HELD_FOR - Duration::from_millis(1)));
        assert!(ledger.held_for(HELD_FOR, start + HELD_FOR));
        assert_eq!(ledger.release_held(), vec![Frame::Ack(2), Frame::Ack(3)]);
        assert!(!ledger.held_for(HELD_FOR, start + 2 * HELD_FOR));
    }

    #[test]
    fn consecutive_acks_fold_but_not_across_a_requeue() {
        let frames = [
            Frame::AckUpTo(2),
            Frame::AckUpTo(5),
            Frame::Requeue(7),
            Frame::AckUpTo(9),
        ];
        assert_eq!(
            fold_acks(frames.into_iter()),
            vec![Frame::AckUpTo(5), Frame::Requeue(7), Frame::AckUpTo(9)]
        );
    }
}
