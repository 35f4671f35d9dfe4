//! Group commit: concurrent callers hand in one item each; one task turns
//! everything that queued up meanwhile into a single flush (one broker
//! message, one SQL statement) and tells each caller how it went.
//!
//! No timer is involved: a flush starts as soon as there is an item and
//! the previous flush has finished, so an idle system pays no wait and a
//! busy one gets batches as large as its confirm or commit latency allows.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// One caller's item and where its result goes.
type Waiting<T, R, E> = (T, oneshot::Sender<Result<R, E>>);

/// Why an item's flush did not report a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0} batcher stopped")]
pub struct Stopped(pub &'static str);

/// The limits of one flush.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most items per flush.
    pub items: usize,
    /// Most total weight (bytes, say) per flush; an item heavier than this
    /// alone still goes, in a flush of its own.
    pub weight: usize,
}

/// A group-commit batcher for items `T` with per-item results `R`.
#[derive(Debug)]
pub struct GroupCommit<T, R, E> {
    sender: mpsc::UnboundedSender<Waiting<T, R, E>>,
    name: &'static str,
}

impl<T, R, E> Clone for GroupCommit<T, R, E> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            name: self.name,
        }
    }
}

impl<T, R, E> GroupCommit<T, R, E>
where
    T: Send + 'static,
    R: Send + 'static,
    E: Clone + Send + 'static,
{
    /// Starts the flushing task. `flush` gets the items in the order they
    /// were handed in and returns one result per item, in that order, or
    /// one error for all of them. The task ends when every handle is gone.
    pub fn start<F, Fut>(
        name: &'static str,
        limits: Limits,
        weigh: fn(&T) -> usize,
        mut flush: F,
    ) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, E>> + Send,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Waiting<T, R, E>>();
        tokio::spawn(async move {
            let mut carried: Option<Waiting<T, R, E>> = None;
            loop {
                let first = match carried.take() {
                    Some(first) => first,
                    None => match receiver.recv().await {
                        Some(first) => first,
                        None => return,
                    },
                };
                let mut weight = weigh(&first.0);
                let mut batch = vec![first];
                while batch.len() < limits.items.max(1) {
                    let Ok(next) = receiver.try_recv() else { break };
                    weight += weigh(&next.0);
                    if weight > limits.weight {
                        carried = Some(next);
                        break;
                    }
                    batch.push(next);
                }
                let (items, waiters): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                metrics::histogram!("hookfleet_group_commit_size", "batcher" => name)
                    .record(items.len() as f64);
                match flush(items).await {
                    Ok(results) => {
                        for (waiter, result) in waiters.into_iter().zip(results) {
                            let _ = waiter.send(Ok(result));
                        }
                    }
                    Err(error) => {
                        for waiter in waiters {
                            let _ = waiter.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { sender, name }
    }

    /// Hands in `item` and waits for the flush that carries it.
    pub async fn submit(&self, item: T) -> Result<R, E>
    where
        E: From<Stopped>,
    {
        let (done, result) = oneshot::channel();
        if self.sender.send((item, done)).is_err() {
            return Err(Stopped(self.name).into());
        }
        match result.await {
            Ok(result) => result,
            // The flush returned fewer results than items: a bug, reported
            // as an error so the caller retries instead of acking.
            Err(_) => Err(Stopped(self.name).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Failed(String);

    impl From<Stopped> for Failed {
        fn from(stopped: Stopped) -> Self {
            Self(stopped.to_string())
        }
    }

    fn limits(items: usize, weight: usize) -> Limits {
        Limits { items, weight }
    }

    #[tokio::test]
    async fn callers_that_wait_together_share_one_flush() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = flushes.clone();
        let batcher: GroupCommit<u32, u32, Failed> = GroupCommit::start(
            "test",
            limits(100, usize::MAX),
            |_| 1,
            move |items| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(items.into_iter().map(|n| n * 2).collect())
                }
            },
        );
        let results = futures_util::future::join_all((0..20).map(|n| batcher.submit(n))).await;
        for (n, result) in results.into_iter().enumerate() {
            assert_eq!(result, Ok(n as u32 * 2));
        }
        // The first flush may hold only the first caller; the rest queue
        // behind it and go together.
        assert!(flushes.load(Ordering::SeqCst) <= 2);
    }

    #[tokio::test]
    async fn no_caller_is_told_done_before_its_flush_finished() {
        let (release, released) = tokio::sync::watch::channel(false);
        let batcher: GroupCommit<u32, (), Failed> = GroupCommit::start(
            "test",
            limits(100, usize::MAX),
            |_| 1,
            move |_items| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(vec![(); _items.len()])
                }
            },
        );
        let waiting = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "answered before the flush ended");
        release.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_failed_flush_fails_every_item_in_it() {
        let batcher: GroupCommit<u32, (), Failed> = GroupCommit::start(
            "test",
            limits(100, usize::MAX),
            |_| 1,
            |_| async { Err(Failed("nacked".to_owned())) },
        );
        let results = futures_util::future::join_all((0..5).map(|n| batcher.submit(n))).await;
        assert!(
            results
                .iter()
                .all(|r| *r == Err(Failed("nacked".to_owned())))
        );
    }

    #[tokio::test]
    async fn flushes_respect_the_weight_limit() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher: GroupCommit<usize, (), Failed> = GroupCommit::start(
            "test",
            limits(100, 10),
            |w| *w,
            move |items| {
                seen.lock().unwrap().push(items.iter().sum::<usize>());
                async move { Ok(vec![(); items.len()]) }
            },
        );
        futures_util::future::join_all((0..10).map(|_| batcher.submit(4))).await;
        assert!(sizes.lock().unwrap().iter().all(|w| *w <= 10));
    }
}
