//! The order check of the ordered endpoint (issue 17): per ordering key,
//! no event may arrive before every event of its key that was accepted
//! before it was sent has been answered 2xx.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One event the load sent with an ordering key, times since the origin.
#[derive(Debug, Clone)]
pub struct OrderedSend {
    pub event_id: String,
    pub key: String,
    /// When it was first sent.
    pub sent_at: Duration,
    /// When its 202 came.
    pub accepted_at: Duration,
}

/// One arrival at the ordered endpoint.
#[derive(Debug, Clone)]
pub struct OrderedArrival {
    pub event_id: String,
    pub at: Duration,
    /// Answered 2xx.
    pub ok: bool,
}

/// The violations, described. Event A must come before B (same key) when
/// A's 202 came before B was sent; every arrival of B must then follow a
/// 2xx arrival of A. (The endpoint is healthy, so no delivery is
/// exhausted.)
pub fn violations(sends: &[OrderedSend], arrivals: &[OrderedArrival]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&OrderedSend>> = BTreeMap::new();
    for send in sends {
        by_key.entry(&send.key).or_default().push(send);
    }
    let sends_by_id: HashMap<&str, &OrderedSend> =
        sends.iter().map(|s| (s.event_id.as_str(), s)).collect();
    // The first 2xx arrival of each event.
    let mut first_ok: HashMap<&str, Duration> = HashMap::new();
    for arrival in arrivals.iter().filter(|a| a.ok) {
        let at = first_ok.entry(&arrival.event_id).or_insert(arrival.at);
        *at = (*at).min(arrival.at);
    }
    let mut found = Vec::new();
    for arrival in arrivals {
        let Some(this) = sends_by_id.get(arrival.event_id.as_str()) else {
            continue;
        };
        for earlier in by_key.get(this.key.as_str()).into_iter().flatten() {
            if earlier.accepted_at >= this.sent_at {
                continue;
            }
            let ended = first_ok
                .get(earlier.event_id.as_str())
                .is_some_and(|at| *at <= arrival.at);
            if !ended {
                found.push(format!(
                    "key {}: {} arrived at {:.3} s before {} (accepted before it was sent) was delivered",
                    this.key,
                    this.event_id,
                    arrival.at.as_secs_f64(),
                    earlier.event_id
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(id: &str, key: &str, sent: u64, accepted: u64) -> OrderedSend {
        OrderedSend {
            event_id: id.into(),
            key: key.into(),
            sent_at: Duration::from_millis(sent),
            accepted_at: Duration::from_millis(accepted),
        }
    }

    fn arrival(id: &str, at: u64, ok: bool) -> OrderedArrival {
        OrderedArrival {
            event_id: id.into(),
            at: Duration::from_millis(at),
            ok,
        }
    }

    #[test]
    fn in_order_with_retries_and_duplicates_passes() {
        let sends = [send("a", "k", 0, 10), send("b", "k", 20, 30)];
        let arrivals = [
            arrival("a", 40, false),
            arrival("a", 50, true),
            arrival("b", 60, true),
            // A duplicate of a after b is harmless: a had ended.
            arrival("a", 70, true),
        ];
        assert!(violations(&sends, &arrivals).is_empty());
    }

    #[test]
    fn a_later_event_before_the_earlier_succeeded_is_found() {
        let sends = [send("a", "k", 0, 10), send("b", "k", 20, 30)];
        let arrivals = [
            arrival("a", 40, false),
            arrival("b", 45, true),
            arrival("a", 50, true),
        ];
        let found = violations(&sends, &arrivals);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("b arrived"));
    }

    #[test]
    fn other_keys_and_overlapping_sends_are_not_ordered() {
        // b was sent before a's 202: no order between them.
        let sends = [
            send("a", "k", 0, 30),
            send("b", "k", 20, 40),
            send("c", "j", 0, 5),
        ];
        let arrivals = [
            arrival("b", 50, true),
            arrival("c", 51, true),
            arrival("a", 60, true),
        ];
        assert!(violations(&sends, &arrivals).is_empty());
    }
}
