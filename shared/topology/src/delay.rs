//! Binary delay levels: the plugin-free way to hold a message for any whole
//! number of seconds (the scheme NServiceBus and kombu use).
//!
//! Level k is a queue whose messages all live 2^k seconds, so expiry is
//! always at the head and on time. A delay is spelled in binary in the
//! routing key, highest level first: `0.1.0.1.task` waits 4 s at level 2 and
//! 1 s at level 0 (5 s in all) and then reaches the deliver exchange with the
//! key unchanged.

use crate::Topology;

/// Enough levels for about 388 days; the configured count is lower.
pub const MAX_DELAY_LEVELS: u8 = 25;

/// Where to publish a message so it waits and then reaches the deliver queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayRoute {
    pub exchange: String,
    pub routing_key: String,
    /// The delay actually applied, after capping at the longest possible.
    pub seconds: u64,
}

impl DelayRoute {
    pub(crate) fn new(topology: &Topology, seconds: u64, key: &str) -> Self {
        let levels = topology.delay_levels();
        let seconds = seconds.min((1u64 << levels) - 1);
        if seconds == 0 {
            return Self {
                exchange: topology.deliver_exchange(),
                routing_key: key.to_owned(),
                seconds,
            };
        }
        let mut routing_key = String::with_capacity(levels as usize * 2 + key.len());
        for level in (0..levels).rev() {
            routing_key.push(if seconds >> level & 1 == 1 { '1' } else { '0' });
            routing_key.push('.');
        }
        routing_key.push_str(key);
        Self {
            exchange: topology.delay_exchange(levels - 1),
            routing_key,
            seconds,
        }
    }
}

/// The binding patterns of level `level` out of `levels`: the first sends a
/// message whose bit is 1 to the level's queue, the second one whose bit is
/// 0 on to the next level down.
pub(crate) fn binding_patterns(levels: u8, level: u8) -> (String, String) {
    let skip_words = "*.".repeat((levels - 1 - level) as usize);
    (format!("{skip_words}1.#"), format!("{skip_words}0.#"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_spelled_in_binary_highest_level_first() {
        let topology = Topology::new("hf", 4);
        let route = topology.delay_route(5, "task");
        assert_eq!(route.exchange, "hf.delay.3");
        assert_eq!(route.routing_key, "0.1.0.1.task");
        assert_eq!(route.seconds, 5);
    }

    #[test]
    fn zero_delay_goes_straight_to_delivery() {
        let topology = Topology::new("hf", 4);
        let route = topology.delay_route(0, "task");
        assert_eq!(route.exchange, "hf.deliver");
        assert_eq!(route.routing_key, "task");
    }

    #[test]
    fn delays_beyond_the_top_level_are_capped() {
        let topology = Topology::new("hf", 4);
        let route = topology.delay_route(100, "task");
        assert_eq!(route.seconds, 15);
        assert_eq!(route.routing_key, "1.1.1.1.task");
    }

    #[test]
    fn each_level_matches_its_own_bit() {
        assert_eq!(binding_patterns(4, 3), ("1.#".to_owned(), "0.#".to_owned()));
        assert_eq!(
            binding_patterns(4, 0),
            ("*.*.*.1.#".to_owned(), "*.*.*.0.#".to_owned())
        );
    }
}
