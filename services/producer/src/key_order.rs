//! Keeps the fan-outs of events with the same ordering key in the order
//! their messages arrived on the route queue.
//!
//! The router handles many messages at once; two events of one key
//! handled side by side could reach their lane in either order. Each
//! message takes a ticket per key when it arrives (in queue order, before
//! its handler runs) and fans out only after the previous ticket of each
//! of its keys is done. A ticket is done when it is dropped, whatever the
//! outcome, so a failed fan-out does not hold its key forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use tokio::sync::oneshot;

/// The last ticket of every key with a fan-out in progress or waiting.
#[derive(Debug, Default)]
pub struct KeyOrder {
    tails: Mutex<Tails>,
}

#[derive(Debug, Default)]
struct Tails {
    next_id: u64,
    /// Key to (the id of its last ticket, done when that ticket is).
    by_key: HashMap<String, (u64, oneshot::Receiver<()>)>,
}

/// A place in line for each key of one message.
#[derive(Debug)]
pub struct Ticket {
    order: Arc<KeyOrder>,
    /// What must be done first: the previous ticket of each key.
    after: Vec<oneshot::Receiver<()>>,
    /// Ours, per key: dropped when we are done.
    mine: Vec<(String, u64, oneshot::Sender<()>)>,
}

impl KeyOrder {
    /// Takes a ticket for `keys`; call it in arrival order.
    pub fn take(self: &Arc<Self>, keys: impl IntoIterator<Item = String>) -> Ticket {
        let mut ticket = Ticket {
            order: self.clone(),
            after: Vec::new(),
            mine: Vec::new(),
        };
        let Ok(mut tails) = self.tails.lock() else {
            return ticket;
        };
        for key in keys {
            if ticket.mine.iter().any(|(k, _, _)| *k == key) {
                continue;
            }
            tails.next_id += 1;
            let id = tails.next_id;
            let (done, waiter) = oneshot::channel();
            if let Some((_, previous)) = tails.by_key.insert(key.clone(), (id, waiter)) {
                ticket.after.push(previous);
            }
            ticket.mine.push((key, id, done));
        }
        ticket
    }

    /// How many keys have a ticket out.
    pub fn len(&self) -> usize {
        self.tails
            .lock()
            .map(|t| t.by_key.len())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// Waits until every earlier ticket of our keys is done.
    pub async fn wait(&mut self) {
        join_all(self.after.drain(..)).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Ok(mut tails) = self.order.tails.lock() else {
            return;
        };
        for (key, id, _) in &self.mine {
            if tails.by_key.get(key).is_some_and(|(last, _)| last == id) {
                tails.by_key.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_later_ticket_waits_for_an_earlier_one_of_its_key() {
        let order = Arc::new(KeyOrder::default());
        let first = order.take(["k".to_owned()]);
        let mut second = order.take(["k".to_owned(), "j".to_owned()]);
        let mut other = order.take(["x".to_owned()]);
        // Another key does not wait.
        tokio::time::timeout(Duration::from_millis(100), other.wait())
            .await
            .expect("a ticket of another key waited");
        let waiting = tokio::spawn(async move {
            second.wait().await;
            second
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "the second ticket did not wait for the first"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_millis(100), waiting)
            .await
            .expect("the second ticket still waits after the first is done")
            .unwrap();
        drop(second);
        drop(other);
        assert!(order.is_empty());
    }
}
