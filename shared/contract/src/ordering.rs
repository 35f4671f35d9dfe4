//! Ordered delivery and rate limits (issue 17): the event's ordering key,
//! and the endpoint settings that ask for one owner per key or per
//! endpoint.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest ordering key, in bytes.
pub const MAX_ORDERING_KEY_BYTES: usize = 128;
/// The highest rate limit an endpoint may have, attempts per second.
pub const MAX_RATE_LIMIT: u32 = 10_000;

/// Why an ordering key or rate limit was refused; the message completes
/// "field: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderingError {
    #[error("must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'")]
    BadKey,
    #[error("must be 1 to 10000 attempts per second")]
    BadRateLimit,
}

/// The key that orders an event against others with the same key, for
/// endpoints that ask for order (`"ordered": true`): 1 to 128 characters of
/// `[A-Za-z0-9_.:-]`, like an event id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OrderingKey(String);

impl OrderingKey {
    pub fn parse(raw: &str) -> Result<Self, OrderingError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        if raw.is_empty() || raw.len() > MAX_ORDERING_KEY_BYTES || !raw.bytes().all(allowed) {
            return Err(OrderingError::BadKey);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for OrderingKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for OrderingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An endpoint's rate limit: attempts per second, 1 to 10,000, across the
/// whole fleet.
pub fn check_rate_limit(limit: i64) -> Result<u32, OrderingError> {
    match u32::try_from(limit) {
        Ok(limit) if (1..=MAX_RATE_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(OrderingError::BadRateLimit),
    }
}

/// How many lane queues there are. Fixed: the queue count does not grow
/// with the number of endpoints (DESIGN.md invariant 5), and the router,
/// the ledger's resends and every worker must agree on it.
pub const LANES: u16 = 16;

/// A task that one owner must decide, in the lane it belongs to: a task
/// for an ordered endpoint whose event has an ordering key, or for a
/// rate-limited endpoint. Tasks without a lane take the deliver queue,
/// which any worker serves (the fast path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneTask {
    /// The lane queue's number, below [`LANES`].
    pub lane: u16,
    /// The event's ordering key, when the endpoint is ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<OrderingKey>,
    /// The endpoint's rate limit, attempts per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
}

impl LaneTask {
    /// The lane of a task for `endpoint_id`, or `None` for the fast path.
    /// A rate-limited endpoint has all its tasks in one lane, so one owner
    /// holds its token bucket; an ordered one spreads its keys over the
    /// lanes, each key in one.
    pub fn assign(
        endpoint_id: &str,
        ordered: bool,
        rate_limit: Option<u32>,
        ordering_key: Option<&OrderingKey>,
    ) -> Option<Self> {
        let ordering_key = ordering_key.filter(|_| ordered).cloned();
        let hashed = match (&ordering_key, rate_limit) {
            (_, Some(_)) => fnv1a(&[endpoint_id.as_bytes()]),
            (Some(key), None) => fnv1a(&[endpoint_id.as_bytes(), b"\0", key.as_str().as_bytes()]),
            (None, None) => return None,
        };
        Some(Self {
            lane: (hashed % u64::from(LANES)) as u16,
            ordering_key,
            rate_limit,
        })
    }
}

/// FNV-1a: stable across processes and releases, unlike std's hasher.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ordered_keyed_or_limited_tasks_take_a_lane() {
        let key = OrderingKey::parse("k1").unwrap();
        assert_eq!(LaneTask::assign("ep_1", false, None, Some(&key)), None);
        assert_eq!(LaneTask::assign("ep_1", true, None, None), None);
        let ordered = LaneTask::assign("ep_1", true, None, Some(&key)).unwrap();
        assert_eq!(ordered.ordering_key, Some(key.clone()));
        assert!(ordered.lane < LANES);
        // A limited endpoint keeps every task in one lane, keyed or not.
        let limited = LaneTask::assign("ep_1", false, Some(50), Some(&key)).unwrap();
        assert_eq!(limited.ordering_key, None);
        assert_eq!(
            LaneTask::assign("ep_1", true, Some(50), None).map(|l| l.lane),
            Some(limited.lane)
        );
        // Keys spread over the lanes.
        let lanes: std::collections::HashSet<u16> = (0..200)
            .filter_map(|n| {
                let key = OrderingKey::parse(&format!("key-{n}")).unwrap();
                LaneTask::assign("ep_1", true, None, Some(&key)).map(|l| l.lane)
            })
            .collect();
        assert_eq!(lanes.len(), usize::from(LANES));
    }

    #[test]
    fn keys_are_short_and_plain() {
        assert!(OrderingKey::parse("customer:42").is_ok());
        assert!(OrderingKey::parse("A.b_c-9").is_ok());
        assert!(OrderingKey::parse(&"k".repeat(128)).is_ok());
        assert_eq!(
            OrderingKey::parse(&"k".repeat(129)),
            Err(OrderingError::BadKey)
        );
        for bad in ["", "a b", "a/b", "ключ", "a#"] {
            assert_eq!(OrderingKey::parse(bad), Err(OrderingError::BadKey), "{bad}");
        }
    }

    #[test]
    fn rate_limits_are_within_bounds() {
        assert_eq!(check_rate_limit(1), Ok(1));
        assert_eq!(check_rate_limit(10_000), Ok(10_000));
        for bad in [0, -1, 10_001, i64::MAX] {
            assert_eq!(check_rate_limit(bad), Err(OrderingError::BadRateLimit));
        }
    }
}
